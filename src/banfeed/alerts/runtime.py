"""Alerting inside `banfeed run`: evaluate after each cycle and every ``CHECK_SECONDS``,
de-duplicate, log, count, and hand the notices to the dispatcher.

The daemon makes one call after each cycle (:func:`after_cycle`), which never waits: the
report is noted and the alerting task (started on the first call, stopped with the collection
loop) does the rest. Store reads and the verification of what the FortiGates loaded run in that
task, off the collection loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from ..config import Config
from ..config.alerts import AlertKind, AlertsConfig
from ..errors import BanfeedError, StoreError
from ..fortios import DeviceTarget
from ..setupkit import resource_name
from ..store import Store
from ..store.leases import Leases
from ..timeutil import Clock
from . import rules
from .dispatch import Dispatcher
from .model import RECENT, Alert, Tracker
from .targets import Target, build_targets

log = logging.getLogger("banfeed.alerts")

CHECK_SECONDS = 30.0  # feeds and consumers are looked at this often between cycles
META_KEY = "alerts"  # the store's meta key of the recent alerts (a bounded JSON list)
# The last verification of what the FortiGates loaded: {"time", "feeds": [verify's records]}
VERIFIED_KEY = "verified"
FEED_KINDS = (AlertKind.FEED_HELD, AlertKind.FEED_PINNED, AlertKind.CONSUMER_SILENT)
DEVICE_KINDS = (AlertKind.DEVICE_FAILING, AlertKind.DEVICE_BACKOFF)


class Host(Protocol):
    """What alerting needs of the daemon (``daemon.Daemon``)."""

    config: Config
    store: Store
    clock: Clock
    crashed: BaseException | None
    leases: Leases | None  # replicas sharing the fleet; None: this daemon is the whole fleet

    def request_stop(self) -> None: ...


class Verifier(Protocol):
    """``checks.verify_feed``: what each FortiGate loaded from a feed, judged."""

    def __call__(
        self,
        store: Store,
        targets: Sequence[DeviceTarget],
        feed: str,
        resource: str,
        *,
        now: int,
        grace: int,
        shard: int | None = None,
    ) -> Awaitable[rules.Verification]: ...


@dataclass(frozen=True, slots=True)
class CycleSeen:
    """A finished cycle, as alerting keeps it: its report, what it polled, the fleet."""

    report: rules.Cycle
    polled: tuple[tuple[str, str], ...]
    devices: tuple[DeviceTarget, ...]

    @classmethod
    def of(cls, report: rules.Cycle, devices: Sequence[DeviceTarget]) -> CycleSeen:
        return cls(report, tuple((r.device, r.vdom) for r in report.results), tuple(devices))


class Alerting:
    def __init__(self, host: Host, verifier: Verifier | None = None) -> None:
        self.host = host
        self.verifier = verifier
        self._settings: AlertsConfig | None = None
        self.tracker = Tracker(host.config.alerts.repeat)
        self.dispatcher = Dispatcher([], host.config.alerts.queue)
        self.configure()
        self._cycles: asyncio.Queue[CycleSeen] = asyncio.Queue(maxsize=1)
        self._devices: tuple[DeviceTarget, ...] = ()
        self._verified = time.monotonic()  # the first verification is one verify_every in
        self._task: asyncio.Task[None] | None = None

    def configure(self) -> None:
        """Targets and thresholds from the host's config (again after a reload)."""
        config = self.host.config
        if config.alerts == self._settings:
            return
        targets, problems = build_targets(config.alerts.targets, config.base_dir)
        for problem in problems:
            log.error("alert target not used: %s", problem)
        self._settings = config.alerts
        self.tracker.repeat = config.alerts.repeat
        self.dispatcher.targets = targets
        self.dispatcher.size = config.alerts.queue

    @property
    def targets(self) -> list[Target]:
        return self.dispatcher.targets

    # -- the daemon's side ----------------------------------------------------------------------

    def cycle_done(self, report: rules.Cycle, devices: Sequence[DeviceTarget]) -> None:
        """Note a finished cycle; never waits (an unhandled one is replaced by the newer)."""
        cycle = CycleSeen.of(report, devices)
        if self._cycles.full():
            self._cycles.get_nowait()
        self._cycles.put_nowait(cycle)

    def start(self) -> None:
        self._task = asyncio.ensure_future(self.run())
        self._task.add_done_callback(self._ended)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _ended(self, task: asyncio.Task[None]) -> None:
        if task.cancelled():
            return
        error = task.exception()
        if error is not None:  # a bug: stop banfeed, like every supervised loop
            log.critical("alerting stopped unexpectedly; stopping banfeed", exc_info=error)
            self.host.crashed = error
            self.host.request_stop()

    # -- the alerting task ----------------------------------------------------------------------

    async def run(self) -> None:
        sender = asyncio.ensure_future(self.dispatcher.run())
        sender.add_done_callback(self._ended)  # a bug in it stops banfeed too
        try:
            while True:
                cycle = None
                with contextlib.suppress(TimeoutError):
                    cycle = await asyncio.wait_for(self._cycles.get(), CHECK_SECONDS)
                await self.evaluate(cycle)
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def evaluate(self, cycle: CycleSeen | None) -> list[Alert]:
        """One evaluation: feeds and consumers always; devices and a storm after a cycle; what
        the FortiGates loaded when ``verify_every`` has passed. Returns the notices sent."""
        self.configure()
        settings = self.host.config.alerts
        now = int(self.host.clock())
        try:
            leads, found = await asyncio.to_thread(self._read_and_judge, cycle, now)
        except StoreError as exc:  # the store is down: the cache and the cycle say so already
            log.debug("alerts not evaluated: %s", exc)
            return []
        notices = []
        for firing, kinds, checked in found:
            notices += self.tracker.update(firing, kinds, now, checked=checked)
        if cycle is not None:
            self._devices = cycle.devices
        if leads and settings.verify and self._devices and self.verifier is not None:
            if time.monotonic() - self._verified >= settings.verify_every:
                self._verified = time.monotonic()
                notices += await self._verify(now)
        for notice in notices:
            self.dispatcher.submit(notice)
        if notices:
            await asyncio.to_thread(self._save)
        return notices

    def _read_and_judge(
        self, cycle: CycleSeen | None, now: int
    ) -> tuple[bool, list[tuple[list[Alert], tuple[AlertKind, ...], set[str] | None]]]:
        """Whether this daemon speaks for the fleet, and what it judged: the fleet's alerts
        (feeds, consumers; what the FortiGates loaded is verified after) by the leading replica
        only, so receivers get each once; its own devices' by every replica."""
        config = self.host.config
        settings = config.alerts
        leases = self.host.leases
        leads = leases is None or leases.leads()
        with self.host.store.read() as tx:
            states, latest = tx.feed_states(), tx.latest_numbers()
            consumers = tx.feed_consumers()
            statuses = tx.device_statuses() if cycle is not None else {}
        feeds = [feed.name for feed in config.feeds]
        found: list[tuple[list[Alert], tuple[AlertKind, ...], set[str] | None]] = []
        if leads:
            found += [
                (rules.feeds_held(states, feeds, now), (AlertKind.FEED_HELD,), None),
                (rules.feeds_pinned(states, latest, feeds, now), (AlertKind.FEED_PINNED,), None),
                (
                    rules.consumers_silent(consumers, settings.consumer_silence, now),
                    (AlertKind.CONSUMER_SILENT,),
                    None,
                ),
            ]
        if cycle is not None:
            # Only the (device, VDOM)s this daemon polled: replicas each alert on their own.
            polled = {"/".join(key) for key in cycle.polled}
            failing = rules.devices_failing(statuses, cycle.polled, settings.device_failures, now)
            backoff = rules.devices_backed_off(statuses, cycle.polled, now)
            found.append((failing, (AlertKind.DEVICE_FAILING,), polled))
            found.append((backoff, (AlertKind.DEVICE_BACKOFF,), polled))
            storm = rules.ban_storm(cycle.report, settings.storm_new_offenders)
            found.append((storm, (AlertKind.BAN_STORM,), None))
        return leads, found

    async def _verify(self, now: int) -> list[Alert]:
        assert self.verifier is not None
        config = self.host.config
        checks: list[rules.Verification] = []
        try:
            for feed in config.feeds:
                for shard in range(1, feed.shards + 1) if feed.shards > 1 else [None]:
                    checks.append(
                        await self.verifier(
                            self.host.store,
                            self._devices,
                            feed.name,
                            resource_name(feed.name, shard),
                            now=now,
                            grace=config.alerts.verify_grace,
                            shard=shard,
                        )
                    )
        except BanfeedError as exc:  # the store is down: nothing judged, nothing resolved
            log.warning("what the FortiGates loaded was not verified: %s", exc)
            return []
        verified = {"time": now, "feeds": [c.record() for c in checks]}
        self._keep(VERIFIED_KEY, verified, "the last verification")
        return self.tracker.update(
            rules.feeds_diverged(checks, now), (AlertKind.FEED_DIVERGED,), now
        )

    def _keep(self, key: str, value: Any, what: str) -> None:
        """``value`` as JSON in the store's meta table (best effort: the dashboard reads it)."""
        try:
            with self.host.store.write() as tx:
                tx.set_meta(key, json.dumps(value, separators=(",", ":")))
        except StoreError as exc:
            log.warning("%s not saved in the store: %s", what, exc)

    def _save(self) -> None:
        """The recent alerts, in the store's meta table too (best effort: the dashboard's)."""
        self._keep(META_KEY, [a.stored() for a in self.tracker.recent], "recent alerts")


_RUNNING: weakref.WeakKeyDictionary[Any, Alerting] = weakref.WeakKeyDictionary()


def after_cycle(
    host: Host, report: rules.Cycle, devices: Sequence[DeviceTarget], verifier: Verifier
) -> None:
    """The daemon's one call after each cycle: starts alerting on the first (with the task that
    runs the cycles: when that loop stops, alerting stops), then notes each report."""
    alerting = _RUNNING.get(host)
    if alerting is None:
        alerting = _RUNNING[host] = Alerting(host, verifier)
        alerting.start()
        current = asyncio.current_task()
        if current is not None:
            current.add_done_callback(lambda _: alerting.stop())
    alerting.cycle_done(report, devices)


def running(host: object) -> Alerting | None:
    """The alerting of a daemon, once it started (the dashboard reads its recent alerts)."""
    return _RUNNING.get(host)


def recent_alerts(source: Store | Alerting, limit: int = RECENT) -> list[Alert]:
    """The last alerts sent (notices, resolved ones included), newest first: from a running
    daemon's memory, or from the store's meta table (any process; a list this version cannot
    read is logged and read as empty)."""
    if isinstance(source, Alerting):
        return list(reversed(source.tracker.recent))[:limit]
    with source.read() as tx:
        text = tx.get_meta(META_KEY)
    if not text:
        return []
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise TypeError(f"a JSON {type(items).__name__}, not a list")
        return [Alert.parse(item) for item in reversed(items)][:limit]
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("meta %r: the recent alerts cannot be read (%s)", META_KEY, exc)
        return []
