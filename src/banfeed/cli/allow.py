"""Commands of the allowlist: allow add, allow remove, allow list."""

from __future__ import annotations

import json

import click
from rich.table import Table

from ..timeutil import iso, parse_duration
from .base import Context, handle_errors, main, operator, out, pass_ctx


@main.group()
def allow() -> None:
    """The allowlist kept in the store (besides [allowlist] in the config)."""


@allow.command("add")
@click.argument("network")
@click.option("--note", default=None, help="Why, for the audit log.")
@click.option("--expires", default=None, help='Remove it after this long, like "30d".')
@click.option("--force", is_flag=True, help="Allow a network broader than [safety] max_prefix.")
@pass_ctx
@handle_errors
def allow_add(
    ctx: Context, network: str, note: str | None, expires: str | None, force: bool
) -> None:
    """Never publish NETWORK (effective on every feed at once; a large drop is held)."""
    from .. import compose, control

    ttl = None if expires is None else parse_duration(expires)
    with ctx.runtime() as rt:
        now = rt.now()
        entry = control.allow_add(
            rt.store,
            network,
            expires=None if ttl is None else now + ttl,
            note=note,
            actor=operator(),
            now=now,
            guard=compose.guard(rt.config),
            force=force,
        )
    out.print(
        f"allowlisted {entry.network}" + (f" until {iso(entry.expires)}" if entry.expires else "")
    )


@allow.command("remove")
@click.argument("network")
@pass_ctx
@handle_errors
def allow_remove(ctx: Context, network: str) -> None:
    """Remove NETWORK from the store's allowlist."""
    from .. import control

    with ctx.runtime() as rt:
        control.allow_remove(rt.store, network, actor=operator(), now=rt.now())
    out.print(f"removed {network} from the allowlist")


@allow.command("list")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def allow_list(ctx: Context, fmt: str) -> None:
    """Every allowlisted and protected network: config and store."""
    with ctx.runtime() as rt, rt.store.read() as tx:
        stored = tx.allow_entries(rt.now())
    config = ctx.config
    rows = [
        {"network": str(n), "origin": "config [allowlist]", "expires": None, "note": None}
        for n in config.allowlist.networks
    ]
    rows += [
        {"network": str(n), "origin": "config [safety] protect", "expires": None, "note": None}
        for n in config.safety.protect
    ]
    rows += [
        {
            "network": str(e.network),
            "origin": f"store, by {e.actor} at {iso(e.created)}",
            "expires": iso(e.expires),
            "note": e.note,
        }
        for e in stored
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("network", "origin", "expires", "note")
    for r in rows:
        table.add_row(r["network"], r["origin"], r["expires"] or "never", r["note"] or "")
    out.print(table)
