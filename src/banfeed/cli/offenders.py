"""Commands of the offenders: list, show, ban, unban, import, prune."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.progress import Progress
from rich.table import Table

from ..errors import InputError
from ..net import parse_address
from ..timeutil import iso, parse_duration

if TYPE_CHECKING:
    from .. import control, importing, reports
from ._json import FORMAT as JSON_FORMAT
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
    warn,
)
from .filters import ORIGINS, parse_since, parse_within, unban_targets


def _ttl(value: str | None) -> int | None:
    return None if value is None else parse_duration(value)


STATES = ("active", "expired", "suppressed", "unbanned")


@main.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired, suppressed, unbanned.")
@click.option("--state", "states", multiple=True, type=click.Choice(STATES), help="Only these.")
@click.option("--network", metavar="NET", help="Only addresses inside this network.")
@click.option("--cause", "causes", multiple=True, help="Only offenders with this cause (IPS…).")
@click.option("--device", "devices", multiple=True, help="Only offenders this device reported.")
@click.option("--vdom", "vdoms", multiple=True, help="Only this VDOM (NAME or DEVICE/NAME).")
@click.option("--since", metavar="WHEN", help='An offense at or after WHEN ("1d", a UTC time).')
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=int, default=500, show_default=True, help="Table rows (0 = all).")
@pass_ctx
@handle_errors
def list_(
    ctx: Context,
    show_all: bool,
    states: tuple[str, ...],
    network: str | None,
    causes: tuple[str, ...],
    devices: tuple[str, ...],
    vdoms: tuple[str, ...],
    since: str | None,
    fmt: str,
    limit: int,
) -> None:
    """List active offenders, in numeric address order (filters narrow it in the store)."""
    from .. import reports
    from ..models import OffenderState
    from ..policy import state
    from ..publish.render import csv_chunks, json_chunks

    with ctx.runtime() as rt, rt.store.read() as tx:
        now = rt.now()
        allow = reports.effective_allowlist(rt, tx)
        chosen = frozenset(OffenderState(s) for s in states) or reports.OffenderFilter().states
        where = reports.OffenderFilter(
            states=frozenset() if show_all else chosen,
            within=parse_within(network, "--network"),
            causes=causes,
            devices=devices,
            vdoms=vdoms,
            since=parse_since(since, now),
        )
        offenders = reports.listed_offenders(tx, now, allow, where=where)
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
        if "ttl" in record:  # how the current [retention] computes it
            out.print(f"  ttl: {record['ttl']['reason']}")
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
@click.argument("targets", nargs=-1, metavar="[TARGET]...")
@click.option(
    "--file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also every entry of this list (the format of import).",
)
@click.option(
    "--origin",
    type=click.Choice(tuple(ORIGINS)),
    help="Instead of targets: every ban of this origin (import: imported offenders too).",
)
@click.option("--everywhere", is_flag=True, help="Also clear it from every FortiGate's quarantine.")
@click.option("--note", default=None, help="Why, for the audit log.")
@JSON_FORMAT
@pass_ctx
@handle_errors
def unban(
    ctx: Context,
    targets: tuple[str, ...],
    file: Path | None,
    origin: str | None,
    everywhere: bool,
    note: str | None,
    fmt: str,
) -> None:
    """Stop publishing ADDRESSes (or banned NETWORKs), all in one transaction (`-`: read targets
    from standard input). A later offense lists an address again."""
    from .. import compose, control, push
    from ..models import BanOrigin
    from ._json import emit

    if origin is not None and (targets or file is not None):
        raise InputError("--origin unbans every entry of that origin: give no TARGET or --file")
    if origin is None and not targets and file is None:
        raise InputError(
            "nothing to unban: give TARGET…, --file FILE, - (standard input) or --origin"
        )
    networks, skipped = unban_targets(targets, file) if origin is None else ([], [])
    if origin is None and not networks:
        raise InputError(f"nothing to unban: no address or network in {len(skipped)} lines")
    with ctx.runtime() as rt:
        report = control.unban(
            rt.store,
            networks,
            actor=operator(),
            note=note,
            now=rt.now(),
            origin=BanOrigin(ORIGINS[origin]) if origin else None,
        )
    if fmt == "json":
        emit(report.record() | {"skipped": skipped})
    elif len(report.by_target) == 1 and not (report.missing or skipped or origin):
        target, (marked, bans) = next(iter(report.by_target.items()))
        what = ["offender marked unbanned"] if marked else []
        out.print(f"{target}: " + "; ".join(what + [f"ban {b} removed" for b in bans]))
    else:
        _print_unban(report, origin, skipped)
    if not everywhere or not report.offenders:
        return
    results = asyncio.run(push.clear_everywhere(compose.targets(ctx.config), report.offenders))
    table = Table("device", "quarantine cleared")
    for r in results:
        table.add_row(r.device, ok() if r.error is None else bad(r.error.kind, r.error.detail))
    (err if fmt == "json" else out).print(table)
    if any(r.error for r in results):
        raise SystemExit(EXIT_FAILED)


def _print_unban(report: control.UnbanReport, origin: str | None, skipped: list[str]) -> None:
    scope = f"every {ORIGINS[origin]} entry" if origin else f"{len(report.by_target)} targets"
    out.print(
        f"unbanned {scope}: {len(report.offenders)} offenders marked unbanned, "
        f"{len(report.bans)} bans removed"
    )
    if report.kept:
        out.print(
            f"kept {report.kept} imported offenders that a FortiGate reported too "
            "(unban them by address)"
        )
    if report.missing:
        shown = ", ".join(report.missing[:10])
        more = f" (and {len(report.missing) - 10} more)" if len(report.missing) > 10 else ""
        warn(f"{len(report.missing)} targets are neither an offender nor a ban: {shown}{more}")
    if skipped:
        more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
        warn(f"skipped {len(skipped)} malformed lines: {'; '.join(skipped[:5])}{more}")


@main.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--ttl", default=None, help='Active for this long, like "30d" (default: retention).')
@click.option("--note", default=None, help="Why, for the audit log and each offender.")
@click.option("--dry-run", is_flag=True, help="Check and report everything; write nothing.")
@click.option(
    "--rejected",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write every dropped line, with its reason, to this file.",
)
@JSON_FORMAT
@pass_ctx
@handle_errors
def import_(
    ctx: Context,
    file: Path,
    ttl: str | None,
    note: str | None,
    dry_run: bool,
    rejected: Path | None,
    fmt: str,
) -> None:
    """Bring in an existing list (one address, network or range a line), safely."""
    from .. import compose, importing
    from ._json import emit

    lines = importing.read_lines(file)
    with ctx.runtime() as rt, Progress(console=err, transient=True) as progress:
        task = progress.add_task(f"importing {file.name}", total=len(lines))

        def ticks() -> Iterator[None]:
            while True:
                progress.advance(task)
                yield None

        report = importing.import_list(
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
            dry_run=dry_run,
            progress=ticks(),
        )
    if rejected is not None:
        body = "".join(item.rejected_line() + "\n" for item in report.rejected)
        try:
            rejected.write_text(body, encoding="utf-8")
        except OSError as exc:
            raise InputError(f"--rejected {rejected}: {exc.strerror or exc}") from None
    if fmt == "json":
        emit(report.record(file.name) | {"rejected_file": str(rejected) if rejected else None})
    else:
        _print_import(file, report, rejected)
    if report.lines and not report.accepted:
        fail(f"{file}: nothing imported: all {report.lines} entries were dropped", EXIT_FAILED)


def _print_import(file: Path, report: importing.ImportReport, rejected: Path | None) -> None:
    verb = "would import" if report.dry_run else "imported"
    out.print(
        f"{file}: {report.lines} lines; {verb} {report.addresses} addresses and "
        f"{report.networks} networks; {report.already} addresses were already known"
        + (" (dry run: nothing written)" if report.dry_run else "")
    )
    if report.dropped:
        table = Table("dropped because", "lines", "first example")
        for reason, count in report.dropped.most_common():
            table.add_row(reason, str(count), report.examples[reason])
        out.print(table)
    if rejected is not None:
        out.print(f"{len(report.rejected)} dropped lines written to {rejected}")


@main.command()
@JSON_FORMAT
@pass_ctx
@handle_errors
def prune(ctx: Context, fmt: str) -> None:
    """Apply retention now and delete history older than [retention] keep_history."""
    from .. import control
    from ._json import emit, prune_record

    keep = ctx.config.retention.keep_history
    with ctx.runtime() as rt:
        now = rt.now()
        report = control.prune(rt.store, keep_history=keep, actor=operator(), now=now)
    record = prune_record(report, keep, now)
    if fmt == "json":
        emit(record)
        return
    cutoff = record["cutoff"] or "(keep_history is forever)"
    out.print(
        f"{report.expired_events} offenders expired since the last prune (events recorded); "
        f"deleted {report.offenses} offenses, {report.events} events and "
        f"{report.offenders} long-expired offenders from before {cutoff}"
    )
