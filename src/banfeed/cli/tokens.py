"""Commands of the API tokens: token add, token list, token revoke."""

from __future__ import annotations

import json

import click
from rich.table import Table

from .base import Context, err, handle_errors, main, operator, out, pass_ctx, short_time

ROLES = ("viewer", "admin")


@main.group()
def token() -> None:
    """API tokens for scripts (Authorization: Bearer on /api/v1; SHA-256 in the store)."""


@token.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads; admin acts.")
@click.option("--expires", metavar="DURATION", help='Refused after this long, like "90d".')
@click.option("--note", default=None, help="What it is for (shown by token list).")
@pass_ctx
@handle_errors
def token_add(ctx: Context, name: str, role: str, expires: str | None, note: str | None) -> None:
    """Add token NAME and print it, once: only its hash is kept."""
    from ..models import Role
    from ..timeutil import iso, parse_duration
    from ..web import tokens

    expires_in = None if expires is None else parse_duration(expires)
    with ctx.runtime() as rt:
        added, secret = tokens.add_token(
            rt.store,
            name,
            Role(role),
            expires_in=expires_in,
            note=note,
            actor=operator(),
            now=rt.now(),
        )
    until = f"until {iso(added.expires)}" if added.expires is not None else "no expiry"
    err.print(f"token {added.name} ({added.role.value}, {until}) added; it is shown only now:")
    click.echo(secret)  # alone on standard output: TOKEN=$(banfeed token add …)


@token.command("list")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def token_list(ctx: Context, fmt: str) -> None:
    """Every API token: name, role, added, expiry, last use, note (never a token or hash)."""
    from ..timeutil import iso
    from ..web import tokens

    with ctx.runtime() as rt:
        found, now = tokens.list_tokens(rt.store), rt.now()
    if fmt == "json":
        rows = [
            {
                "name": t.name,
                "role": t.role.value,
                "created": iso(t.created),
                "by": t.created_by,
                "expires": iso(t.expires),
                "expired": t.expired(now),
                "last_used": iso(t.last_used),
                "note": t.note,
            }
            for t in found
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("name", "role", "added", "by", "expires", "last used", "note")
    for t in found:
        expiry = "never" if t.expires is None else short_time(t.expires)
        if t.expired(now):
            expiry += " (expired)"
        used = "never" if t.last_used is None else short_time(t.last_used)
        table.add_row(
            t.name, t.role.value, short_time(t.created), t.created_by, expiry, used, t.note or ""
        )
    out.print(table)
    out.print(f"{len(found)} tokens")


@token.command("revoke")
@click.argument("name")
@pass_ctx
@handle_errors
def token_revoke(ctx: Context, name: str) -> None:
    """Revoke token NAME: its next request is refused (401)."""
    from ..web import tokens

    with ctx.runtime() as rt:
        tokens.revoke_token(rt.store, name)
    out.print(f"token {name} revoked")
