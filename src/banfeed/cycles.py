"""One collection cycle as a command runs it (`banfeed collect`), and what a cycle pushes."""

from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

from .collector import CycleReport
from .compose import Runtime, feed_push_targets, push_targets
from .config import Config
from .policy import build_allowlist
from .publish import Publisher, served
from .publish.publisher import FeedResult
from .push import Backoff, FeedSync, PushResult, push_quarantine
from .sharing import abuseipdb
from .store import Store
from .timeutil import system_clock

log = logging.getLogger("banfeed")


async def push_after_cycle(
    config: Config,
    store: Store,
    report: CycleReport,
    feed_lines: list[str] | None,
    *,
    now: int,
    backoff: Backoff,
    sync: FeedSync,
) -> list[PushResult]:
    """Push what a cycle found to the FortiGates that want it; log each device's outcome."""
    results: list[PushResult] = []
    receivers = push_targets(config)
    if receivers and report.published:
        results += await push_quarantine(
            receivers,
            report.published,
            now=now,
            max_per_cycle=config.push.max_per_cycle,
            max_expiry=config.push.max_expiry,
            backoff=backoff,
            store=store,
        )
    feed_targets = feed_push_targets(config)
    if feed_targets and feed_lines is not None:
        results += await sync.sync(feed_targets, feed_lines, now=now, backoff=backoff)
    for result in results:
        if result.error is not None:
            log.warning("push %s to %s failed: %s", result.action, result.device, result.error)
        elif result.count or result.skipped:
            log.info(
                "push %s to %s: %d sent, %d skipped",
                result.action,
                result.device,
                result.count,
                result.skipped,
            )
    if config.abuseipdb.enabled:  # queued for a background task: never waits
        share_abuseipdb(config, store, report)
    return results


def share_abuseipdb(config: Config, store: Store, report: CycleReport) -> int:
    """Queue the cycle's publishable offenders for AbuseIPDB (docs/abuseipdb.md): comments
    never name a device, a VDOM or a device's host; exclude, protect and the allowlist are
    never reported."""
    fleet = config.fortigates
    private = [fg.name for fg in fleet] + [v for fg in fleet for v in fg.vdoms if v != "*"]
    private += [urlsplit(fg.url).hostname or "" for fg in fleet]
    networks = [*config.allowlist.networks, *config.abuseipdb.exclude]
    return abuseipdb.offer(
        store,
        config.abuseipdb,
        (offender for offender, _ in report.published),
        base_dir=config.base_dir,
        private=private,
        never=build_allowlist(networks, config.safety.protect),
        clock=system_clock,
    )


def served_lines(publisher: Publisher, feed: str | None) -> list[str] | None:
    """The lines of ``feed`` as consumers are served them now (None: nothing published)."""
    if feed is None:
        return None
    with publisher.store.read() as tx:
        shown = served(tx, feed)
    return None if shown is None else [str(line) for line in shown.lines()]


async def collect_once(
    rt: Runtime, *, retry_now: bool = False
) -> tuple[CycleReport, list[FeedResult], list[PushResult]]:
    """One cycle, then publish (build, guards, record), then push (``banfeed collect``): no
    memory between runs, so a push-type feed gets a snapshot of the served version each time."""
    collector = rt.collector()
    collector.retry_now = retry_now
    report = await collector.cycle()
    publisher = rt.publisher()
    results = await asyncio.to_thread(publisher.publish)
    lines = served_lines(publisher, rt.config.push.feed) if feed_push_targets(rt.config) else None
    pushes = await push_after_cycle(
        rt.config, rt.store, report, lines, now=rt.now(), backoff=Backoff(), sync=FeedSync()
    )
    await abuseipdb.drain(rt.store, rt.config.abuseipdb.timeout)  # what fits before we exit
    return report, results, pushes
