"""Commands of the alerts: alerts test."""

from __future__ import annotations

import time

from rich.table import Table

from ._json import FORMAT, emit
from .base import EXIT_FAILED, Context, bad, handle_errors, main, ok, out, pass_ctx, warn


@main.group()
def alerts() -> None:
    """Alert targets ([[alerts.targets]]: webhooks, apprise); docs/alerts.md."""


@alerts.command("test")
@FORMAT
@pass_ctx
@handle_errors
def alerts_test(ctx: Context, fmt: str) -> None:
    """Send one test alert to every target and print how each went. Exit 1 if one failed."""
    from .. import alerts as alerting

    config = ctx.config
    outcomes = alerting.send_test(config, int(time.time()))
    if fmt == "json":
        emit(
            {
                "ok": all(o.ok for o in outcomes),
                "targets": [{"target": o.target, "ok": o.ok, "error": o.error} for o in outcomes],
            }
        )
    elif not outcomes:
        warn("no [[alerts.targets]] configured — nothing to send to")
    else:
        table = Table("target", "result")
        for outcome in outcomes:
            table.add_row(
                outcome.target, ok("sent") if outcome.ok else bad("failed", outcome.error or "")
            )
        out.print(table)
    if not outcomes or not all(o.ok for o in outcomes):
        raise SystemExit(EXIT_FAILED)
