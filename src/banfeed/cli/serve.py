"""Commands of the server: run, serve, demo, feeds, fortigate-config."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from .. import control, service
from ..config import Config, load, split_listen
from ..errors import InputError
from ..feeds import RENDERERS, build_feed, fortigate_config
from ..server.cache import etag_of
from ..store import open_store
from ..store import queries as q
from ..timeutil import iso, parse_duration
from .base import Context, err, handle_errors, main, out, pass_ctx
from .control import operator

log = logging.getLogger("banfeed")


def _daemon(config: Config, *, collect: bool) -> None:
    # A daemon logs one line per cycle: INFO at least, more with -v.
    logging.getLogger("banfeed").setLevel(min(logging.INFO, logging.getLogger().level))
    daemon = service.Daemon(config, collect=collect)
    daemon.bind()
    err.print(f"banfeed {'run' if collect else 'serve'}: serving {daemon.url}/feeds/")
    asyncio.run(daemon.run())


@main.command()
@pass_ctx
@handle_errors
def run(ctx: Context) -> None:
    """Collect every [collect] interval and serve the feeds, in one process (the daemon)."""
    _daemon(ctx.config, collect=True)


@main.command()
@pass_ctx
@handle_errors
def serve(ctx: Context) -> None:
    """Serve the feeds without collecting (a replica, or beside a cron `collect`)."""
    _daemon(ctx.config, collect=False)


@main.group(invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@click.pass_context
def feeds(click_ctx: click.Context, fmt: str) -> None:
    """List feeds: size, limit, overflow, ETag, hold, last change, each consumer's last fetch."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(feeds_list, fmt=fmt)


@feeds.command("approve")
@click.argument("name")
@pass_ctx
@handle_errors
def feeds_approve(ctx: Context, name: str) -> None:
    """Release a feed held by the mass-drop guard: publish its current content."""
    config = ctx.config
    config.feed(name)
    rt = ctx.runtime()
    try:
        held = control.approve_feed(rt.store, name, actor=operator(), now=int(rt.clock()))
    finally:
        rt.close()
    if held:
        out.print(f"feed {name}: hold released; servers publish its current content within seconds")
    else:
        out.print(f"feed {name} was not held; nothing to approve")


@pass_ctx
@handle_errors
def feeds_list(ctx: Context, fmt: str) -> None:
    rt = ctx.runtime()
    now, policy = int(rt.clock()), service.feed_policy(rt.config)
    rows: list[dict[str, Any]] = []
    with rt.store.read() as conn:
        states = q.feed_states(conn)
        consumers = q.feed_consumer_rows(conn)
        for feed in rt.config.feeds:
            build = build_feed(conn, service.feed_spec(feed), policy, now)
            etag = etag_of(RENDERERS["txt"][0](build, now, build.allowlist))
            state = states.get(feed.name)
            changed = state["changed"] if state and state["etag"] == etag else None
            rows.append(
                {
                    "feed": feed.name,
                    "entries": len(build.entries),
                    "max_entries": feed.max_entries,
                    "matched": build.matched,
                    "overflow": build.overflow,
                    "etag": etag,
                    "changed": iso(changed),
                    "auth": feed.auth.type,
                    "held_since": iso(state["held_since"]) if state else None,
                    "hold_reason": state["hold_reason"] if state else None,
                    "consumers": [
                        {
                            "address": c["address"],
                            "user_agent": c["user_agent"],
                            "last_fetch": iso(c["last_fetch"]),
                            "status": c["status"],
                            "etag": c["etag"],
                            "current": c["etag"] is not None and c["etag"].startswith(etag[:-1]),
                            "requests": c["requests"],
                        }
                        for c in consumers
                        if c["feed"] == feed.name
                    ],
                }
            )
    rt.close()
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("feed", "entries", "limit", "overflow", "ETag", "changed", "auth", "held")
    for r in rows:
        table.add_row(
            r["feed"],
            str(r["entries"]),
            str(r["max_entries"]),
            str(r["overflow"]),
            r["etag"],
            r["changed"] or "not served yet",
            r["auth"],
            f"since {r['held_since']}" if r["held_since"] else "no",
        )
    out.print(table)
    for r in rows:
        if r["hold_reason"]:
            out.print(f"HELD {r['feed']}: {r['hold_reason']}")
    fetches = Table("feed", "consumer", "user agent", "last fetch", "status", "has current")
    for r in rows:
        for c in r["consumers"]:
            fetches.add_row(
                r["feed"],
                c["address"],
                c["user_agent"],
                c["last_fetch"],
                str(c["status"]),
                "yes" if c["current"] else "no",
            )
    if fetches.row_count:
        out.print(fetches)
    else:
        out.print("no consumer has fetched a feed yet")


@main.command("fortigate-config")
@click.option("--feed", "feed_name", default=None, help="Feed name (default: the first feed).")
@click.option("--url", default=None, help="Base URL of banfeed as the FortiGate reaches it.")
@click.option("--username", default=None, help="Basic auth user (default: the feed's).")
@click.option(
    "--refresh",
    type=click.IntRange(1, 43200),
    default=5,
    show_default=True,
    help="Refresh rate in minutes (FortiOS: 1 to 43200).",
)
@pass_ctx
@handle_errors
def fortigate_config_cmd(
    ctx: Context, feed_name: str | None, url: str | None, username: str | None, refresh: int
) -> None:
    """Print the FortiOS CLI for an external threat feed and a deny policy using it."""
    config = ctx.config
    feed = config.feed(feed_name) if feed_name else config.feeds[0]
    scheme = "https" if config.server.cert_file else "http"
    base = url or config.server.public_url or f"{scheme}://{config.server.listen}"
    if not (url or config.server.public_url):
        err.print(
            f"(using server.listen {config.server.listen}; pass --url with the address the "
            "FortiGates reach, or set server.public_url)"
        )
    click.echo(fortigate_config(feed.name, base, username or feed.auth.username, refresh))


@main.command()
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="host:port to serve.")
@click.option("--interval", default="15s", show_default=True, help="Collection interval.")
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep config and store here (default: a new temporary folder).",
)
@handle_errors
def demo(listen: str, interval: str, directory: Path | None) -> None:
    """Simulated FortiGates (3 devices, 2 VDOMs, churn) + `banfeed run` on SQLite, until Ctrl-C."""
    from .. import simulator

    try:  # check the arguments before anything starts
        split_listen(listen)
        parse_duration(interval, allow_forever=False)
    except ValueError as exc:
        raise InputError(f"--listen: {exc}") from None
    folder = directory or Path(tempfile.mkdtemp(prefix="banfeed-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    os.environ["BANFEED_DEMO_TOKEN"] = token
    fleet = simulator.SimFleet(seed=int.from_bytes(os.urandom(2), "big"))
    for i in (1, 2, 3):
        device = fleet.add_device(
            f"fg-{i}", token=token, vdoms=["root", "dmz"], entries=150, churn=5, ipv6_ratio=0.2
        )
        device.add("root", "10.0.0.1")  # never published: private (RFC 1918)
    with simulator.start(fleet) as sim:
        path = folder / "banfeed.toml"
        path.write_text(_demo_toml(sim.urls, listen, interval), encoding="utf-8")
        config = load(path)
        open_store(config.store_url(), create=True).close()
        daemon = service.Daemon(config)
        daemon.bind()
        base = daemon.url
        err.print(f"banfeed demo — state in {folder}")
        err.print(f"  simulated FortiGates: {', '.join(sim.urls.values())}")
        for feed in config.feeds:
            err.print(f"  feed {feed.name}: {base}/feeds/{feed.name}.txt (also .csv, .json)")
        err.print(f"  dashboard: {base}/   metrics: {base}/metrics   ready: {base}/readyz")
        err.print(f"  try: banfeed --config {path} list | show ADDRESS | feeds")
        err.print("\nFortiOS CLI to pull the feed (use this host's address the FortiGate reaches):")
        err.print(fortigate_config("quarantine", base or "", None, 5))
        err.print("\nCollecting; Ctrl-C to stop.")
        logging.getLogger("banfeed").setLevel(logging.INFO)
        asyncio.run(daemon.run())


def _demo_toml(urls: dict[str, str], listen: str, interval: str) -> str:
    devices = "".join(
        f'[[fortigates]]\nname = "{name}"\nurl = "{url}"\n'
        f'token_env = "BANFEED_DEMO_TOKEN"\nvdoms = ["*"]\ntimeout = "5s"\n\n'
        for name, url in urls.items()
    )
    return (
        "# Written by `banfeed demo`: simulated FortiGates on 127.0.0.1.\n"
        '[store]\nurl = "sqlite:///banfeed.db"\n\n'
        f'[collect]\ninterval = "{interval}"\n\n'
        f'[server]\nlisten = "{listen}"\n\n'
        f"{devices}"
        '[[feeds]]\nname = "quarantine"\n\n'
        '[[feeds]]\nname = "ipv4-aggregated"\nfamily = "ipv4"\naggregate = true\n'
    )
