"""What the overview page and ``GET /api/v1/feeds`` and ``/devices`` show, as plain records:
counts, each feed as served in plain words, each device's health, the last cycle."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .. import reports
from ..models import DeviceStatus
from ..timeutil import iso
from .context import Web


def feed_words(feed: reports.FeedOverview) -> str:
    """A feed's state as an operator says it: serving, held, pinned, over its limit."""
    v, s = feed.version, feed.state
    if v is None:
        return "not published yet: consumers get 503 and keep their last list"
    if s.pinned is not None:
        words = f"pinned to version {s.pinned} by {s.pinned_by or 'an operator'} (a rollback)"
    elif s.held_since is not None:
        words = (
            f"held since {iso(s.held_since)}: {s.hold_reason or 'a large drop'}; "
            "serving the last good version until approved"
        )
    else:
        words = f"serving version {v.number}"
    if v.overflow:
        words += f"; over its limit: {v.overflow} left out by max_entries"
    return words


def feed_record(feed: reports.FeedOverview) -> dict[str, Any]:
    """`banfeed feeds --format json`'s shape, plus the state in words."""
    return feed.record() | {"state": feed_words(feed)}


def device_words(status: DeviceStatus, now: int) -> str:
    if status.backoff_until is not None and status.backoff_until > now:
        return f"backed off until {iso(status.backoff_until)} after {status.error_kind}"
    if status.error_kind:
        return f"failing: {status.error_kind}"
    if status.last_success is None:
        return "not polled yet"
    return "ok"


def device_record(status: DeviceStatus, now: int) -> dict[str, Any]:
    return {
        "device": status.device,
        "vdom": status.vdom,
        "health": device_words(status, now),
        "ok": status.error_kind is None and status.last_success is not None,
        "last_attempt": iso(status.last_attempt),
        "last_success": iso(status.last_success),
        "error_kind": status.error_kind,
        "error_message": status.error_message,
        "consecutive_failures": status.consecutive_failures,
        "backoff_until": iso(status.backoff_until),
        "entries": status.entries,
        "rejected": status.rejected,
        "duration_ms": status.duration_ms,
    }


def devices(web: Web) -> list[DeviceStatus]:
    """Every polled (device, VDOM selector), in name order, configured ones without a poll
    yet included."""
    with web.host.store.read() as tx:
        found = tx.device_statuses()
    for device in web.host.config.fortigates:
        for vdom in device.vdoms:
            found.setdefault((device.name, vdom), DeviceStatus(device.name, vdom))
    return [found[key] for key in sorted(found)]


@dataclass(frozen=True)
class Overview:
    now: int
    active_v4: int
    active_v6: int
    offenses_hour: int
    offenses_day: int
    last_cycle: int | None
    interval: int
    feeds: list[reports.FeedOverview]
    devices: list[DeviceStatus]

    @property
    def polls_ok(self) -> int:
        return sum(1 for d in self.devices if d.error_kind is None and d.last_success)

    def cycle_words(self) -> str:
        if self.last_cycle is None:
            return "no collection cycle has reached a device yet"
        late = self.now - self.last_cycle > 3 * self.interval
        when = f"last cycle at {iso(self.last_cycle)}"
        return when + (" — over 3 intervals ago: is `banfeed run` collecting?" if late else "")

    def record(self) -> dict[str, Any]:
        return {
            "active": {"ipv4": self.active_v4, "ipv6": self.active_v6},
            "new_offenses": {"last_hour": self.offenses_hour, "last_day": self.offenses_day},
            "last_cycle": iso(self.last_cycle),
            "cycle": self.cycle_words(),
            "polls": {"ok": self.polls_ok, "failing": len(self.devices) - self.polls_ok},
            "feeds": [feed_record(f) for f in self.feeds],
            "devices": [device_record(d, self.now) for d in self.devices],
        }


def overview(web: Web) -> Overview:
    rt = web.runtime()
    now = rt.now()
    with rt.store.read() as tx:
        active = tx.count_active_by_family(now)
        hour = tx.count_offenses_seen_since(now - 3600)
        day = tx.count_offenses_seen_since(now - 86400)
        last = tx.get_meta("last_cycle")
    return Overview(
        now,
        active[4],
        active[6],
        hour,
        day,
        int(last) if last else None,
        rt.config.collect.interval,
        reports.feed_overviews(rt),
        devices(web),
    )
