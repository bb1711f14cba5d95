"""Commands of the AbuseIPDB reporter: abuseipdb status."""

from __future__ import annotations

import click
from rich.table import Table

from ._json import FORMAT, emit
from .base import Context, handle_errors, main, out, pass_ctx, short_time


@main.group()
def abuseipdb() -> None:
    """Reports of new offenders to AbuseIPDB ([abuseipdb], docs/abuseipdb.md)."""


@abuseipdb.command("status")
@click.option(
    "--limit",
    default=20,
    show_default=True,
    type=click.IntRange(1, 10000),
    help="Latest reports shown.",
)
@FORMAT
@pass_ctx
@handle_errors
def abuseipdb_status(ctx: Context, limit: int, fmt: str) -> None:
    """Today's count against the daily limit, and the latest reports (address, categories)."""
    from ..sharing import abuseipdb as reporter

    with ctx.runtime() as rt:
        shown = reporter.status(rt.store, rt.config.abuseipdb, now=rt.now(), limit=limit)
    if fmt == "json":
        emit(reporter.status_record(shown))
        return
    state = "enabled" if shown.enabled else "disabled"
    out.print(f"abuseipdb: {state}; {shown.today}/{shown.daily_limit} reports today (UTC)")
    table = Table("reported", "address", "categories", "status")
    for r in shown.recent:
        categories = ",".join(map(str, r.categories))
        table.add_row(short_time(r.reported_at), r.ip, categories, r.status.value)
    out.print(table)
