"""Commands of the alerts: alerts list, alerts test."""

from __future__ import annotations

import time

from rich.table import Table

from ._json import FORMAT, emit
from .base import EXIT_FAILED, Context, bad, handle_errors, main, ok, out, pass_ctx, warn


@main.group()
def alerts() -> None:
    """Alerts sent, and their targets ([[alerts.targets]]: webhooks, apprise); docs/alerts.md."""


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


@alerts.command("list")
@FORMAT
@pass_ctx
@handle_errors
def alerts_list(ctx: Context, fmt: str) -> None:
    """The alerts firing now and the last notices sent, newest first (what the dashboard and
    GET /api/v1/alerts show), from the store: what `banfeed run` last saved there."""
    from .. import alerts as alerting

    with ctx.runtime() as rt:
        shown = alerting.records(alerting.recent_alerts(rt.store))
    if fmt == "json":
        emit(shown)
        return

    def when(text: str | None) -> str:
        return (text or "")[:16].replace("T", " ")  # short_time's form of an ISO time

    if shown["firing"]:
        table = Table("severity", "kind", "about", "since (UTC)", "what", title="firing now")
        for a in shown["firing"]:
            table.add_row(a["severity"], a["kind"], a["subject"], when(a["since"]), a["text"])
        out.print(table)
    else:
        out.print("no alert firing")
    table = Table("sent (UTC)", "status", "kind", "about", "what", title="last notices")
    for a in shown["recent"]:
        table.add_row(when(a["time"]), a["status"], a["kind"], a["subject"], a["text"])
    if shown["recent"]:
        out.print(table)
    else:
        out.print("no notice sent yet")
