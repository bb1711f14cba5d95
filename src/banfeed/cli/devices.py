"""Commands of the devices: check, collect."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from ._json import FORMAT, cycle_record, emit, probe_record
from .base import EXIT_FAILED, Context, bad, err, handle_errors, main, ok, out, pass_ctx, warn

RETRY_NOW = click.option(
    "--retry-now",
    is_flag=True,
    help="Poll devices inside their back-off window after a 401/429 too.",
)


def _result(record: dict[str, Any], fine: str = "ok") -> Text:
    error = record["error"]
    if isinstance(error, dict):
        return bad(error["kind"], error["detail"])
    return ok(fine)


@main.command()
@RETRY_NOW
@FORMAT
@pass_ctx
@handle_errors
def check(ctx: Context, retry_now: bool, fmt: str) -> None:
    """Validate the config, the store and every FortiGate (reachable? token? entries?)."""
    from .. import checks

    config = ctx.config
    as_json = fmt == "json"
    warnings = checks.warnings(config)
    if not as_json:
        out.print(
            f"config {ctx.path}: valid ({len(config.fortigates)} FortiGates, "
            f"{len(config.feeds)} feeds)"
        )
        for warning in warnings:
            warn(warning)
    with ctx.runtime() as rt:
        schema = rt.store.current_revision()
        if not as_json:
            out.print(f"store {rt.store.display_url}: schema {schema} ok")
        with rt.store.read() as tx:
            statuses = tx.device_statuses()
        # A probe is a real poll that is not stored: the collector's own polling code. It
        # respects the back-off after 401/429 (unless --retry-now), so checking never extends a
        # FortiGate's lock-out.
        collector = rt.collector()
        collector.retry_now = retry_now
        results = asyncio.run(collector.poll(statuses, rt.now()))
        store_url = rt.store.display_url
    rows = [probe_record(r, statuses.get((r.device, r.vdom))) for r in results]
    if as_json:
        for warning in warnings:  # in the document too; on stderr for whoever watches
            err.print(f"warning: {warning}")
        if not rows:
            err.print("warning: no [[fortigates]] configured — nothing to collect")
        emit(
            {
                "ok": all(r["ok"] for r in rows),
                "config": {
                    "path": str(ctx.path),
                    "fortigates": len(config.fortigates),
                    "feeds": len(config.feeds),
                },
                "warnings": warnings,
                "store": {"url": store_url, "schema": schema},
                "devices": rows,
            }
        )
    else:
        _check_table(rows)
    if any(not r["ok"] for r in rows):
        raise SystemExit(EXIT_FAILED)


def _check_table(rows: list[dict[str, Any]]) -> None:
    table = Table("device", "vdom", "result", "entries", "rejected", "ms", "last success")
    for row in rows:
        entries = ", ".join(f"{v}={n}" for v, n in row["entries_by_vdom"].items()) or "0"
        table.add_row(
            row["device"],
            row["vdom"],
            _result(row),
            entries,
            str(row["rejected"]),
            str(row["duration_ms"]),
            row["last_success"] or "never",
        )
        if row["backoff_lifted"]:
            warn(f"{row['device']}/{row['vdom']}: back-off until {row['backoff_lifted']} is lifted")
    if rows:
        out.print(table)
    else:
        warn("no [[fortigates]] configured — nothing to collect")


# -- collection ------------------------------------------------------------------------------


@main.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
@RETRY_NOW
@FORMAT
@pass_ctx
@handle_errors
def collect(ctx: Context, quiet: bool, retry_now: bool, fmt: str) -> None:
    """Run one collection cycle (what cron runs) and publish the feeds. Exit 1 if any device
    failed or a feed is held."""
    from .. import cycles
    from ..publish import Outcome

    with ctx.runtime() as rt:
        report, published, pushes = asyncio.run(cycles.collect_once(rt, retry_now=retry_now))
    record = cycle_record(report, published, pushes)
    held = [r for r in published if r.outcome is Outcome.HELD]
    if fmt == "json":
        if not quiet or not record["ok"]:
            emit(record)
    elif not quiet or report.failed:
        _collect_table(record)
    for h in held:
        reason = h.decision.reason if h.decision else "held"
        err.print(f"feed {h.feed} HELD: {reason}")
    if report.failed or held:
        raise SystemExit(EXIT_FAILED)


def _collect_table(record: dict[str, Any]) -> None:
    table = Table("device", "vdom", "result", "entries", "rejected", "ms")
    for row in record["polls"]:
        result = _result(row, "ok (unchanged)" if row["unchanged"] else "ok")
        entries = "-" if row["entries"] is None else str(row["entries"])
        table.add_row(
            row["device"],
            row["vdom"],
            result,
            entries,
            str(row["rejected"]),
            str(row["duration_ms"]),
        )
    out.print(table)
    s = record["summary"]
    out.print(
        f"{s['polls_ok']}/{s['polls']} polls ok; "
        f"{s['new_offenses']} new offenses, {s['new_offenders']} new offenders, "
        f"{s['updated_offenders']} updated, {s['suppressed']} suppressed, "
        f"{s['rejected']} invalid entries rejected; {record['duration_s']:.2f}s"
    )
    for p in record["pushes"]:
        outcome = f"{p['count']} sent" + (f", {p['skipped']} skipped" if p["skipped"] else "")
        if p["error"] is not None:
            outcome = f"failed: {p['error']['kind']}: {p['error']['detail']}"
        out.print(f"push {p['action']} → {p['device']}: {outcome}")
