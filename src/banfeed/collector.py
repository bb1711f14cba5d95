"""One collection cycle: poll every device and VDOM concurrently, then write once.

Each (device, VDOM selector) is isolated: its failure becomes a :class:`PollResult` with an
error and its status row, never an exception for the others. All writes of a cycle happen in
one transaction, after polling, so a cycle is either wholly stored or not at all.

Cost follows change: an answer byte-identical to the last one is not parsed again (its
fingerprint is kept in device status), a changed one only in the entries that changed (answer
diffing: :mod:`banfeed.fortios.diff`), and only offenses not yet stored are written.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from operator import itemgetter

from . import cyclelog, metrics
from .devicestatus import backed_off, next_status, token_id
from .errors import (
    ConflictError,
    DeviceBackedOff,
    DeviceError,
    DeviceInternalError,
    StoreBusyError,
)
from .fortios import DeviceTarget, Keys, gc_paused
from .fortios.fortimanager import BannedSource, FortiManagerTarget, poll_fortimanager
from .ingest import Published, new_offenses, repeated, sort_for_index
from .models import DeviceStatus, Event, EventKind, Offender, OffenderStatus, Offense, PollResult
from .policy import Allowlist, Retention, suppression_reason, with_entries
from .store import Store, Tx
from .timeutil import Clock, iso

log = logging.getLogger(__name__)

REJECTS_LOGGED = 10  # per device and cycle; the rest are counted
WRITE_ATTEMPTS = 3
# A cycle's write that finds the SQLite store busy (a cron `import` or `collect` holding the
# write lock past the busy timeout) is tried again, with the answers already polled, for this
# long in all: the cycle waits instead of failing and losing what it fetched. Then it fails.
BUSY_WAIT_SECONDS = 900.0


@dataclass
class CycleReport:
    started: int
    duration: float = 0.0
    results: list[PollResult] = field(default_factory=list)
    new_offenses: int = 0
    new_offenders: int = 0
    updated_offenders: int = 0
    suppressed: int = 0
    version: int = 0
    # Offenders that got a new offense this cycle and may be published, with the devices that
    # reported them: what push sends to the other FortiGates.
    published: Published = field(default_factory=Published)

    @property
    def failed(self) -> list[PollResult]:
        return [r for r in self.results if r.error is not None]

    @property
    def rejected(self) -> int:
        return sum(r.rejected for r in self.results)


class Collector:
    def __init__(
        self,
        store: Store,
        targets: Sequence[DeviceTarget],
        retention: Retention,
        allowlist: Allowlist,
        *,
        clock: Clock,
        concurrency: int = 16,
        retry_now: bool = False,
    ) -> None:
        self.store = store
        self.retry_now = retry_now  # poll devices inside their back-off window (operator's call)
        self._tokens = {t.name: token_id(t) for t in targets}
        self.targets = list(targets)
        self.retention = retention
        self.allowlist = allowlist
        self.clock = clock
        self.concurrency = concurrency
        self.phase = "idle"  # idle | polling | writing: what a stop would interrupt
        # Per (device, VDOM selector): the fingerprint of the last answer this collector
        # stored and its entries' keys. Used only while the store's status row still holds
        # that fingerprint, so a store replaced, or a poll stored by a replica, means a full
        # parse again.
        self._stored: dict[tuple[str, str], tuple[str, Keys]] = {}
        self._stopping = threading.Event()  # set when a stop interrupts the write
        self._began = 0.0  # perf_counter at the start of the cycle being run

    async def cycle(self, only: set[tuple[str, str]] | None = None) -> CycleReport:
        """Poll everything (or only the ``(device, vdom)`` leases given), then store the result
        in one transaction (in a worker thread)."""
        began = self._began = time.perf_counter()
        now = int(self.clock())
        self._stopping.clear()
        with self.store.read() as tx:
            statuses = tx.device_statuses()
        self.phase = "polling"
        try:
            results = await self.poll(statuses, now, only)
        finally:
            self.phase = "idle"
        self.phase = "writing"
        write = asyncio.ensure_future(asyncio.to_thread(self._write, results, statuses, now))
        try:
            report = await asyncio.shield(write)
        except asyncio.CancelledError:
            # Stopping mid-write: let the transaction finish (it commits whole or not at all),
            # then stop; a write waiting for a busy store gives up. Cancelling while polling
            # simply abandons the cycle: nothing written.
            self._stopping.set()
            await write
            raise
        finally:
            self.phase = "idle"
        report.duration = time.perf_counter() - began
        metrics.CYCLE_SECONDS.observe(report.duration)
        metrics.LAST_SUCCESS.set(self.clock())
        return report

    # -- polling ------------------------------------------------------------------------------

    def keys(self) -> list[tuple[str, str]]:
        """Every (device, VDOM selector) this collector could poll: what leases are taken on."""
        return [(t.name, vdom) for t in self.targets for vdom in t.vdoms]

    async def poll(
        self,
        statuses: dict[tuple[str, str], DeviceStatus],
        now: int,
        only: set[tuple[str, str]] | None = None,
    ) -> list[PollResult]:
        gate = asyncio.Semaphore(self.concurrency)
        targets = self.targets
        if only is not None:
            targets = [
                replace(t, vdoms=tuple(v for v in t.vdoms if (t.name, v) in only))
                for t in self.targets
            ]
            targets = [t for t in targets if t.vdoms]
        tasks = [self._poll_device(t, statuses, now, gate) for t in targets]
        per_device = await asyncio.gather(*tasks)
        return [result for results in per_device for result in results]

    async def _poll_device(
        self,
        target: DeviceTarget,
        statuses: dict[tuple[str, str], DeviceStatus],
        now: int,
        gate: asyncio.Semaphore,
    ) -> list[PollResult]:
        if isinstance(target, FortiManagerTarget):  # a result per device behind it
            return await poll_fortimanager(
                target, statuses, self._tokens, self._poll_vdom, now, gate
            )
        results = [PollResult(target.name, vdom, started=time.time()) for vdom in target.vdoms]
        try:
            async with target.client() as client:
                await asyncio.gather(
                    *(self._poll_vdom(client, r, statuses, now, gate) for r in results)
                )
        except DeviceError as exc:  # the client could not even be built (e.g. bad ca_file)
            for result in results:
                result.error = result.error or exc
        return results

    async def _poll_vdom(
        self,
        client: BannedSource,
        result: PollResult,
        statuses: dict[tuple[str, str], DeviceStatus],
        now: int,
        gate: asyncio.Semaphore,
    ) -> None:
        status = statuses.get((result.device, result.vdom))
        if not self.retry_now and backed_off(status, self._tokens.get(result.device), now):
            assert status is not None and status.backoff_until is not None
            result.error = DeviceBackedOff(
                result.device,
                f"not polled until {iso(status.backoff_until)} after "
                f"{status.error_kind}: {status.error_message} (--retry-now to poll it anyway)",
            )
            return
        fingerprint = status.fingerprint if status else None
        stored = self._stored.get((result.device, result.vdom))
        known = stored[1] if stored is not None and stored[0] == fingerprint else None
        async with gate:
            began = time.perf_counter()
            try:
                answer = await client.banned(
                    result.vdom, now=now, known_fingerprint=fingerprint, known_keys=known
                )
            except DeviceError as exc:
                result.error = exc
                metrics.DEVICE_ERRORS.labels(result.device, exc.kind).inc()
            except Exception as exc:  # noqa: BLE001 — a bug must fail this device alone, loudly
                log.exception("%s vdom %s: polling failed unexpectedly", result.device, result.vdom)
                result.error = DeviceInternalError(
                    result.device, f"unexpected {type(exc).__name__} while polling: {exc}"[:300]
                )
                metrics.DEVICE_ERRORS.labels(result.device, result.error.kind).inc()
            else:
                result.take(answer.lists)
                result.fingerprint = answer.fingerprint
                result.unchanged = answer.unchanged
                result.keys = answer.keys
            finally:
                result.duration = time.perf_counter() - began
                metrics.DEVICE_POLL_SECONDS.labels(result.device).observe(result.duration)
        self._log_rejects(result)

    @staticmethod
    def _log_rejects(result: PollResult) -> None:
        rejects = [r for v in result.lists for r in v.rejected]
        if not rejects:
            return
        metrics.ENTRIES_REJECTED.labels(result.device).inc(len(rejects))
        for reject in rejects[:REJECTS_LOGGED]:
            log.warning(
                "%s vdom %s: entry %d rejected: %s",
                reject.device,
                reject.vdom,
                reject.index,
                reject.reason,
            )
        if len(rejects) > REJECTS_LOGGED:
            log.warning(
                "%s vdom %s: %d more entries rejected",
                result.device,
                result.vdom,
                len(rejects) - REJECTS_LOGGED,
            )

    # -- writing ------------------------------------------------------------------------------

    def _write(
        self,
        results: list[PollResult],
        statuses: dict[tuple[str, str], DeviceStatus],
        now: int,
    ) -> CycleReport:
        conflicts, busy_since = 0, time.monotonic()
        while True:
            try:
                with gc_paused():  # a large ingest's rows: see gc_paused
                    report = self._write_once(results, statuses, now)
                for result in results:
                    result.lists = []  # stored: release a large poll's objects (counts stay)
                    if result.keys is not None and result.fingerprint is not None:
                        self._stored[(result.device, result.vdom)] = (
                            result.fingerprint,
                            result.keys,
                        )
                        result.keys = None
                return report
            except ConflictError as exc:  # a replica wrote the same offender first
                conflicts += 1
                if conflicts == WRITE_ATTEMPTS:
                    raise
                log.info("cycle write conflicted (%s); retrying", exc)
            except StoreBusyError as exc:  # nothing was written: the same write, again
                waited = time.monotonic() - busy_since
                if waited >= BUSY_WAIT_SECONDS or self._stopping.is_set():
                    raise
                log.warning(
                    "cycle write waits, %.0f s so far, the polled answers kept: %s", waited, exc
                )

    def _write_once(
        self,
        results: list[PollResult],
        statuses: dict[tuple[str, str], DeviceStatus],
        now: int,
    ) -> CycleReport:
        report = CycleReport(started=now, results=results)
        with self.store.write() as tx:
            new = new_offenses(tx, results)
            if new:
                self._apply(tx, new, now, report)
                report.version = tx.bump_version()
            else:
                report.version = tx.store_version()
            for result in results:
                old = statuses.get((result.device, result.vdom))
                status = next_status(old, result, now, self._tokens.get(result.device))
                if status is not None:
                    tx.save_device_status(status)
            if any(r.error is None for r in results) or not results:
                tx.set_meta("last_cycle", str(now))  # a cycle that reached a device
            cyclelog.record(tx, report, time.perf_counter() - self._began)
        metrics.OFFENSES_NEW.inc(report.new_offenses)
        metrics.SUPPRESSED.inc(report.suppressed)
        return report

    def _apply(self, tx: Tx, new: list[tuple[Offense, str]], now: int, report: CycleReport) -> None:
        twice = repeated(ip for _, ip in new)
        # A store without offenders (a first ingest) has none to merge with: skip the lookups.
        existing = tx.load_offenders({ip for _, ip in new}, lock=True) if tx.has_offenders() else {}
        # Addresses stored already or listed more than once merge their offenses; every other
        # one is a first offender, built from its offense as its row is written.
        merged: dict[str, list[Offense]] = defaultdict(list)
        firsts: list[tuple[Offense, str]] = []
        for offense, ip in new:
            if ip in twice or ip in existing:
                merged[ip].append(offense)
            else:
                firsts.append((offense, ip))
        allow = with_entries(self.allowlist, tx.allow_entries(now))
        report.published = Published(self.retention)
        inserts: list[Offender] = []
        insert_texts: list[str] = []
        updates: list[Offender] = []
        events: list[Event] = []
        for offense, ip in new:  # in the order listed, as push ranks its ties
            offenses = merged.get(ip)
            if offenses is None:
                reason = suppression_reason(offense.ip, allow)
                if reason is not None:
                    report.suppressed += 1
                    events.append(Event(now, EventKind.SUPPRESSED, ip, offense.device, reason))
                else:
                    report.published.add_first(offense)
                continue
            if offense is not offenses[0]:
                continue  # the address was settled at its first offense
            old = existing.get(ip)
            offender = self._merge(old, offenses, tx)
            if old is None:
                inserts.append(offender)
                insert_texts.append(ip)
            else:
                updates.append(offender)
            reason = suppression_reason(offender.ip, allow)
            if reason is not None:
                report.suppressed += len(offenses)
                events.append(Event(now, EventKind.SUPPRESSED, ip, offenses[0].device, reason))
                continue
            reporters = offender.devices if old is None else tuple({o.device for o in offenses})
            report.published.add(offender, reporters)
            if old is not None and old.status == OffenderStatus.UNBANNED:
                events.append(Event(now, EventKind.RELISTED, ip, offenses[0].device, "new offense"))
        # In index order, so a large insert appends to the B-trees instead of scattering pages;
        # the first offenders are built a batch at a time as their rows are written.
        sort_for_index(new)
        tx.insert_offenses(new, seen=now)
        tx.insert_offenders(inserts, now, insert_texts)
        firsts.sort(key=itemgetter(1))  # by address text: as fast to insert as numeric order
        tx.insert_first_offenders(((o, ip, self._first_until(o)) for o, ip in firsts), now)
        tx.update_offenders(updates, now)
        tx.insert_events(events)
        report.new_offenses = len(new)
        report.new_offenders = len(inserts) + len(firsts)
        report.updated_offenders = len(updates)

    def _first_until(self, offense: Offense) -> int | None:  # ingest.first_offender's too
        return self.retention.active_until(offense.created, 1, (offense.source,))

    def _merge(
        self, old: Offender | None, offenses: list[Offense], tx: Tx | None = None
    ) -> Offender:
        first = min(o.created for o in offenses)
        last = max(o.created for o in offenses)
        sources = {o.source for o in offenses}
        devices = {o.device for o in offenses}
        vdoms = {f"{o.device}/{o.vdom}" for o in offenses}
        count = len(offenses)
        note, times = None, [o.created for o in offenses]  # decay walks the times
        if old is not None:
            if tx is not None and self.retention.decay_after is not None:
                times += [o.created for o in tx.offenses_of(str(old.ip))]
            first, last = min(first, old.first_offense), max(last, old.last_offense)
            sources |= set(old.sources)
            devices |= set(old.devices)
            vdoms |= set(old.vdoms)
            count += old.offense_count
            note = old.note
        return Offender(
            ip=offenses[0].ip,
            first_offense=first,
            last_offense=last,
            offense_count=count,
            sources=tuple(sorted(sources)),
            devices=tuple(sorted(devices)),
            vdoms=tuple(sorted(vdoms)),
            active_until=self.retention.active_until(last, count, sources, times),
            status=OffenderStatus.LISTED,
            note=note,
        )
