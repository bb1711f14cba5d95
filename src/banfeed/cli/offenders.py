"""Commands of the offenders: list, show, ban, unban, import, prune."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import Progress
from rich.table import Table

from ..errors import InputError
from ..net import parse_address
from ..timeutil import iso, parse_duration

if TYPE_CHECKING:
    from .. import reports
from .base import (
    EXIT_FAILED,
    FORMATS,
    Context,
    bad,
    err,
    fail,
    handle_errors,
    main,
    ok,
    operator,
    out,
    pass_ctx,
    short_time,
)


def _ttl(value: str | None) -> int | None:
    return None if value is None else parse_duration(value)


@main.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired, suppressed, unbanned.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=int, default=500, show_default=True, help="Table rows (0 = all).")
@pass_ctx
@handle_errors
def list_(ctx: Context, show_all: bool, fmt: str, limit: int) -> None:
    """List active offenders, in numeric address order."""
    from .. import reports
    from ..policy import state
    from ..publish.render import csv_chunks, json_chunks

    with ctx.runtime() as rt, rt.store.read() as tx:
        now = rt.now()
        allow = reports.effective_allowlist(rt, tx)
        offenders = reports.listed_offenders(tx, now, allow, every=show_all)
        if fmt in ("json", "csv"):  # streamed: a million offenders in bounded memory
            chunks = json_chunks if fmt == "json" else csv_chunks
            for chunk in chunks(offenders, now, allow):
                click.echo(chunk, nl=False)
            return
        table = Table("ip", "state", "n", "last offense", "causes", "devices", "active until")
        for column in (0, 3, 6):
            table.columns[column].no_wrap = True
        count = 0
        for o in offenders:
            count += 1
            if limit > 0 and count > limit:
                continue  # counted, not shown
            table.add_row(
                str(o.ip),
                state(o, now, allow).value,
                str(o.offense_count),
                short_time(o.last_offense),
                ", ".join(o.sources),
                ", ".join(o.devices),
                short_time(o.active_until) if o.active_until is not None else "forever",
            )
    out.print(table)
    hidden = count - table.row_count
    more = f" ({hidden} more: --limit 0 or --format csv)" if hidden > 0 else ""
    out.print(f"{count} offenders{more}")


@main.command()
@click.argument("address")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def show(ctx: Context, address: str, fmt: str) -> None:
    """One address: offenses per device, VDOM and cause; state; history; each feed's verdict."""
    from .. import reports

    ip = parse_address(address.strip())
    with ctx.runtime() as rt:
        detail = reports.offender_detail(rt, ip)
    record = detail.record()
    if fmt == "json":
        click.echo(json.dumps(record, indent=1))
    else:
        _print_detail(detail, record)
    if detail.offender is None and not any(v.listed for v in detail.feeds):
        fail(
            f"{ip} is not in the store (no device has reported it) and no feed lists it",
            EXIT_FAILED,
        )


def _print_detail(detail: reports.OffenderDetail, record: dict[str, Any]) -> None:
    offender = detail.offender
    if offender is None:
        out.print(f"{detail.ip}: not in the store (no device has reported it)")
    else:
        out.print(
            f"{detail.ip}  state: {record['state']}  offenses: {offender.offense_count}  "
            f"active until: {record['active_until'] or 'forever'}"
        )
        if record["suppressed_by"]:
            out.print(f"  suppressed: {record['suppressed_by']}")
        out.print(f"  first offense {record['first_offense']}, last {record['last_offense']}")
        table = Table("device", "vdom", "offenses", "causes")
        for item in record["by_origin"]:
            causes = ", ".join(f"{c} ×{n}" for c, n in sorted(item["causes"].items()))
            table.add_row(item["device"], item["vdom"], str(item["offenses"]), causes)
        out.print(table)
    timeline = Table("time", "what", "by", "detail")
    for o in detail.offenses:
        timeline.add_row(
            iso(o.created),
            "offense",
            f"{o.device}/{o.vdom}",
            f"{o.source}, device expiry {iso(o.expires) or 'none'}",
        )
    for e in detail.events:
        timeline.add_row(iso(e.time), e.kind.value, e.actor, e.detail)
    if timeline.row_count:
        out.print(timeline)
    for v in detail.feeds:
        status = "listed" if v.listed else "not listed"
        out.print(f"  feed {v.feed}: {status} ({v.reason})")


@main.command()
@click.argument("target")
@click.option("--ttl", default=None, help='How long, like "7d" (default: until unbanned).')
@click.option("--note", default=None, help="Why, for the audit log.")
@click.option("--force", is_flag=True, help="Ban a network broader than [safety] max_prefix.")
@pass_ctx
@handle_errors
def ban(ctx: Context, target: str, ttl: str | None, note: str | None, force: bool) -> None:
    """Publish an ADDRESS or NETWORK in every feed, whatever the devices report."""
    from .. import compose, control

    with ctx.runtime() as rt:
        entry = control.ban(
            rt.store,
            target,
            ttl=_ttl(ttl),
            note=note,
            actor=operator(),
            guard=compose.guard(rt.config),
            allowlist=compose.allowlist(rt.config),
            now=rt.now(),
            force=force,
        )
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
    from .. import compose, control, push

    with ctx.runtime() as rt:
        result = control.unban(rt.store, target, actor=operator(), note=note, now=rt.now())
    what = ["offender marked unbanned"] if result.offender else []
    what += [f"ban {b} removed" for b in result.bans]
    out.print(f"{result.target}: " + "; ".join(what))
    if not everywhere:
        return
    results = asyncio.run(push.clear_everywhere(compose.targets(ctx.config), [result.target]))
    table = Table("device", "quarantine cleared")
    for r in results:
        table.add_row(r.device, ok() if r.error is None else bad(r.error.kind, r.error.detail))
    out.print(table)
    if any(r.error for r in results):
        raise SystemExit(EXIT_FAILED)


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ttl", default=None, help='Active for this long, like "30d" (default: retention).')
@click.option("--note", default=None, help="Why, for the audit log and each offender.")
@pass_ctx
@handle_errors
def import_(ctx: Context, file: Path, ttl: str | None, note: str | None) -> None:
    """Bring in an existing list (one address, network or range a line), safely."""
    from .. import compose, control

    try:
        lines = file.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"{file}: {exc.strerror}") from None
    with ctx.runtime() as rt, Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=len(lines))

        def ticks() -> object:
            while True:
                progress.advance(task)
                yield None

        report = control.import_list(
            rt.store,
            lines,
            source=file.name,
            ttl=_ttl(ttl),
            retention=compose.retention(rt.config),
            note=note,
            actor=operator(),
            guard=compose.guard(rt.config),
            allowlist=compose.allowlist(rt.config),
            now=rt.now(),
            progress=ticks(),  # type: ignore[arg-type]
        )
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
    from .. import control

    keep = ctx.config.retention.keep_history
    with ctx.runtime() as rt:
        report = control.prune(rt.store, keep_history=keep, actor=operator(), now=rt.now())
        cutoff = "(keep_history is forever)" if keep is None else iso(rt.now() - keep)
    out.print(
        f"{report.expired_events} offenders expired since the last prune (events recorded); "
        f"deleted {report.offenses} offenses, {report.events} events and "
        f"{report.offenders} long-expired offenders from before {cutoff}"
    )
