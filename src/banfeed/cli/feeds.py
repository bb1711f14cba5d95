"""Commands of the feeds: feeds, approve, history, diff, rollback, release, export, verify
(fortigate-config is in ``setup``)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table
from rich.text import Text

from ..errors import InputError
from ..timeutil import iso, parse_duration
from ._json import FORMAT, emit
from .base import (
    EXIT_FAILED,
    FEED_FORMATS,
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
)

if TYPE_CHECKING:
    from .. import checks


@main.group(invoke_without_command=True)
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@click.pass_context
def feeds(click_ctx: click.Context, fmt: str) -> None:
    """List feeds as served: version, size, limit, overflow, ETag, hold or pin, consumers."""
    if click_ctx.invoked_subcommand is None:
        click_ctx.invoke(feeds_list, fmt=fmt)


@pass_ctx
@handle_errors
def feeds_list(ctx: Context, fmt: str) -> None:
    from .. import reports

    with ctx.runtime() as rt:
        rows = [o.record() for o in reports.feed_overviews(rt)]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("feed", "version", "entries", "limit", "overflow", "ETag", "changed", "state")
    for r in rows:
        if r["pinned"] is not None:
            state = f"PINNED to {r['pinned']} by {r['pinned_by']}"
        elif r["held_since"]:
            state = f"HELD since {r['held_since']}"
        else:
            state = "ok"
        table.add_row(
            r["feed"],
            str(r["version"] or "-"),
            str(r["entries"]),
            str(r["max_entries"]),
            str(r["overflow"]),
            r["etag"] or "-",
            r["changed"] or "not published yet",
            state,
        )
        for number, shard in enumerate(r["shards"], 1):  # NAME-k: its part of that version
            cells = [
                "-" if shard[k] is None else str(shard[k]) for k in ("entries", "etag", "changed")
            ]
            where = f"shard {number}" + ("" if shard["etag"] else " (not in this version)")
            table.add_row(f"  {shard['feed']}", "", cells[0], "", "", *cells[1:], where)
    out.print(table)
    for r in rows:
        if r["hold_reason"]:
            out.print(f"HELD {r['feed']}: {r['hold_reason']}")
    fetches = Table("feed", "consumer", "user agent", "last fetch", "status", "has current")
    for r in [r for feed in rows for r in (feed, *feed["shards"])]:
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


@feeds.command("approve")
@click.argument("name")
@pass_ctx
@handle_errors
def feeds_approve(ctx: Context, name: str) -> None:
    """Release a feed held by the mass-drop guard: publish its current content."""
    from .. import control

    ctx.config.feed(name)
    with ctx.runtime() as rt:
        done = control.approve_feed(rt.store, name, actor=operator(), now=rt.now())
    if done is control.Approval.APPROVED:
        out.print(f"feed {name}: hold released; servers publish its current content within seconds")
    elif done is control.Approval.ALREADY:
        out.print(f"feed {name}: its hold was already released; it is published within seconds")
    else:
        out.print(f"feed {name} was not held; nothing to approve")


@feeds.command("history")
@click.argument("name")
@click.option("--limit", type=click.IntRange(1), default=20, show_default=True)
@click.option("--format", "fmt", type=click.Choice(("table", "json")), default="table")
@pass_ctx
@handle_errors
def feeds_history(ctx: Context, name: str, limit: int, fmt: str) -> None:
    """Published versions of feed NAME, newest first."""
    from .. import reports

    with ctx.runtime() as rt:
        state, versions = reports.feed_history(rt, name, limit)
    rows: list[dict[str, Any]] = [
        {
            "version": v.number,
            "published": iso(v.created),
            "entries": v.entries,
            "added": v.added,
            "removed": v.removed,
            "overflow": v.overflow,
            "etag": v.etag,
            "reason": v.reason,
            "approver": v.approver,
            "served": v.number
            == (state.pinned if state.pinned is not None else versions[0].number),
        }
        for v in versions
    ]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=1))
        return
    table = Table("version", "published", "entries", "+", "−", "reason", "served")
    for r in rows:
        table.add_row(
            str(r["version"]),
            r["published"] or "",
            str(r["entries"]),
            str(r["added"]),
            str(r["removed"]),
            r["reason"],
            "pinned"
            if r["served"] and state.pinned is not None
            else ("yes" if r["served"] else ""),
        )
    out.print(table)
    if state.held_since is not None:
        out.print(f"HELD since {iso(state.held_since)}: {state.hold_reason}")


@feeds.command("diff")
@click.argument("name")
@click.argument("old", type=int, required=False)
@click.argument("new", type=int, required=False)
@pass_ctx
@handle_errors
def feeds_diff(ctx: Context, name: str, old: int | None, new: int | None) -> None:
    """Lines added (+) and removed (-) between two versions (default: served and previous)."""
    from .. import reports

    with ctx.runtime() as rt:
        diff = reports.feed_diff(rt, name, old, new)
    out.print(f"feed {name}: version {diff.old} → {diff.new}")
    for line in diff.removed:
        click.echo(f"-{line}")
    for line in diff.added:
        click.echo(f"+{line}")
    out.print(f"{len(diff.added)} added, {len(diff.removed)} removed")


@feeds.command("rollback")
@click.argument("name")
@click.argument("version", type=int)
@pass_ctx
@handle_errors
def feeds_rollback(ctx: Context, name: str, version: int) -> None:
    """Serve VERSION of feed NAME (pinned) until `banfeed feeds release NAME`."""
    from .. import control
    from ..publish import shards

    feed = ctx.config.feed(name)
    with ctx.runtime() as rt:
        shards.check_rollback(rt.store, name, version, feed.shards)
        pinned = control.pin_feed(rt.store, name, version, actor=operator(), now=rt.now())
    out.print(
        f"feed {name}: pinned to version {pinned.number} ({pinned.entries} entries, published "
        f"{iso(pinned.created)}); `banfeed feeds release {name}` to publish again"
    )


@feeds.command("release")
@click.argument("name")
@pass_ctx
@handle_errors
def feeds_release(ctx: Context, name: str) -> None:
    """Stop serving a pinned version of feed NAME: publish its current build again."""
    from .. import control

    ctx.config.feed(name)
    with ctx.runtime() as rt:
        released = control.release_feed(rt.store, name, actor=operator(), now=rt.now())
    out.print(f"feed {name}: " + ("pin released" if released else "was not pinned"))


@main.command()
@click.option("--feed", "feed_name", default=None, help="Feed name (default: the first feed).")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help='File to write atomically (default, or "-": standard output).',
)
@click.option("--format", "fmt", type=click.Choice(FEED_FORMATS), default="txt", show_default=True)
@pass_ctx
@handle_errors
def export(ctx: Context, feed_name: str | None, output: Path | None, fmt: str) -> None:
    """Write a feed as published: one address a line, numeric order, IPv4 first (or CSV/JSON).

    Publishes the feed first (the same build and guards as the server): a feed the mass-drop
    guard holds is written as its last good version, and the command exits 1. `--feed NAME-2`
    writes shard 2 of a sharded feed's version (what /feeds/NAME-2.txt serves)."""
    from .. import reports
    from ..publish import Outcome, served, served_shards
    from ..publish.render import rendered_pieces, write_atomically

    if output is not None and str(output) == "-":
        output = None  # the usual spelling of standard output, never a file named "-"
    config = ctx.config
    shards = {s: (f, k) for f in config.feeds for k, s in enumerate(f.shard_names, 1)}
    feed, shard = shards.get(feed_name or "", (None, None))
    if feed is None or feed.shards == 1:
        feed, shard = (config.feed(feed_name) if feed_name else config.feeds[0]), None
    with ctx.runtime() as rt:
        publisher = rt.publisher()
        results = {r.feed: r for r in publisher.publish([feed.name])}  # the others: their own
        with rt.store.read() as tx:
            shown = served(tx, feed.name)
            if shown is None:
                fail(f"feed {feed.name}: nothing published (see `banfeed feeds`)", EXIT_FAILED)
            if shard is not None:
                part = served_shards(tx, shown, shard)[shard - 1]
                if part is None:
                    fail(
                        f"feed {feed.name}: version {shown.version.number} has no shard {shard} "
                        "(published before the feed had as many shards)",
                        EXIT_FAILED,
                    )
                shown = part
            pieces: Iterable[bytes]
            if fmt == "txt":
                pieces = [shown.body()]
            else:  # streamed from the store, in bounded memory, inside this transaction
                offenders = publisher.covered_offenders(tx, shown)
                allow = reports.effective_allowlist(rt, tx)
                pieces = rendered_pieces(fmt, offenders, rt.now(), allow)
            if output is None:
                for piece in pieces:
                    sys.stdout.buffer.write(piece)
                sys.stdout.flush()
            else:
                write_atomically(output, pieces)
    if output is not None:
        what = f"shard {shard} of version" if shard else "version"
        err.print(
            f"feed {feed.name}: {what} {shown.version.number}, {shown.version.entries} entries "
            f"written to {output}"
        )
    version = shown.version
    if version.overflow:
        err.print(
            f"feed {feed.name}: {version.overflow} of {version.matched} offenders left out "
            f"(limit = {feed.limit}{f' × {feed.shards} shards' if feed.shards > 1 else ''}; "
            "the most recent and most repeated are kept)"
        )
    result = results.get(feed.name)
    if shown.pinned:
        err.print(f"feed {feed.name}: pinned to version {version.number} (`feeds release`)")
    if result is not None and result.outcome is Outcome.HELD and result.decision is not None:
        fail(
            f"feed {feed.name} HELD, last good version {version.number} written: "
            f"{result.decision.reason}",
            EXIT_FAILED,
        )


@main.command()
@click.option("--feed", "feed_name", default=None, help="Feed name (default: the first feed).")
@click.option(
    "--resource", default=None, help='Its name on the FortiGates (default: "banfeed-<feed>").'
)
@click.option(
    "--grace",
    default="10m",
    show_default=True,
    help="How long a device may hold the previous version before it counts as stale.",
)
@FORMAT
@pass_ctx
@handle_errors
def verify(ctx: Context, feed_name: str | None, resource: str | None, grace: str, fmt: str) -> None:
    """Ask each FortiGate what it loaded from a feed, and compare with what is served.

    A sharded feed is checked shard by shard: resource banfeed-NAME-1 (or RESOURCE-1) against
    shard 1 of the served version, and so on."""
    from .. import checks, compose
    from ..setupkit import resource_name

    config = ctx.config
    feed = config.feed(feed_name) if feed_name else config.feeds[0]
    parts: list[int | None] = list(range(1, feed.shards + 1)) if feed.shards > 1 else [None]
    try:
        grace_s = parse_duration(grace, allow_forever=False) or 0  # never None without forever
    except InputError as exc:
        raise InputError(f"--grace: {exc}") from None
    reports = []
    with ctx.runtime() as rt:
        for shard in parts:
            name = resource_name(feed.name, shard)
            if resource:
                name = resource if shard is None else f"{resource}-{shard}"
            check = checks.verify_feed(
                rt.store,
                compose.targets(config),
                feed.name,
                name,
                now=rt.now(),
                grace=grace_s,
                shard=shard,
            )
            reports.append(asyncio.run(check))
    if fmt == "json":  # a sharded feed: one record a shard
        emit(reports[0].record() if feed.shards == 1 else [r.record() for r in reports])
    else:
        for report in reports:
            _verify_table(report)
    if not all(report.ok for report in reports):
        raise SystemExit(EXIT_FAILED)


def _verify_table(report: checks.FeedVerification) -> None:
    served = report.served
    state = " (held: the last good version)" if report.held else ""
    state = " (pinned)" if report.pinned else state
    version = f"version {served.number}, " if served else "nothing published yet, "
    out.print(
        f"feed {report.feed} (resource {report.resource}): {version}"
        f"{report.entries} entries served now{state}"
    )
    table = Table("device", "valid", "invalid", "overflow", "last HTTP", "content time", "verdict")
    for d in report.devices:
        label = d.verdict.value.replace("_", " ")
        if d.verdict.value == "in_sync":
            verdict = ok("in sync")
        elif d.verdict.value == "behind":
            verdict = Text.assemble((label, "yellow"), f": {d.detail}")
        else:
            kind = d.error.kind if d.verdict.value == "error" and d.error else label
            verdict = bad(kind, d.detail)
        s = d.status
        if s is None:
            table.add_row(d.device, "-", "-", "-", "-", "-", verdict)
            continue
        table.add_row(
            d.device,
            str(s.valid),
            str(s.invalid),
            "yes" if s.overflow else "no",
            str(s.http_status or "-"),
            iso(s.content_time) or "-",
            verdict,
        )
    out.print(table)
