"""Commands of the dashboard's users: user add, user list, user remove."""

from __future__ import annotations

import json
import sys

import click
from rich.table import Table

from ..errors import InputError
from .base import Context, handle_errors, main, operator, out, pass_ctx, short_time

ROLES = ("viewer", "admin")


@main.group()
def user() -> None:
    """Dashboard users (roles viewer and admin; argon2 hashes in the store)."""


def _password() -> str:
    """Prompted twice on a terminal; else the first line of standard input."""
    if sys.stdin.isatty():
        return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))
    line = sys.stdin.readline()
    if not line:
        raise InputError("no password: type it at the prompt, or pipe it on standard input")
    return line.rstrip("\r\n")


@user.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(ROLES), required=True, help="viewer reads; admin acts.")
@click.option("--replace", is_flag=True, help="Set a new password and role for an existing user.")
@pass_ctx
@handle_errors
def user_add(ctx: Context, name: str, role: str, replace: bool) -> None:
    """Add user NAME (prompts for the password, or reads it from standard input)."""
    from ..models import Role
    from ..web import accounts

    accounts.check_name(name)
    password = _password()
    with ctx.runtime() as rt:
        added = accounts.add_user(
            rt.store, name, Role(role), password, actor=operator(), now=rt.now(), replace=replace
        )
    what = "updated (its sessions ended)" if replace else "added"
    out.print(f"user {added.name} ({added.role.value}) {what}")


@user.command("list")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def user_list(ctx: Context, fmt: str) -> None:
    """Every dashboard user: name, role, when and by whom added (never a hash)."""
    from ..timeutil import iso
    from ..web import accounts

    with ctx.runtime() as rt:
        users = accounts.list_users(rt.store)
    if fmt == "json":
        rows = [
            {"name": u.name, "role": u.role.value, "created": iso(u.created), "by": u.created_by}
            for u in users
        ]
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("name", "role", "added", "by")
    for u in users:
        table.add_row(u.name, u.role.value, short_time(u.created), u.created_by)
    out.print(table)
    out.print(f"{len(users)} users")


@user.command("remove")
@click.argument("name")
@pass_ctx
@handle_errors
def user_remove(ctx: Context, name: str) -> None:
    """Remove user NAME; its sessions end at once."""
    from ..web import accounts

    with ctx.runtime() as rt:
        accounts.remove_user(rt.store, name)
    out.print(f"user {name} removed")
