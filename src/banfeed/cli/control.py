"""Commands of operator control: ban, unban, allow, import, prune, verify."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
from pathlib import Path

import click
from rich.progress import Progress
from rich.table import Table

from .. import control, push, service
from ..errors import InputError
from ..feeds import build_feed
from ..store import queries as q
from ..timeutil import iso, parse_duration
from .base import (
    EXIT_FAILED,
    Context,
    bad,
    err,
    handle_errors,
    main,
    ok,
    out,
    pass_ctx,
)


def operator() -> str:
    """Who acts, for the audit log: $BANFEED_ACTOR, else the login name."""
    return os.environ.get("BANFEED_ACTOR") or getpass.getuser()


def _ttl(value: str | None) -> int | None:
    return None if value is None else parse_duration(value)


@main.command()
@click.argument("target")
@click.option("--ttl", default=None, help='How long, like "7d" (default: until unbanned).')
@click.option("--note", default=None, help="Why, for the audit log.")
@pass_ctx
@handle_errors
def ban(ctx: Context, target: str, ttl: str | None, note: str | None) -> None:
    """Publish an ADDRESS or NETWORK in every feed, whatever the devices report."""
    rt = ctx.runtime()
    try:
        entry = control.ban(
            rt.store,
            target,
            ttl=_ttl(ttl),
            note=note,
            actor=operator(),
            guard=service.guard(rt.config),
            allowlist=service.allowlist(rt.config),
            now=int(rt.clock()),
        )
    finally:
        rt.close()
    until = iso(entry.expires) or "unbanned"
    out.print(f"banned {entry.network} until {until} (by {entry.actor})")


@main.command()
@click.argument("target")
@click.option("--everywhere", is_flag=True, help="Also clear it from every FortiGate's quarantine.")
@click.option("--note", default=None, help="Why, for the audit log.")
@pass_ctx
@handle_errors
def unban(ctx: Context, target: str, everywhere: bool, note: str | None) -> None:
    """Stop publishing an ADDRESS (or a banned NETWORK); a later offense lists it again."""
    rt = ctx.runtime()
    try:
        result = control.unban(rt.store, target, actor=operator(), note=note, now=int(rt.clock()))
    finally:
        rt.close()
    what = ["offender marked unbanned"] if result.offender else []
    what += [f"ban {b} removed" for b in result.bans]
    out.print(f"{result.target}: " + "; ".join(what))
    if not everywhere:
        return
    results = asyncio.run(push.clear_everywhere(service.targets(rt.config), [result.target]))
    table = Table("device", "quarantine cleared")
    for r in results:
        table.add_row(r.device, ok() if r.error is None else bad(r.error.kind, r.error.detail))
    out.print(table)
    if any(r.error for r in results):
        raise SystemExit(EXIT_FAILED)


@main.group()
def allow() -> None:
    """The allowlist kept in the store (besides [allowlist] in the config)."""


@allow.command("add")
@click.argument("network")
@click.option("--note", default=None, help="Why, for the audit log.")
@click.option("--expires", default=None, help='Remove it after this long, like "30d".')
@pass_ctx
@handle_errors
def allow_add(ctx: Context, network: str, note: str | None, expires: str | None) -> None:
    """Never publish NETWORK (effective on every feed at once)."""
    rt = ctx.runtime()
    now = int(rt.clock())
    ttl = _ttl(expires)
    try:
        entry = control.allow_add(
            rt.store,
            network,
            expires=None if ttl is None else now + ttl,
            note=note,
            actor=operator(),
            now=now,
        )
    finally:
        rt.close()
    out.print(
        f"allowlisted {entry.network}" + (f" until {iso(entry.expires)}" if entry.expires else "")
    )


@allow.command("remove")
@click.argument("network")
@pass_ctx
@handle_errors
def allow_remove(ctx: Context, network: str) -> None:
    """Remove NETWORK from the store's allowlist."""
    rt = ctx.runtime()
    try:
        control.allow_remove(rt.store, network, actor=operator(), now=int(rt.clock()))
    finally:
        rt.close()
    out.print(f"removed {network} from the allowlist")


@allow.command("list")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def allow_list(ctx: Context, fmt: str) -> None:
    """Every allowlisted and protected network: config and store."""
    rt = ctx.runtime()
    now = int(rt.clock())
    with rt.store.read() as conn:
        stored = q.allow_entries(conn, now)
    rt.close()
    rows = [
        {"network": str(n), "origin": "config [allowlist]", "expires": None, "note": None}
        for n in rt.config.allowlist.networks
    ]
    rows += [
        {"network": str(n), "origin": "config [safety] protect", "expires": None, "note": None}
        for n in rt.config.safety.protect
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


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ttl", default=None, help='Active for this long, like "30d" (default: retention).')
@click.option("--note", default=None, help="Why, for the audit log and each offender.")
@pass_ctx
@handle_errors
def import_(ctx: Context, file: Path, ttl: str | None, note: str | None) -> None:
    """Bring in an existing list (one address, network or range a line), safely."""
    rt = ctx.runtime()
    try:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror}") from None
    with Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=len(lines))

        def ticks() -> object:
            while True:
                progress.advance(task)
                yield None

        try:
            report = control.import_list(
                rt.store,
                lines,
                source=file.name,
                ttl=_ttl(ttl),
                retention=service.retention(rt.config),
                note=note,
                actor=operator(),
                guard=service.guard(rt.config),
                allowlist=service.allowlist(rt.config),
                now=int(rt.clock()),
                progress=ticks(),  # type: ignore[arg-type]
            )
        finally:
            rt.close()
    out.print(
        f"{file}: {report.lines} lines; imported {report.addresses} addresses and "
        f"{report.networks} networks; {report.already} addresses were already known"
    )
    if report.dropped:
        table = Table("dropped because", "lines", "first example")
        for reason, count in report.dropped.most_common():
            table.add_row(reason, str(count), report.examples[reason])
        out.print(table)


@main.command()
@pass_ctx
@handle_errors
def prune(ctx: Context) -> None:
    """Apply retention now and delete history older than [retention] keep_history."""
    rt = ctx.runtime()
    try:
        report = control.prune(
            rt.store,
            keep_history=rt.config.retention.keep_history,
            actor=operator(),
            now=int(rt.clock()),
        )
    finally:
        rt.close()
    keep = rt.config.retention.keep_history
    cutoff = "(keep_history is forever)" if keep is None else iso(int(rt.clock()) - keep)
    out.print(
        f"{report.expired_events} offenders expired since the last prune (events recorded); "
        f"deleted {report.offenses} offenses, {report.events} events and "
        f"{report.offenders} long-expired offenders from before {cutoff}"
    )


@main.command()
@click.option("--feed", "feed_name", default=None, help="Feed name (default: the first feed).")
@click.option(
    "--resource", default=None, help='Its name on the FortiGates (default: "banfeed-<feed>").'
)
@pass_ctx
@handle_errors
def verify(ctx: Context, feed_name: str | None, resource: str | None) -> None:
    """Ask each FortiGate what it loaded from a feed, and compare with what is served."""
    config = ctx.config
    feed = config.feed(feed_name) if feed_name else config.feeds[0]
    name = resource or f"banfeed-{feed.name}"[:35]
    rt = ctx.runtime()
    now = int(rt.clock())
    with rt.store.read() as conn:
        build = build_feed(conn, service.feed_spec(feed), service.feed_policy(config), now)
    rt.close()
    served = len(build.entries)
    results = asyncio.run(push.verify(service.targets(config), name))
    table = Table("device", "valid", "invalid", "overflow", "last HTTP", "content time", "verdict")
    failed = False
    for device, status in results:
        if isinstance(status, Exception):
            failed = True
            table.add_row(device, "-", "-", "-", "-", "-", bad(status.kind, status.detail))
            continue
        if status.overflow:
            verdict = bad("overflow", "the device dropped entries over its limit")
        elif status.invalid:
            verdict = bad("invalid", f"{status.invalid} lines refused")
        elif status.valid != served:
            verdict = bad("differs", f"{status.valid} loaded, {served} served now")
        else:
            verdict = ok("in sync")
        failed = failed or status.overflow or bool(status.invalid) or status.valid != served
        table.add_row(
            device,
            str(status.valid),
            str(status.invalid),
            "yes" if status.overflow else "no",
            str(status.http_status or "-"),
            iso(status.content_time) or "-",
            verdict,
        )
    out.print(f"feed {feed.name} (resource {name}): {served} entries served now")
    out.print(table)
    if failed:
        raise SystemExit(EXIT_FAILED)
