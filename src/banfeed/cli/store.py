"""Commands of the store: init, db upgrade, db copy, db backup."""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress

from .base import EXIT_FAILED, Context, err, fail, handle_errors, main, out, pass_ctx


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@pass_ctx
@handle_errors
def init(ctx: Context, force: bool) -> None:
    """Write a commented banfeed.toml and create the store."""
    from ..publish.render import write_atomically

    if ctx.path.exists() and not force:
        err.print(f"{ctx.path} exists; keeping it (use --force to overwrite)")
    else:
        _check_writable(ctx.path)
        template = resources.files("banfeed").joinpath("data/banfeed.toml").read_text("utf-8")
        # 0640, like the store: a config may hold tokens and feed passwords (docs/safety.md)
        write_atomically(ctx.path, template.encode("utf-8"), new_mode=0o640)
        out.print(f"wrote {ctx.path}")
    with ctx.runtime(create_store=True) as rt:
        out.print(f"store ready: {rt.store.display_url} (schema {rt.store.current_revision()})")


@main.group()
def db() -> None:
    """Store maintenance."""


@db.command("upgrade")
@pass_ctx
@handle_errors
def db_upgrade(ctx: Context) -> None:
    """Apply pending schema migrations to the store (SQLite or PostgreSQL)."""
    from ..store import Store

    store = Store(ctx.config.store_url(), create=True)
    try:
        before, after = store.upgrade()
    finally:
        store.close()
    if before == after:
        out.print(f"store {store.display_url} is up to date (schema {after})")
    else:
        out.print(f"store {store.display_url} upgraded: {before or 'empty'} → {after}")


@db.command("copy")
@click.option("--from", "source", default=None, help="Store URL to copy (default: the config's).")
@click.option("--to", "target", required=True, help="Store URL of a new, empty store.")
@pass_ctx
@handle_errors
def db_copy(ctx: Context, source: str | None, target: str) -> None:
    """Copy a whole store (SQLite ⇄ PostgreSQL), with a count check at the end."""
    from ..store import Store
    from ..store.copy import copy_store

    src = Store(source or ctx.config.store_url())
    dst = Store(_relative_sqlite(target), create=True)
    try:
        with Progress(console=err, transient=True) as progress:
            tasks: dict[str, Any] = {}

            def show(table: str, done: int, total: int) -> None:
                if table not in tasks:
                    tasks[table] = progress.add_task(table, total=max(total, 1))
                progress.update(tasks[table], completed=done)

            counts = copy_store(src, dst, show)
    finally:
        src.close()
        dst.close()
    out.print(f"copied {src.display_url} → {dst.display_url}; rows checked on both sides:")
    for table, count in counts.items():
        out.print(f"  {table}: {count}")


@db.command("backup")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@pass_ctx
@handle_errors
def db_backup(ctx: Context, path: Path) -> None:
    """Write a consistent copy of the SQLite store to PATH, even while `run` writes to it."""
    from ..store import Store
    from ..store.copy import backup_sqlite

    store = Store(ctx.config.store_url())
    try:
        size = backup_sqlite(store, path)
    finally:
        store.close()
    out.print(f"backed up {store.display_url} to {path} ({size:,} bytes)")


def _check_writable(path: Path) -> None:
    """Say which folder refuses, and what to do, before anything is written."""
    folder = path.absolute().parent
    if not folder.is_dir():
        fail(
            f"{path}: folder {folder} does not exist — create it or pass --config PATH", EXIT_FAILED
        )
    if not os.access(folder, os.W_OK):
        fail(
            f"permission denied: cannot write {path.absolute()} — this user cannot create files "
            f"in {folder}; run init as a user who can, or pass --config PATH in a folder of yours",
            EXIT_FAILED,
        )


def _relative_sqlite(url: str) -> str:
    """``sqlite:///x.db`` given on the command line is relative to the current folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url
