"""Reaching FortiGates at once: push new offenders into the quarantine of the other devices,
keep push-type threat feeds in sync, and verify what each device loaded from a feed.

Every device is isolated (one failure is reported, the rest proceed), every call is bounded
(``max_per_cycle`` addresses per device and cycle), and a failing device is not called again
until its back-off has passed — never retried in a tight loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import DeviceError, StoreError
from .fortios import DeviceTarget, FeedStatus, FortiOSClient
from .fortios.fortimanager import client_for, expand_targets
from .models import Offender
from .policy import backoff_seconds
from .store import Store

log = logging.getLogger(__name__)

EXPIRY_STEP = 3600  # expiries are rounded up to the hour: one add_users call per bucket


@dataclass
class PushResult:
    device: str
    action: str  # quarantine | snapshot | add/remove | clear
    count: int = 0
    skipped: int = 0  # over max_per_cycle (the feeds still carry them)
    error: DeviceError | None = None


@dataclass
class Backoff:
    """Per-device back-off after a failed push (in memory: pushing is best effort)."""

    until: dict[str, float] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)

    def ready(self, device: str, now: float) -> bool:
        return now >= self.until.get(device, 0)

    def failed(self, device: str, now: float) -> None:
        n = self.failures[device] = self.failures.get(device, 0) + 1
        self.until[device] = now + backoff_seconds(n)

    def succeeded(self, device: str) -> None:
        self.failures.pop(device, None)
        self.until.pop(device, None)


async def push_quarantine(
    targets: Sequence[DeviceTarget],
    published: Sequence[tuple[Offender, tuple[str, ...]]],
    *,
    now: int,
    max_per_cycle: int,
    max_expiry: int,
    backoff: Backoff,
    store: Store | None = None,
) -> list[PushResult]:
    """Quarantine each newly published offender on every device that did not report it."""
    targets = await expand_targets(targets)  # a FortiManager: each device behind it

    async def one(target: DeviceTarget) -> PushResult:
        result = PushResult(target.name, "quarantine")
        wanted = [o for o, reporters in published if target.name not in reporters]
        if not wanted:
            return result
        if not backoff.ready(target.name, now):
            result.skipped = len(wanted)
            return result
        chosen = sorted(wanted, key=lambda o: o.last_offense, reverse=True)[:max_per_cycle]
        result.skipped = len(wanted) - len(chosen)
        buckets: dict[int, list[str]] = defaultdict(list)
        for offender in chosen:
            left = max_expiry if offender.active_until is None else offender.active_until - now
            expiry = min(max_expiry, -(-max(left, 1) // EXPIRY_STEP) * EXPIRY_STEP)
            buckets[expiry].append(str(offender.ip))
        try:
            async with client_for(target) as client:
                vdom = target.vdoms[0] if target.vdoms[0] != "*" else "root"
                for expiry, addresses in sorted(buckets.items()):
                    await client.add_users(addresses, expiry, vdom)
                    result.count += len(addresses)
                    if store is not None:  # so the device listing them back is no new offense
                        await _remember(store, target.name, addresses, now, expiry)
        except DeviceError as exc:
            result.error = exc
            backoff.failed(target.name, now)
        else:
            backoff.succeeded(target.name)
        return result

    return list(await asyncio.gather(*(one(t) for t in targets)))


async def _remember(store: Store, device: str, addresses: list[str], now: int, expiry: int) -> None:
    """Record what was pushed. A store that cannot take the record does not stop the push (the
    quarantine is placed already); the risk — its echo counted as new offenses — is logged."""

    def write() -> None:
        with store.write() as tx:
            tx.record_pushes(device, addresses, now, now + expiry)

    try:
        await asyncio.to_thread(write)
    except StoreError as exc:
        log.error(
            "pushed %d quarantines to %s but could not record them (%s): the device listing "
            "them back may count as new offenses",
            len(addresses),
            device,
            exc,
        )


async def clear_everywhere(
    targets: Sequence[DeviceTarget], addresses: Sequence[str]
) -> list[PushResult]:
    """Release ``addresses`` from the quarantine of every device (for ``unban --everywhere``)."""
    targets = await expand_targets(targets, unban=True)

    async def one(target: DeviceTarget) -> PushResult:
        result = PushResult(target.name, "clear", len(addresses))
        try:
            async with client_for(target) as client:
                for vdom in target.vdoms if "*" not in target.vdoms else ("root",):
                    await client.clear_users(addresses, vdom)
        except DeviceError as exc:
            result.error, result.count = exc, 0
        return result

    return list(await asyncio.gather(*(one(t) for t in targets)))


@dataclass
class FeedSync:
    """The entries last pushed to each device's push-type threat feed (in memory)."""

    synced: dict[str, set[str]] = field(default_factory=dict)

    async def sync(
        self,
        targets: Sequence[tuple[DeviceTarget, str]],
        entries: Iterable[str],
        *,
        now: int,
        backoff: Backoff,
    ) -> list[PushResult]:
        """``snapshot`` a device the first time (or after a failure), then ``add``/``remove``."""
        current = set(entries)

        async def one(target: DeviceTarget, resource: str) -> PushResult:
            before = self.synced.get(target.name)
            if not backoff.ready(target.name, now):
                return PushResult(target.name, "skipped (backing off)")
            try:
                async with FortiOSClient(target) as client:
                    if before is None:
                        await client.push_feed(resource, "snapshot", sorted(current))
                        result = PushResult(target.name, "snapshot", len(current))
                    else:
                        added, removed = sorted(current - before), sorted(before - current)
                        if added:
                            await client.push_feed(resource, "add", added)
                        if removed:
                            await client.push_feed(resource, "remove", removed)
                        result = PushResult(target.name, "add/remove", len(added) + len(removed))
            except DeviceError as exc:
                self.synced.pop(target.name, None)  # unknown state: snapshot next time
                backoff.failed(target.name, now)
                return PushResult(target.name, "sync", error=exc)
            self.synced[target.name] = set(current)
            backoff.succeeded(target.name)
            return result

        return list(await asyncio.gather(*(one(t, r) for t, r in targets)))


async def verify(
    targets: Sequence[DeviceTarget], resource: str
) -> list[tuple[str, FeedStatus | DeviceError]]:
    """Ask each device what it loaded from threat feed ``resource``."""
    targets = await expand_targets(targets)

    async def one(target: DeviceTarget) -> tuple[str, FeedStatus | DeviceError]:
        try:
            async with client_for(target) as client:
                return target.name, await client.feed_status(resource)
        except DeviceError as exc:
            return target.name, exc

    return list(await asyncio.gather(*(one(t) for t in targets)))
