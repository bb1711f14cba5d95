"""Commands of the operator's record: bans (manual and imported) and events (the audit log)."""

from __future__ import annotations

import click
from rich.table import Table

from ._json import FORMAT as JSON_FORMAT
from .base import Context, handle_errors, main, out, pass_ctx, short_time
from .filters import ORIGINS, parse_since, parse_within

EVENT_KINDS = (
    "suppressed",
    "relisted",
    "banned",
    "unbanned",
    "allowlist_added",
    "allowlist_removed",
    "imported",
    "expired",
    "feed_approved",
    "feed_pinned",
    "feed_released",
)  # models.EventKind (tests/test_dayto.py checks)


@main.command()
@click.option("--origin", type=click.Choice(tuple(ORIGINS)), help="Only bans of this origin.")
@click.option("--active", "which", flag_value="active", default=True, help="Not expired (default).")
@click.option("--expired", "which", flag_value="expired", help="Only expired bans.")
@click.option("--all", "which", flag_value="all", help="Active and expired bans.")
@click.option("--network", metavar="NET", help="Only bans inside NET or containing it.")
@JSON_FORMAT
@pass_ctx
@handle_errors
def bans(ctx: Context, origin: str | None, which: str, network: str | None, fmt: str) -> None:
    """List manual and imported bans, in numeric order: who, when, until when, why."""
    from .. import reports
    from ..models import BanOrigin
    from ._json import emit

    overlapping = parse_within(network, "--network")
    with ctx.runtime() as rt, rt.store.read() as tx:
        now = rt.now()
        found = reports.list_bans(
            tx,
            now,
            origin=BanOrigin(ORIGINS[origin]) if origin else None,
            which=which,
            overlapping=overlapping,
        )
    records = [reports.ban_record(b, now) for b in found]
    if fmt == "json":
        emit(records)
        return
    table = Table("network", "origin", "state", "created", "expires", "by", "note")
    for column in (0, 3, 4):
        table.columns[column].no_wrap = True
    for ban, record in zip(found, records, strict=True):
        table.add_row(
            record["network"],
            record["origin"],
            record["state"],
            short_time(ban.created),
            short_time(ban.expires) if ban.expires is not None else "until unbanned",
            record["actor"],
            record["note"] or "",
        )
    out.print(table)
    out.print(f"{len(found)} bans")


@main.command()
@click.option("--actor", help="Only events by this operator (or `banfeed` for its own).")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(EVENT_KINDS), help="Only these.")
@click.option("--address", metavar="ADDR", help="Only events about ADDR (an address or network).")
@click.option("--since", metavar="WHEN", help='At or after WHEN ("1d" back, or a UTC time).')
@click.option("--limit", type=int, default=100, show_default=True, help="Newest events (0 = all).")
@JSON_FORMAT
@pass_ctx
@handle_errors
def events(
    ctx: Context,
    actor: str | None,
    kinds: tuple[str, ...],
    address: str | None,
    since: str | None,
    limit: int,
    fmt: str,
) -> None:
    """The audit log, oldest first: the newest events that pass the filters."""
    from .. import reports
    from ..models import EventKind
    from ._json import emit

    about = parse_within(address, "--address")
    with ctx.runtime() as rt, rt.store.read() as tx:
        found = reports.audit_events(
            tx,
            actor=actor,
            kinds=[EventKind(k) for k in kinds],
            since=parse_since(since, rt.now()),
            about=about,
            limit=max(limit, 0),
        )
    if fmt == "json":
        emit([reports.event_record(e) for e in found])
        return
    table = Table("time", "kind", "address", "by", "detail")
    for column in (0, 1, 2):
        table.columns[column].no_wrap = True
    for e in found:
        table.add_row(short_time(e.time), e.kind.value, e.ip or "", e.actor, e.detail)
    out.print(table)
    more = " (the newest; --limit 0 for all)" if limit > 0 and len(found) == limit else ""
    out.print(f"{len(found)} events{more}")
