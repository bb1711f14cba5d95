"""Commands of the loop: init, db, check, collect, list, show, export, simulate."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import Any

import click
from rich.progress import Progress
from rich.table import Table

from .. import service
from ..errors import InputError
from ..feeds import (
    RENDERERS,
    build_feed,
    csv_bytes,
    effective_allowlist,
    explain,
    offender_record,
    write_atomically,
)
from ..net import parse_address
from ..policy import state
from ..store import Store
from ..store import queries as q
from ..store.copy import backup_sqlite, copy_store
from ..timeutil import iso
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
    out,
    pass_ctx,
    warn,
)

# -- setup -----------------------------------------------------------------------------------


@main.command()
@click.option("--force", is_flag=True, help="Overwrite an existing config file.")
@pass_ctx
@handle_errors
def init(ctx: Context, force: bool) -> None:
    """Write a commented banfeed.toml and create the store."""
    if ctx.path.exists() and not force:
        err.print(f"{ctx.path} exists; keeping it (use --force to overwrite)")
    else:
        template = resources.files("banfeed").joinpath("data/banfeed.toml").read_text("utf-8")
        write_atomically(ctx.path, template.encode("utf-8"))
        out.print(f"wrote {ctx.path}")
    rt = ctx.runtime(create_store=True)
    out.print(f"store ready: {rt.store.display_url} (schema {rt.store.current_revision()})")
    rt.close()


@main.group()
def db() -> None:
    """Store maintenance."""


@db.command("upgrade")
@pass_ctx
@handle_errors
def db_upgrade(ctx: Context) -> None:
    """Apply pending schema migrations to the store (SQLite or PostgreSQL)."""
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
    store = Store(ctx.config.store_url())
    try:
        size = backup_sqlite(store, path)
    finally:
        store.close()
    out.print(f"backed up {store.display_url} to {path} ({size:,} bytes)")


def _relative_sqlite(url: str) -> str:
    """``sqlite:///x.db`` given on the command line is relative to the current folder."""
    prefix = "sqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/"):
        return prefix + str(Path(url[len(prefix) :]).resolve())
    return url


@main.command()
@pass_ctx
@handle_errors
def check(ctx: Context) -> None:
    """Validate the config, the store and every FortiGate (reachable? token? entries?)."""
    config = ctx.config
    out.print(
        f"config {ctx.path}: valid ({len(config.fortigates)} FortiGates, {len(config.feeds)} feeds)"
    )
    for warning in service.warnings(config):
        warn(warning)
    rt = ctx.runtime()
    out.print(f"store {rt.store.display_url}: schema {rt.store.current_revision()} ok")
    with rt.store.read() as conn:
        statuses = q.device_statuses(conn)
    # A probe is a real poll that is not stored: the collector's own polling code. It respects
    # the back-off after 401/429, so checking never extends a FortiGate's lock-out.
    results = asyncio.run(rt.collector().poll(statuses, int(rt.clock())))
    rt.close()
    table = Table("device", "vdom", "result", "entries", "rejected", "ms", "last success")
    for r in results:
        last = statuses.get((r.device, r.vdom))
        outcome = ok() if r.error is None else bad(r.error.kind, r.error.detail)
        counts = Counter(v.vdom for v in r.lists for _ in v.offenses)
        entries = ", ".join(f"{v}={n}" for v, n in sorted(counts.items())) or "0"
        table.add_row(
            r.device,
            r.vdom,
            outcome,
            entries,
            str(r.rejected),
            f"{r.duration * 1000:.0f}",
            iso(last.last_success) if last and last.last_success else "never",
        )
    if results:
        out.print(table)
    else:
        warn("no [[fortigates]] configured — nothing to collect")
    if any(r.error for r in results):
        raise SystemExit(EXIT_FAILED)


# -- collection ------------------------------------------------------------------------------


@main.command()
@click.option("--quiet", "-q", is_flag=True, help="Print nothing unless something failed.")
@pass_ctx
@handle_errors
def collect(ctx: Context, quiet: bool) -> None:
    """Run one collection cycle (what cron runs). Exit 1 if any device failed."""
    rt = ctx.runtime()
    try:
        report, pushes = asyncio.run(service.collect_once(rt))
    finally:
        rt.close()
    if not quiet or report.failed:
        table = Table("device", "vdom", "result", "entries", "rejected", "ms")
        for r in report.results:
            if r.error is not None:
                result = bad(r.error.kind, r.error.detail)
            else:
                result = ok("ok (unchanged)" if r.unchanged else "ok")
            entries = "-" if r.unchanged or r.error else str(r.entries)
            table.add_row(
                r.device, r.vdom, result, entries, str(r.rejected), f"{r.duration * 1000:.0f}"
            )
        out.print(table)
        out.print(
            f"{len(report.results) - len(report.failed)}/{len(report.results)} polls ok; "
            f"{report.new_offenses} new offenses, {report.new_offenders} new offenders, "
            f"{report.updated_offenders} updated, {report.suppressed} suppressed, "
            f"{report.rejected} invalid entries rejected; {report.duration:.2f}s"
        )
        for p in pushes:
            outcome = f"{p.count} sent" + (f", {p.skipped} skipped" if p.skipped else "")
            if p.error is not None:
                outcome = f"failed: {p.error.kind}: {p.error.detail}"
            out.print(f"push {p.action} → {p.device}: {outcome}")
    if report.failed:
        raise SystemExit(EXIT_FAILED)


def short_time(epoch: int) -> str:
    """Minutes are enough in a table; JSON and CSV carry full ISO-8601 times."""
    return (iso(epoch) or "")[:16].replace("T", " ")


# -- reading ---------------------------------------------------------------------------------


@main.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include expired, suppressed, unbanned.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="table", show_default=True)
@click.option("--limit", type=int, default=500, show_default=True, help="Table rows (0 = all).")
@pass_ctx
@handle_errors
def list_(ctx: Context, show_all: bool, fmt: str, limit: int) -> None:
    """List active offenders, in numeric address order."""
    rt = ctx.runtime()
    now, allow = int(rt.clock()), service.allowlist(rt.config)
    with rt.store.read() as conn:
        allow = effective_allowlist(conn, allow, now)
        offenders = list(q.iter_offenders(conn, active_at=None if show_all else now))
    rt.close()
    if not show_all:
        offenders = [o for o in offenders if state(o, now, allow) == "active"]
    if fmt == "json":
        click.echo(json.dumps([offender_record(o, now, allow) for o in offenders], indent=1))
        return
    if fmt == "csv":
        click.echo(csv_bytes(offenders, now, allow), nl=False)
        return
    table = Table("ip", "state", "n", "last offense", "causes", "devices", "active until")
    for column in (0, 3, 6):
        table.columns[column].no_wrap = True
    shown = offenders if limit <= 0 else offenders[:limit]
    for o in shown:
        table.add_row(
            str(o.ip),
            state(o, now, allow),
            str(o.offense_count),
            short_time(o.last_offense),
            ", ".join(o.sources),
            ", ".join(o.devices),
            short_time(o.active_until) if o.active_until is not None else "forever",
        )
    out.print(table)
    more = (
        f" ({len(offenders) - len(shown)} more: --limit 0 or --format csv)"
        if (len(shown) < len(offenders))
        else ""
    )
    out.print(f"{len(offenders)} offenders{more}")


@main.command()
@click.argument("address")
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def show(ctx: Context, address: str, fmt: str) -> None:
    """One offender: offenses per device, VDOM and cause; state; history; feeds."""
    ip = parse_address(address.strip())
    rt = ctx.runtime()
    now, allow = int(rt.clock()), service.allowlist(rt.config)
    policy = service.feed_policy(rt.config)
    with rt.store.read() as conn:
        allow = effective_allowlist(conn, allow, now)
        offender = q.get_offender(conn, str(ip))
        offenses = q.offenses_of(conn, str(ip))
        events = q.events_of(conn, str(ip))
        bans = q.active_bans(conn, now)
        verdicts = {
            feed.name: explain(
                conn, service.feed_spec(feed), policy, ip, offender, now, allow=allow, bans=bans
            )
            for feed in rt.config.feeds
        }
    rt.close()
    feeds = {name: {"listed": listed, "reason": why} for name, (listed, why) in verdicts.items()}
    if offender is None:
        for name, verdict in feeds.items():
            if verdict["listed"]:
                out.print(f"{ip}: no offender, but feed {name} lists it: {verdict['reason']}")
        fail(f"{ip} is not in the store (no device has reported it)", EXIT_FAILED)
    record = offender_record(offender, now, allow)
    by_origin: dict[str, dict[str, Any]] = {}
    for o in offenses:
        item = by_origin.setdefault(
            f"{o.device}/{o.vdom}",
            {"device": o.device, "vdom": o.vdom, "offenses": 0, "causes": {}},
        )
        item["offenses"] += 1
        item["causes"][o.source] = item["causes"].get(o.source, 0) + 1
    record |= {
        "by_origin": list(by_origin.values()),
        "offenses": [
            {
                "device": o.device,
                "vdom": o.vdom,
                "created": iso(o.created),
                "expires": iso(o.expires),
                "source": o.source,
            }
            for o in offenses
        ],
        "events": [
            {"time": iso(e.time), "kind": e.kind, "actor": e.actor, "detail": e.detail}
            for e in events
        ],
        "feeds": feeds,
    }
    if fmt == "json":
        click.echo(json.dumps(record, indent=1))
        return
    out.print(
        f"{ip}  state: {record['state']}  offenses: {offender.offense_count}  "
        f"active until: {record['active_until'] or 'forever'}"
    )
    if record["suppressed_by"]:
        out.print(f"  suppressed: {record['suppressed_by']}")
    out.print(f"  first offense {record['first_offense']}, last {record['last_offense']}")
    table = Table("device", "vdom", "offenses", "causes")
    for item in by_origin.values():
        causes = ", ".join(f"{c} ×{n}" for c, n in sorted(item["causes"].items()))
        table.add_row(item["device"], item["vdom"], str(item["offenses"]), causes)
    out.print(table)
    timeline = Table("time", "what", "by", "detail")
    for o in offenses:
        timeline.add_row(
            iso(o.created),
            "offense",
            f"{o.device}/{o.vdom}",
            f"{o.source}, device expiry {iso(o.expires) or 'none'}",
        )
    for e in events:
        timeline.add_row(iso(e.time), e.kind, e.actor, e.detail)
    out.print(timeline)
    for name, verdict in feeds.items():
        status = "listed" if verdict["listed"] else "not listed"
        out.print(
            f"  feed {name}: {status}" + (f" ({verdict['reason']})" if verdict["reason"] else "")
        )


@main.command()
@click.option("--feed", "feed_name", default=None, help="Feed name (default: the first feed).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="File to write atomically (default: standard output).",
)
@click.option(
    "--format", "fmt", type=click.Choice(sorted(RENDERERS)), default="txt", show_default=True
)
@pass_ctx
@handle_errors
def export(ctx: Context, feed_name: str | None, output: Path | None, fmt: str) -> None:
    """Write a feed: one address a line, numeric order, IPv4 first (or CSV/JSON)."""
    config = ctx.config
    feed = config.feed(feed_name) if feed_name else config.feeds[0]
    rt = ctx.runtime()
    now = int(rt.clock())
    with rt.store.read() as conn:
        build = build_feed(conn, service.feed_spec(feed), service.feed_policy(config), now)
    rt.close()
    data = RENDERERS[fmt][0](build, now, build.allowlist)
    if output is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        write_atomically(output, data)
        err.print(f"feed {feed.name}: {len(build.entries)} entries written to {output}")
    if build.overflow:
        err.print(
            f"feed {feed.name}: {build.overflow} of {build.matched} offenders left out "
            f"(max_entries = {feed.max_entries}; the most recent and most repeated are kept)"
        )


# The simulator's fault modes, listed here so --help shows them without importing it.
FAULT_MODES = (
    "none",
    "500",
    "timeout",
    "html",
    "truncated",
    "invalid",
    "shape",
    "huge",
    "401",
    "403",
    "404",
    "424",
    "429",
    "reset",
)


# -- simulator -------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8443, show_default=True, help="Port of the first device.")
@click.option("--devices", default=1, show_default=True, help="Devices, on consecutive ports.")
@click.option("--vdoms", default="root", show_default=True, help="Comma-separated VDOMs.")
@click.option("--entries", default=100, show_default=True, help="Entries per VDOM at start.")
@click.option("--churn", default=0, show_default=True, help="Entries replaced per poll.")
@click.option("--latency", default=0.0, show_default=True, help="Seconds added per answer.")
@click.option(
    "--fault",
    type=click.Choice(FAULT_MODES),
    default="none",
    show_default=True,
    help="Fault mode of every device.",
)
@click.option(
    "--token",
    envvar="BANFEED_SIM_TOKEN",
    default="banfeed-simulator-token",
    show_default=True,
    help="Bearer token the devices accept ($BANFEED_SIM_TOKEN).",
)
@click.option("--seed", default=0, show_default=True, help="Random seed for addresses.")
@click.option("--cert-file", type=click.Path(exists=True, dir_okay=False), default=None)
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False), default=None)
@handle_errors
def simulate(
    host: str,
    port: int,
    devices: int,
    vdoms: str,
    entries: int,
    churn: int,
    latency: float,
    fault: str,
    token: str,
    seed: int,
    cert_file: str | None,
    key_file: str | None,
) -> None:
    """Serve simulated FortiGates (the FortiOS banned-list API) for trying banfeed."""
    from .. import simulator

    if devices < 1:
        raise InputError("--devices must be at least 1")
    if (cert_file is None) != (key_file is None):
        raise InputError("give --cert-file and --key-file together")
    fleet = simulator.SimFleet(seed=seed)
    names = [f"sim-{i + 1}" for i in range(devices)]
    for name in names:
        fleet.add_device(
            name,
            token=token,
            vdoms=[v.strip() for v in vdoms.split(",") if v],
            entries=entries,
            churn=churn,
            latency=latency,
            fault=fault,
        )
    scheme = "https" if cert_file else "http"
    err.print("Simulated FortiGates; add to banfeed.toml (and export BANFEED_SIM_TOKEN):")
    for i, name in enumerate(names):
        click.echo(
            f'\n[[fortigates]]\nname = "{name}"\nurl = "{scheme}://{host}:{port + i}"\n'
            f'token_env = "BANFEED_SIM_TOKEN"\nvdoms = ["*"]',
            err=True,
        )
    if token == "banfeed-simulator-token" and "BANFEED_SIM_TOKEN" not in os.environ:
        err.print("\n(token: banfeed-simulator-token)")
    try:
        simulator.serve_forever(
            fleet, host=host, first_port=port, ssl_certfile=cert_file, ssl_keyfile=key_file
        )
    except (OSError, ValueError) as exc:  # port taken, host not an address, bad certificate
        raise InputError(f"simulator cannot start on {host}:{port}: {exc}") from None
