"""When each kind of alert fires: one pure function a kind, from records the core produces
(feed state, device status, consumer records, a cycle's report, `verify`'s verdicts).

Each returns the alerts firing now; :class:`~banfeed.alerts.model.Tracker` turns that into
notices (new, repeated, resolved).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any, Protocol

from .. import cyclelog
from ..config.alerts import AlertKind, Severity
from ..ingest import Reported
from ..models import Consumer, DeviceStatus, FeedState
from ..timeutil import format_duration, iso
from .model import Alert

MIN_USUAL = 60  # seconds: a consumer's usual interval is taken as at least this (refresh-rate)
MIN_FETCHES = 3  # fetches before a consumer's usual interval is known
STORM_TOP = 5  # causes and devices named in a storm digest
STORM_SAMPLE = 10  # addresses named in a storm digest
STORM_SCAN = 100_000  # offenders read for the digest's counts (a storm can be millions)
# `banfeed verify` verdicts that mean a FortiGate's list is not what is served. "missing" (no
# such resource: that device does not consume the feed) and "error" (it could not be asked:
# the device alerts cover it) are not divergence.
DIVERGED = frozenset({"stale", "fetch_failed", "overflow", "invalid", "differs"})


def feeds_held(states: Mapping[str, FeedState], feeds: Iterable[str], now: int) -> list[Alert]:
    """A feed held by a guard (the mass-drop guard): its consumers get the last good version."""
    found = []
    for name in feeds:
        state = states.get(name)
        if state is None or state.held_since is None:
            continue
        found.append(
            Alert(
                AlertKind.FEED_HELD,
                name,
                Severity.CRITICAL,
                f"feed {name} is held since {iso(state.held_since)}: {state.hold_reason or 'held'}"
                f" — review it, then `banfeed feeds approve {name}`",
                now,
                {"feed": name, "held_since": iso(state.held_since), "reason": state.hold_reason},
                since=state.held_since,
            )
        )
    return found


def feeds_pinned(
    states: Mapping[str, FeedState], latest: Mapping[str, int], feeds: Iterable[str], now: int
) -> list[Alert]:
    """A feed pinned to a version by an operator (a rollback when older than the newest)."""
    found = []
    for name in feeds:
        state = states.get(name)
        if state is None or state.pinned is None:
            continue
        newest = latest.get(name)
        rolled_back = newest is not None and state.pinned < newest
        what = (
            f"rolled back to version {state.pinned} (newest {newest})"
            if rolled_back
            else (f"pinned to version {state.pinned}")
        )
        found.append(
            Alert(
                AlertKind.FEED_PINNED,
                name,
                Severity.WARNING,
                f"feed {name} is {what} by {state.pinned_by or 'an operator'} — new versions "
                f"are not served until `banfeed feeds release {name}`",
                now,
                {
                    "feed": name,
                    "pinned": state.pinned,
                    "newest": newest,
                    "rolled_back": rolled_back,
                    "by": state.pinned_by,
                },
            )
        )
    return found


def devices_failing(
    statuses: Mapping[tuple[str, str], DeviceStatus],
    polled: Iterable[tuple[str, str]],
    n: int,
    now: int,
) -> list[Alert]:
    """A (device, VDOM) whose last ``n`` or more polls failed."""
    found = []
    for key in polled:
        status = statuses.get(key)
        if status is None or status.consecutive_failures < n:
            continue
        subject = "/".join(key)
        found.append(
            Alert(
                AlertKind.DEVICE_FAILING,
                subject,
                Severity.WARNING,
                f"{subject}: {status.consecutive_failures} polls failed in a row "
                f"({status.error_kind}: {status.error_message}); last success "
                f"{iso(status.last_success) or 'never'}",
                now,
                {
                    "device": key[0],
                    "vdom": key[1],
                    "failures": status.consecutive_failures,
                    "error": status.error_kind,
                    "detail": status.error_message,
                    "last_success": iso(status.last_success),
                },
            )
        )
    return found


def devices_backed_off(
    statuses: Mapping[tuple[str, str], DeviceStatus], polled: Iterable[tuple[str, str]], now: int
) -> list[Alert]:
    """A (device, VDOM) left alone after a 401 or 429 (the back-off of ``devicestatus``)."""
    found = []
    for key in polled:
        status = statuses.get(key)
        if status is None or status.backoff_until is None or status.backoff_until <= now:
            continue
        subject = "/".join(key)
        found.append(
            Alert(
                AlertKind.DEVICE_BACKOFF,
                subject,
                Severity.WARNING,
                f"{subject}: backed off until {iso(status.backoff_until)} after "
                f"{status.error_kind} ({status.error_message}) — fix its token or trusted host",
                now,
                {
                    "device": key[0],
                    "vdom": key[1],
                    "until": iso(status.backoff_until),
                    "error": status.error_kind,
                    "detail": status.error_message,
                },
            )
        )
    return found


def usual_interval(consumer: Consumer) -> int | None:
    """A consumer's mean time between fetches, once it fetched ``MIN_FETCHES`` times."""
    if consumer.requests < MIN_FETCHES or consumer.last_fetch <= consumer.first_fetch:
        return None
    mean = (consumer.last_fetch - consumer.first_fetch) / (consumer.requests - 1)
    return max(MIN_USUAL, round(mean))


def consumer_subject(consumer: Consumer) -> str:
    return f"{consumer.feed} {consumer.address} {consumer.user_agent}".strip()


def consumers_silent(consumers: Iterable[Consumer], factor: float, now: int) -> list[Alert]:
    """A consumer that fetched a feed regularly and has not for ``factor`` × its interval."""
    found = []
    for consumer in consumers:
        usual = usual_interval(consumer)
        if usual is None or now - consumer.last_fetch <= factor * usual:
            continue
        silent = now - consumer.last_fetch
        found.append(
            Alert(
                AlertKind.CONSUMER_SILENT,
                consumer_subject(consumer),
                Severity.WARNING,
                f"{consumer.address} ({consumer.user_agent or 'no user agent'}) has not fetched "
                f"feed {consumer.feed} for {format_duration(silent)}; it fetched every "
                f"{format_duration(usual)} — is it still up, can it reach banfeed?",
                now,
                {
                    "feed": consumer.feed,
                    "address": consumer.address,
                    "user_agent": consumer.user_agent,
                    "last_fetch": iso(consumer.last_fetch),
                    "usual_interval": usual,
                    "silent": silent,
                },
                since=consumer.last_fetch,
            )
        )
    return found


class _Verdict(Protocol):
    @property
    def value(self) -> str: ...


class _DeviceView(Protocol):
    @property
    def device(self) -> str: ...
    @property
    def verdict(self) -> _Verdict: ...
    @property
    def detail(self) -> str: ...


class Verification(Protocol):
    """What `banfeed verify` concludes about one feed (``checks.FeedVerification``)."""

    @property
    def feed(self) -> str: ...
    @property
    def devices(self) -> Sequence[_DeviceView]: ...
    def record(self) -> dict[str, Any]: ...


def feeds_diverged(verifications: Iterable[Verification], now: int) -> list[Alert]:
    """A FortiGate whose loaded list is not the version served (stale, refused, cut…)."""
    found = []
    for check in verifications:
        for device in check.devices:
            verdict = device.verdict.value
            if verdict not in DIVERGED:
                continue
            found.append(
                Alert(
                    AlertKind.FEED_DIVERGED,
                    f"{check.feed} {device.device}",
                    Severity.WARNING,
                    f"{device.device}: feed {check.feed} {verdict}: {device.detail}",
                    now,
                    {
                        "feed": check.feed,
                        "device": device.device,
                        "verdict": verdict,
                        "detail": device.detail,
                    },
                )
            )
    return found


class Cycle(cyclelog.Cycle, Protocol):
    """What a cycle's report tells (``collector.CycleReport``): what the cycle log reads, and
    the offenders it published."""

    @property
    def published(self) -> Sequence[Reported]: ...


def ban_storm(cycle: Cycle, threshold: int) -> list[Alert]:
    """More than ``threshold`` new offenders in one cycle: one digest naming the top causes
    and devices and a sample of the addresses."""
    if cycle.new_offenders <= threshold:
        return []
    causes: Counter[str] = Counter()
    devices: Counter[str] = Counter()
    sample: list[str] = []
    scanned = 0
    for offender, reporters in islice(iter(cycle.published), STORM_SCAN):
        if offender.offense_count != 1:
            continue  # an old offender's new offense: not part of the storm of new ones
        scanned += 1
        causes.update(offender.sources or ("unknown",))
        devices.update(reporters)
        if len(sample) < STORM_SAMPLE:
            sample.append(str(offender.ip))
    top_causes = causes.most_common(STORM_TOP)
    top_devices = devices.most_common(STORM_TOP)
    named = ", ".join(f"{c} ({n})" for c, n in top_causes) or "unknown causes"
    return [
        Alert(
            AlertKind.BAN_STORM,
            "new offenders",
            Severity.CRITICAL,
            f"{cycle.new_offenders} new offenders in one cycle (threshold {threshold}); top "
            f"causes: {named}; top devices: "
            + (", ".join(f"{d} ({n})" for d, n in top_devices) or "unknown"),
            cycle.started,
            {
                "new_offenders": cycle.new_offenders,
                "threshold": threshold,
                "top_causes": [{"cause": c, "offenders": n} for c, n in top_causes],
                "top_devices": [{"device": d, "offenders": n} for d, n in top_devices],
                "sample": sample,
                "counted": scanned,
            },
        )
    ]
