"""The setup kit: ``fortigate-config``, what to paste on the FortiGates (or FortiManager)."""

from __future__ import annotations

from ipaddress import ip_address
from pathlib import Path

import click

from ..errors import InputError
from ..timeutil import parse_duration
from .base import Context, err, handle_errors, main, pass_ctx


@main.command("fortigate-config")
@click.option(
    "--role",
    type=click.Choice(("poll", "consume", "all")),
    default="all",
    show_default=True,
    help="poll: the API admin and quarantine profiles; consume: feeds and deny policies.",
)
@click.option(
    "--fortios",
    "release",
    type=click.Choice(("7.0", "7.2", "7.4", "7.6")),
    default="7.4",
    show_default=True,
    help="FortiOS release of the FortiGates.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(("cli", "fortimanager")),
    default="cli",
    show_default=True,
    help="FortiOS CLI, or FortiManager JSON-RPC requests (ADOM objects, policy package).",
)
@click.option("--feed", "feed_names", multiple=True, help="Only this feed (repeat; default: all).")
@click.option("--url", default=None, help="Base URL of banfeed as the FortiGate reaches it.")
@click.option("--username", default=None, help="Basic auth user (default: each feed's).")
@click.option(
    "--refresh",
    type=click.IntRange(1, 43200),
    default=5,
    show_default=True,
    help="Refresh rate in minutes (FortiOS: 1 to 43200).",
)
@click.option(
    "--trusthost", multiple=True, help="Address banfeed polls from (repeat; network or address)."
)
@click.option("--interface", multiple=True, help="Interface attackers come in on (repeat).")
@click.option("--policy-id", type=click.IntRange(1), default=None, help="ID of the deny policy.")
@click.option("--before", type=click.IntRange(1), default=None, help="ID it must sit above.")
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    default=None,
    help="PEM of the CA that signed banfeed's certificate, to print as CLI.",
)
@click.option(
    "--quarantine-expiry",
    default=None,
    help="How long a FortiGate quarantines (default: 3 collect intervals, at least 1h).",
)
@click.option(
    "--unban-everywhere",
    is_flag=True,
    help="Grant read-write so `banfeed unban --everywhere` can clear quarantines.",
)
@click.option("--adom", default="root", show_default=True, help="FortiManager ADOM.")
@click.option(
    "--package", default="default", show_default=True, help="FortiManager policy package."
)
@pass_ctx
@handle_errors
def fortigate_config_cmd(
    ctx: Context,
    role: str,
    release: str,
    fmt: str,
    feed_names: tuple[str, ...],
    url: str | None,
    username: str | None,
    refresh: int,
    trusthost: tuple[str, ...],
    interface: tuple[str, ...],
    policy_id: int | None,
    before: int | None,
    ca_file: Path | None,
    quarantine_expiry: str | None,
    unban_everywhere: bool,
    adom: str,
    package: str,
) -> None:
    """Print what a FortiGate needs: API admin, quarantine actions, threat feeds, deny policies."""
    from .. import setupkit
    from ..config import split_listen
    from ..net import parse_network

    config = ctx.config
    feeds = [config.feed(name) for name in feed_names] if feed_names else list(config.feeds)
    host, _ = split_listen(config.server.listen)
    scheme = "https" if config.server.cert_file else "http"
    base = url or config.server.public_url or f"{scheme}://{config.server.listen}"
    if role != "poll" and not (url or config.server.public_url):
        err.print(
            f"(using server.listen {config.server.listen}; pass --url with the address the "
            "FortiGates reach, or set server.public_url)"
        )
    try:
        trusted = tuple(parse_network(text) for text in trusthost)
    except InputError as exc:
        raise InputError(f"--trusthost: {exc}") from None
    if not trusted:
        listen = ip_address(host)
        if not (listen.is_loopback or listen.is_unspecified):
            trusted = (parse_network(str(listen)),)
    expiry = setupkit.default_expiry(config.collect.interval)
    if quarantine_expiry is not None:
        try:
            expiry = parse_duration(quarantine_expiry, allow_forever=False) or expiry
        except InputError as exc:
            raise InputError(f"--quarantine-expiry: {exc}") from None
    try:
        ca_pem = ca_file.read_text(encoding="ascii").strip() if ca_file else None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--ca-file {ca_file}: cannot read a PEM file: {exc}") from None
    if ca_pem is not None and "-----BEGIN CERTIFICATE-----" not in ca_pem:
        raise InputError(f"--ca-file {ca_file}: no PEM certificate in it")
    targets = tuple(
        setupkit.FeedTarget(
            name=feed.name,
            url=setupkit.feed_url(base, feed.name),
            family=feed.family,
            auth=feed.auth.type,
            username=username if username and feed.auth.type != "bearer" else feed.auth.username,
            max_entries=feed.limit,
            allow_from=tuple(feed.allow_from),
            shards=feed.shards,
        )
        for feed in feeds
    )
    pollers = tuple(
        setupkit.Poller(
            name=fg.name,
            vdoms=tuple(fg.vdoms),
            receives_pushes=(
                fg.push_quarantine if fg.push_quarantine is not None else config.push.quarantine
            ),
            push_feed=fg.push_feed,
            token_source=f"${fg.token_env}"
            if fg.token_env
            else (str(fg.token_file) if fg.token_file else "the config file (token)"),
        )
        for fg in config.fortigates
    )
    kit = setupkit.Kit(
        role=role,  # type: ignore[arg-type]  # click.Choice of the same names
        release=release,  # type: ignore[arg-type]
        feeds=targets,
        pollers=pollers,
        unban_everywhere=unban_everywhere,
        trusthosts=trusted,
        interfaces=interface,
        policy_id=policy_id,
        before=before,
        ca_pem=ca_pem,
        quarantine_expiry=expiry,
        refresh=refresh,
    )
    plan = setupkit.build(kit)
    for warning in plan.warnings:  # stderr: standard output is what gets pasted
        err.print(f"warning: {warning}")
    if fmt == "fortimanager":
        click.echo(setupkit.fortimanager_json(plan, adom=adom, package=package), nl=False)
    else:
        click.echo(setupkit.render(plan.sections), nl=False)
