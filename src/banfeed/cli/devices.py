"""Commands of the devices: check, collect."""

from __future__ import annotations

import asyncio
from collections import Counter

import click
from rich.table import Table

from ..timeutil import iso
from .base import EXIT_FAILED, Context, bad, err, handle_errors, main, ok, out, pass_ctx, warn

RETRY_NOW = click.option(
    "--retry-now",
    is_flag=True,
    help="Poll devices inside their back-off window after a 401/429 too.",
)


@main.command()
@RETRY_NOW
@pass_ctx
@handle_errors
def check(ctx: Context, retry_now: bool) -> None:
    """Validate the config, the store and every FortiGate (reachable? token? entries?)."""
    from .. import checks

    config = ctx.config
    out.print(
        f"config {ctx.path}: valid ({len(config.fortigates)} FortiGates, {len(config.feeds)} feeds)"
    )
    for warning in checks.warnings(config):
        warn(warning)
    with ctx.runtime() as rt:
        out.print(f"store {rt.store.display_url}: schema {rt.store.current_revision()} ok")
        with rt.store.read() as tx:
            statuses = tx.device_statuses()
        # A probe is a real poll that is not stored: the collector's own polling code. It
        # respects the back-off after 401/429 (unless --retry-now), so checking never extends a
        # FortiGate's lock-out.
        collector = rt.collector()
        collector.retry_now = retry_now
        results = asyncio.run(collector.poll(statuses, rt.now()))
    table = Table("device", "vdom", "result", "entries", "rejected", "ms", "last success")
    for r in results:
        last = statuses.get((r.device, r.vdom))
        outcome = ok() if r.error is None else bad(r.error.kind, r.error.detail)
        counts = Counter(v.vdom for v in r.lists for _ in v.offenses)
        entries = ", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "0"
        table.add_row(
            r.device,
            r.vdom,
            outcome,
            entries,
            str(r.rejected),
            f"{r.duration * 1000:.0f}",
            iso(last.last_success) if last and last.last_success else "never",
        )
        if last is not None and last.backoff_until and r.error is None:
            warn(f"{r.device}/{r.vdom}: back-off until {iso(last.backoff_until)} is lifted")
    if results:
        out.print(table)
    else:
        warn("no [[fortigates]] configured — nothing to collect")
    if any(r.error for r in results):
        raise SystemExit(EXIT_FAILED)


# -- collection ------------------------------------------------------------------------------


@main.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
@RETRY_NOW
@pass_ctx
@handle_errors
def collect(ctx: Context, quiet: bool, retry_now: bool) -> None:
    """Run one collection cycle (what cron runs) and publish the feeds. Exit 1 if any device
    failed or a feed is held."""
    from .. import cycles
    from ..publish import Outcome

    with ctx.runtime() as rt:
        report, published, pushes = asyncio.run(cycles.collect_once(rt, retry_now=retry_now))
    held = [r for r in published if r.outcome is Outcome.HELD]
    if not quiet or report.failed:
        table = Table("device", "vdom", "result", "entries", "rejected", "ms")
        for r in report.results:
            if r.error is not None:
                result = bad(r.error.kind, r.error.detail)
            else:
                result = ok("ok (unchanged)" if r.unchanged else "ok")
            entries = "-" if r.unchanged or r.error else str(r.entries)
            table.add_row(
                r.device, r.vdom, result, entries, str(r.rejected), f"{r.duration * 1000:.0f}"
            )
        out.print(table)
        out.print(
            f"{len(report.results) - len(report.failed)}/{len(report.results)} polls ok; "
            f"{report.new_offenses} new offenses, {report.new_offenders} new offenders, "
            f"{report.updated_offenders} updated, {report.suppressed} suppressed, "
            f"{report.rejected} invalid entries rejected; {report.duration:.2f}s"
        )
        for p in pushes:
            outcome = f"{p.count} sent" + (f", {p.skipped} skipped" if p.skipped else "")
            if p.error is not None:
                outcome = f"failed: {p.error.kind}: {p.error.detail}"
            out.print(f"push {p.action} → {p.device}: {outcome}")
    for h in held:
        reason = h.decision.reason if h.decision else "held"
        err.print(f"feed {h.feed} HELD: {reason}")
    if report.failed or held:
        raise SystemExit(EXIT_FAILED)
