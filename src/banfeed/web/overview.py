"""What the overview page and ``GET /api/v1/overview``, ``/overview/series``, ``/feeds`` and
``/devices`` show, as plain records: counts, each feed as served in plain words with its
consumers, each device's health, the last cycles, and offenses, new offenders and expiries over
24 hours, 7 days or 30 days with the top causes, devices and VDOMs of that range."""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import alerts, cyclelog, devicestatus, reports
from ..alerts import Alert
from ..cyclelog import CycleEntry
from ..errors import InputError
from ..models import DeviceStatus
from ..store import Store, Tx
from ..timeutil import iso
from .context import Web

TOP = 10  # causes, devices and VDOMs listed per range
CONSUMERS_SHOWN = 20  # per feed on the page, the latest fetches first (the API has them all)
SERIES_MAX_AGE = 60  # seconds a computed series is reused while the store version stays


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
        words += f"; over its limit: {v.overflow} left out by its limit"
    return words


def feed_record(feed: reports.FeedOverview) -> dict[str, Any]:
    """`banfeed feeds --format json`'s shape, plus the state in words."""
    return feed.record() | {"state": feed_words(feed)}


def device_words(status: DeviceStatus, now: int) -> str:
    state = devicestatus.health(status, now)
    if state == "backed_off":
        return f"backed off until {iso(status.backoff_until)} after {status.error_kind}"
    if state == "failing":
        return f"failing: {status.error_kind}"
    return "not polled yet" if state == "not_polled" else "ok"


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


@dataclass(frozen=True, slots=True)
class Range:
    """A chart's time range: ``count`` buckets of ``step`` seconds, aligned on UTC multiples of
    the step, the last one holding now."""

    name: str
    step: int
    count: int
    words: str

    def start(self, now: int) -> int:
        return (now // self.step - self.count + 1) * self.step


RANGES = {
    r.name: r
    for r in (
        Range("24h", 3600, 24, "the last 24 hours, hourly"),
        Range("7d", 6 * 3600, 28, "the last 7 days, 6-hourly"),
        Range("30d", 86400, 30, "the last 30 days, daily"),
    )
}
DEFAULT_RANGE = "24h"


def parse_range(text: str | None) -> Range:
    found = RANGES.get(text or DEFAULT_RANGE)
    if found is None:
        raise InputError(f"range {text!r}: choose {', '.join(RANGES)}")
    return found


@dataclass(frozen=True)
class Series:
    """Per bucket of ``span``: offenses (by the time the device quarantined the address), new
    offenders (their first offense) and expiries (listed offenders whose ``active_until`` fell
    then, up to now); the top causes, devices and VDOMs of those offenses."""

    span: Range
    start: int
    now: int
    offenses: list[int]
    new_offenders: list[int]
    expiries: list[int]
    causes: list[tuple[str, int]] = field(default_factory=list)
    devices: list[tuple[str, int]] = field(default_factory=list)
    vdoms: list[tuple[str, int]] = field(default_factory=list)

    @property
    def times(self) -> list[int]:
        return [self.start + i * self.span.step for i in range(self.span.count)]

    def rows(self) -> list[tuple[int, int, int, int]]:
        """(bucket start, offenses, new offenders, expiries), newest first: the page's table."""
        found = zip(self.times, self.offenses, self.new_offenders, self.expiries, strict=True)
        return list(found)[::-1]

    def record(self) -> dict[str, Any]:
        """``GET /api/v1/overview/series``: parallel arrays, as a chart takes them."""

        def top(items: list[tuple[str, int]]) -> list[dict[str, Any]]:
            return [{"name": name, "offenses": n} for name, n in items]

        return {
            "range": self.span.name,
            "step": self.span.step,
            "from": iso(self.start),
            "to": iso(self.start + self.span.step * self.span.count),
            "time": self.times,
            "offenses": self.offenses,
            "new_offenders": self.new_offenders,
            "expiries": self.expiries,
            "top": {
                "causes": top(self.causes),
                "devices": top(self.devices),
                "vdoms": top(self.vdoms),
            },
        }


def top(counts: Mapping[str, int]) -> list[tuple[str, int]]:
    """The ``TOP`` largest counts, the name breaking ties (the same order on every database)."""
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:TOP]


# Per store, per range: (computed at, store version, series). A 30-day series over millions of
# offenses is a scan of each of them; it changes only with the store (new offenses) and the
# clock, so it is reused while the version stays, for at most SERIES_MAX_AGE.
_computed: weakref.WeakKeyDictionary[Store, dict[str, tuple[int, int, Series]]] = (
    weakref.WeakKeyDictionary()
)


def series(web: Web, span: Range) -> Series:
    store, now = web.host.store, web.now()
    kept = _computed.setdefault(store, {})
    with store.read() as tx:
        version = tx.store_version()
        if (hit := kept.get(span.name)) is not None:
            at, at_version, found = hit
            if at_version == version and 0 <= now - at < SERIES_MAX_AGE:
                return found
        start = span.start(now)
        counts = tx.offense_counts(start, span.step, span.count)
        found = Series(
            span,
            start,
            now,
            counts.per_bucket,
            tx.first_offenses_per_bucket(start, span.step, span.count),
            tx.expiries_per_bucket(start, span.step, span.count, now),
            top(counts.by_source),
            top(counts.by_device),
            top(counts.by_vdom),
        )
    kept[span.name] = (now, version, found)
    return found


def cycle_record(entry: CycleEntry) -> dict[str, Any]:
    return {
        "started": iso(entry.started),
        "duration_s": entry.duration,
        "polls_ok": entry.polls_ok,
        "polls_failed": entry.polls_failed,
        "failed": list(entry.failed),
        "new_offenses": entry.new_offenses,
        "new_offenders": entry.new_offenders,
        "rejected": entry.rejected,
    }


def consumer_rows(feed: reports.FeedOverview) -> list[dict[str, Any]]:
    """The feed's consumers as ``banfeed feeds --format json`` has them (``current``: its last
    answer carried the served version's ETag), the latest fetch first."""
    rows: list[dict[str, Any]] = feed.record()["consumers"]
    return sorted(rows, key=lambda c: (c["last_fetch"] or "", c["address"]), reverse=True)


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
    cycles: list[CycleEntry] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)  # the last notices, newest first
    verified: dict[str, Any] = field(default_factory=dict)  # the last verification, if any
    series: Series | None = None  # the page's chosen range (the API has its own route)
    notice: str | None = None

    ranges = tuple(RANGES)
    consumers_shown = CONSUMERS_SHOWN
    keep_cycles = cyclelog.KEEP

    @staticmethod
    def consumer_rows(feed: reports.FeedOverview) -> list[dict[str, Any]]:
        return consumer_rows(feed)

    def firing(self) -> list[Alert]:
        return alerts.firing(self.alerts)

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
            "cycles": [cycle_record(c) for c in self.cycles],
            "alerts": alerts.records(self.alerts),
            "verified": self.verified or None,
        }


# Per store: (computed at, store version, (active by family, offenses last hour, last day)).
# Each is a count over a big table (1.6 s for the active ones at 1,000,000 offenders on SQLite)
# and every open overview asks every 30 s: reused like the series.
_counted: weakref.WeakKeyDictionary[Store, tuple[int, int, tuple[dict[int, int], int, int]]] = (
    weakref.WeakKeyDictionary()
)


def _counts(tx: Tx, store: Store, now: int) -> tuple[dict[int, int], int, int]:
    version = tx.store_version()
    hit = _counted.get(store)
    if hit is not None and hit[1] == version and 0 <= now - hit[0] < SERIES_MAX_AGE:
        return hit[2]
    found = (
        tx.count_active_by_family(now),
        tx.count_offenses_seen_since(now - 3600),
        tx.count_offenses_seen_since(now - 86400),
    )
    _counted[store] = (now, version, found)
    return found


def recent(web: Web) -> list[Alert]:
    """The last alerts sent: the running daemon's, else those kept in the store."""
    return alerts.recent_alerts(alerts.running(web.host) or web.host.store)


def verified(tx: Tx) -> dict[str, Any]:
    """What `banfeed run` last found each FortiGate loaded (``alerts.verify_every``):
    ``{"time": epoch, "feeds": [`banfeed verify --format json` records]}``, or {} if never."""
    text = tx.get_meta(alerts.VERIFIED_KEY)
    try:
        found = json.loads(text) if text else {}
        return found if isinstance(found, dict) and isinstance(found.get("feeds"), list) else {}
    except ValueError:
        return {}


def overview(web: Web) -> Overview:
    rt = web.runtime()
    now = rt.now()
    with rt.store.read() as tx:
        active, hour, day = _counts(tx, rt.store, now)
        last = tx.get_meta("last_cycle")
        cycles = cyclelog.recent(tx)
        loads = verified(tx)
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
        cycles,
        recent(web),
        loads,
    )


def page(web: Web, range_text: str | None) -> Overview:
    """The overview page: the overview and the series of the range asked (``?range=7d``); an
    unknown range shows the default one and says so."""
    notice = None
    try:
        span = parse_range(range_text)
    except InputError as exc:
        span, notice = RANGES[DEFAULT_RANGE], f"{exc}; showing {DEFAULT_RANGE}"
    return dataclasses.replace(overview(web), series=series(web, span), notice=notice)
