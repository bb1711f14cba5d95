"""Report new offenders to AbuseIPDB (``[abuseipdb]``, opt-in; docs/abuseipdb.md).

After each cycle, the offenders it may publish (never-block, protected and allowlisted
addresses are never among them; ``exclude`` removes more) are queued in memory: :func:`offer`
never waits. The first time a process offers, its task first queues what an earlier process
left unsent: the active offenders that offended within ``repeat_after`` and were not reported
since (``Tx.unreported_offenders``). A background task sends them one at a time, honouring
AbuseIPDB's ``429 Retry-After``, the daily limit (counted from the store's
``abuseipdb_reports``, so a restart neither forgets today's count nor reports an address again
before ``repeat_after``), and backs off while the API is down. A comment names only the cause,
the offense count and two dates; it is scrubbed of device names, VDOMs and addresses before it
leaves.
"""

from __future__ import annotations

import asyncio
import logging
import re
import weakref
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from ..config.abuseipdb import MAX_COMMENT, AbuseIPDBConfig
from ..errors import BanfeedError, ConfigError, InputError
from ..metrics import ABUSEIPDB_REPORTS
from ..models import Offender
from ..net import parse_address, parse_network
from ..policy import Allowlist, suppression, with_entries
from ..store import Store
from ..store._abuse import AbuseReport, ReportStatus
from ..timeutil import Clock, clamp_time, iso

log = logging.getLogger("banfeed")

DAY = 86400
REDACTED = "[redacted]"
DEFAULT_RETRY_AFTER = 60  # a 429 without a usable Retry-After
MAX_PAUSE = DAY  # the longest a Retry-After or a back-off holds the queue
FAILURE_PAUSE = 30  # the first pause after a failed send (doubled up to MAX_PAUSE)


@dataclass(frozen=True, slots=True)
class Pending:
    """One report waiting to be sent: nothing in it but what AbuseIPDB is told."""

    ip: str
    categories: tuple[int, ...]
    comment: str
    timestamp: str


# Words split at these, so an address inside "ip=192.0.2.1," is still found.
_SEPARATORS = re.compile(r"([\s,;()\[\]<>='\"]+)")


def scrub(text: str, private: Iterable[str]) -> str:
    """``text`` with every private word (device, VDOM, host names) and every address or network
    replaced by ``[redacted]``."""
    for word in sorted({w for w in private if w}, key=len, reverse=True):
        pattern = r"(?<![\w.-])" + re.escape(word) + r"(?![\w.-])"
        text = re.sub(pattern, REDACTED, text, flags=re.IGNORECASE)
    parts = _SEPARATORS.split(text)
    for i, part in enumerate(parts):
        if i % 2 == 0 and part and _is_address(part.strip(".:")):
            parts[i] = REDACTED
    return "".join(parts)


def _is_address(word: str) -> bool:
    for parse in (parse_address, parse_network):
        try:
            parse(word)
        except InputError:
            continue
        return True
    return False


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(clamp_time(epoch), UTC).strftime("%Y-%m-%d")


def pending(offender: Offender, section: AbuseIPDBConfig, private: Iterable[str]) -> Pending:
    """What AbuseIPDB is told of ``offender``: its categories from its causes, the comment."""
    causes: list[str] = []
    categories: set[int] = set()
    for source in offender.sources or ("unknown",):
        name, numbers = section.categories_of(source)
        if name not in causes:
            causes.append(name)
        categories.update(numbers)
    own = [*offender.devices, *(v.partition("/")[2] for v in offender.vdoms), *offender.vdoms]
    comment = section.comment.format(
        cause="/".join(causes),
        offenses=offender.offense_count,
        first_seen=_date(offender.first_offense),
        last_seen=_date(offender.last_offense),
    )
    comment = scrub(comment, [*private, *own])[:MAX_COMMENT]
    stamp = iso(offender.last_offense) or ""
    return Pending(str(offender.ip), tuple(sorted(categories)), comment, stamp)


@dataclass(frozen=True, slots=True)
class Settings:
    """What the reporter needs, resolved: the section, its key, what to keep quiet about."""

    section: AbuseIPDBConfig
    key: SecretStr
    private: frozenset[str]  # device, VDOM and host names: never in a comment
    never: Allowlist  # exclude, protect and the allowlist: never reported


class Reporter:
    """The queue of one store and the task that empties it (at most one task at a time). It
    holds no reference to its store but while sending: the registry's key must stay weak."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.queue: deque[Pending] = deque()
        self.queued: set[str] = set()
        self.task: asyncio.Task[None] | None = None
        self.resume_at = 0.0  # loop time before which nothing is sent (429, failures)
        self.failures = 0
        self.pruned_day = -1
        self.warned_day = -1
        self.recovered = False  # what an earlier process left unsent is queued
        self.last_failure: tuple[int, str] | None = None  # when and why a send last failed

    def offer(self, store: Store, offenders: Iterable[Offender]) -> int:
        """Queue the offenders worth reporting; start sending. Never waits: memory only."""
        added = self._admit(offenders, self.settings.never)
        if (self.queue or not self.recovered) and (self.task is None or self.task.done()):
            self.task = asyncio.get_running_loop().create_task(self._run(store))
        return added

    def _admit(self, offenders: Iterable[Offender], never: Allowlist) -> int:
        """Queue those of ``offenders`` worth reporting and not queued yet; how many were."""
        section, added = self.settings.section, 0
        for offender in offenders:
            ip = str(offender.ip)
            if offender.offense_count < section.min_offenses or ip in self.queued:
                continue
            if suppression(offender.ip, never) is not None:
                continue
            if len(self.queue) >= section.daily_limit:  # a day's worth is queued already
                ABUSEIPDB_REPORTS.labels("dropped").inc()
                continue
            self.queue.append(pending(offender, section, self.settings.private))
            self.queued.add(ip)
            added += 1
        return added

    def _recover(self, store: Store) -> int:
        """Queue what an earlier process left unsent (it stopped, or its queue was full): the
        active offenders that offended within ``repeat_after`` and were not reported since,
        through the same rules as a cycle's (the store's allow entries too)."""
        now, section = int(self.clock()), self.settings.section
        since = now - section.repeat_after
        with store.read() as tx:
            never = with_entries(self.settings.never, tx.allow_entries(now))
            found = tx.unreported_offenders(
                offended_since=since, reported_since=since, now=now, limit=section.daily_limit
            )
        self.recovered = True
        added = self._admit(found, never)
        if added:
            log.info("abuseipdb: %d offenders not reported before the last stop are queued", added)
        return added

    async def _run(self, store: Store) -> None:
        section = self.settings.section
        if not self.recovered:
            try:
                await asyncio.to_thread(self._recover, store)
            except BanfeedError as exc:  # tried again at the next cycle's offer
                self._failed(f"{type(exc).__name__}: {exc}")
                return
        headers = {"Key": self.settings.key.get_secret_value(), "Accept": "application/json"}
        async with httpx.AsyncClient(timeout=section.timeout, headers=headers) as client:
            while self.queue:
                loop = asyncio.get_running_loop()
                if loop.time() < self.resume_at:
                    await asyncio.sleep(self.resume_at - loop.time())
                    continue
                item = self.queue[0]
                try:
                    go = await asyncio.to_thread(self._may_send, store, item)
                    if go is None:  # the day's limit is reached: the rest waits for the next
                        return
                    if go:
                        await self._send(store, client, item)
                    else:
                        self._done(item)
                except (BanfeedError, httpx.HTTPError) as exc:
                    self._failed(f"{type(exc).__name__}: {exc}")

    def _may_send(self, store: Store, item: Pending) -> bool | None:
        """True: send it; False: reported within repeat_after, skip it; None: limit reached."""
        now = int(self.clock())
        section = self.settings.section
        day = now - now % DAY
        if self.pruned_day != day:
            with store.write() as tx:
                tx.prune_abuse_reports(now - max(section.repeat_after, DAY) - DAY)
            self.pruned_day = day
        with store.read() as tx:
            last = tx.last_abuse_reports([item.ip]).get(item.ip)
            today = tx.abuse_reports_since(day)
        if last is not None and now - last < section.repeat_after:
            ABUSEIPDB_REPORTS.labels("skipped").inc()
            return False
        if today >= section.daily_limit:
            if self.warned_day != day:
                ABUSEIPDB_REPORTS.labels("daily_limit").inc()
                log.warning(
                    "abuseipdb: the daily limit of %d reports is reached; %d wait for tomorrow "
                    "(UTC)",
                    section.daily_limit,
                    len(self.queue),
                )
                self.warned_day = day
            return None
        return True

    async def _send(self, store: Store, client: httpx.AsyncClient, item: Pending) -> None:
        form = {
            "ip": item.ip,
            "categories": ",".join(map(str, item.categories)),
            "comment": item.comment,
            "timestamp": item.timestamp,
        }
        answer = await client.post(self.settings.section.url + "/report", data=form)
        status = answer.status_code
        if status == 429:
            wait = retry_after(answer.headers.get("Retry-After"), self.clock())
            ABUSEIPDB_REPORTS.labels("rate_limited").inc()
            log.info("abuseipdb: rate limited; sending again in %ds", wait)
            self.resume_at = asyncio.get_running_loop().time() + wait
            return
        if status in (401, 403):
            self._failed(f"HTTP {status}: the API key was refused — check abuseipdb.key_*")
            return
        if status >= 500:
            self._failed(f"HTTP {status}")
            return
        outcome = ReportStatus.REPORTED if 200 <= status < 300 else ReportStatus.REJECTED
        if outcome is ReportStatus.REJECTED:
            log.warning("abuseipdb: report of %s refused: HTTP %d", item.ip, status)
        report = AbuseReport(item.ip, int(self.clock()), item.categories, outcome)
        await asyncio.to_thread(_record, store, report)
        ABUSEIPDB_REPORTS.labels(outcome.value).inc()
        self.failures = 0
        self._done(item)

    def _done(self, item: Pending) -> None:
        self.queue.popleft()
        self.queued.discard(item.ip)

    def _failed(self, why: str) -> None:
        """The API or the store failed: keep the queue, wait longer each time."""
        pause = min(FAILURE_PAUSE * 2**self.failures, MAX_PAUSE)
        self.failures = min(self.failures + 1, 20)
        ABUSEIPDB_REPORTS.labels("failed").inc()
        self.last_failure = (int(self.clock()), why)
        log.warning("abuseipdb: report failed (%s); trying again in %ds", why, pause)
        self.resume_at = asyncio.get_running_loop().time() + pause


def _record(store: Store, report: AbuseReport) -> None:
    with store.write() as tx:
        tx.insert_abuse_report(report)


def retry_after(value: str | None, now: float) -> int:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), within bounds."""
    seconds: float = DEFAULT_RETRY_AFTER
    if value is not None:
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= 9:
            seconds = int(text)
        else:
            try:
                seconds = parsedate_to_datetime(text).timestamp() - now
            except (TypeError, ValueError, IndexError):
                pass
    return int(min(max(seconds, 1), MAX_PAUSE))


_REPORTERS: weakref.WeakKeyDictionary[Store, Reporter] = weakref.WeakKeyDictionary()


def offer(
    store: Store,
    section: AbuseIPDBConfig,
    offenders: Iterable[Offender],
    *,
    base_dir: Path,
    private: Iterable[str],
    never: Allowlist,
    clock: Clock,
) -> int:
    """Queue a cycle's offenders for AbuseIPDB and return how many were queued; never waits.
    Nothing happens when ``[abuseipdb]`` is off; a key that cannot be read is logged."""
    if not section.enabled:
        return 0
    try:
        key = section.resolve_key(base_dir)
    except ConfigError as exc:
        log.error("abuseipdb: nothing reported: %s", exc)
        return 0
    settings = Settings(section, key, frozenset(private), never)
    reporter = _REPORTERS.get(store)
    if reporter is None:
        reporter = _REPORTERS[store] = Reporter(settings, clock)
    reporter.settings = settings  # a reload's new settings apply to what is queued next
    return reporter.offer(store, offenders)


async def drain(store: Store, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for ``store``'s queue to be sent (``banfeed collect``,
    tests); True when nothing is left to send now."""
    reporter = _REPORTERS.get(store)
    if reporter is None or reporter.task is None:
        return True
    done, _ = await asyncio.wait({reporter.task}, timeout=timeout)
    return bool(done)


@dataclass(frozen=True, slots=True)
class Status:
    enabled: bool
    today: int  # reports the API took since 00:00 UTC
    daily_limit: int
    recent: list[AbuseReport]
    # Known only in the process that sends (``banfeed run``'s dashboard): None elsewhere.
    queued: int | None = None
    last_failure: tuple[int, str] | None = None


def status(store: Store, section: AbuseIPDBConfig, *, now: int, limit: int) -> Status:
    """What ``banfeed abuseipdb status`` and the Sources page show: today's count, the latest
    reports and, in the process that sends, what is queued and the last failure."""
    with store.read() as tx:
        today = tx.abuse_reports_since(now - now % DAY)
        recent = tx.recent_abuse_reports(limit)
    reporter = _REPORTERS.get(store)
    if reporter is None:
        return Status(section.enabled, today, section.daily_limit, recent)
    queued, failure = len(reporter.queue), reporter.last_failure
    return Status(section.enabled, today, section.daily_limit, recent, queued, failure)


def record(report: AbuseReport) -> dict[str, Any]:
    """A report as ``banfeed abuseipdb status --format json`` and ``/api/v1/sources`` give it."""
    return {
        "ip": report.ip,
        "reported_at": iso(report.reported_at),
        "categories": list(report.categories),
        "status": report.status.value,
    }


def status_record(shown: Status) -> dict[str, Any]:
    """``banfeed abuseipdb status --format json``'s object; ``/api/v1/sources`` adds to it."""
    failure = shown.last_failure
    return {
        "enabled": shown.enabled,
        "today": shown.today,
        "daily_limit": shown.daily_limit,
        "queued": shown.queued,
        "last_failure": None if failure is None else {"at": iso(failure[0]), "error": failure[1]},
        "reports": [record(r) for r in shown.recent],
    }
