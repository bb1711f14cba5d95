"""Commands to try banfeed without a FortiGate: demo, simulate."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import InputError
from ..timeutil import parse_duration
from .base import err, handle_errors, main

if TYPE_CHECKING:
    from ..config import Config
    from ..simulator import SimFleet

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
    "drip",
    "drip-headers",
    "slow-chunked",
    "nested",
    "bad-time",
    "503",
    "echo",
    "echo-redirect",
    "gzip-bomb",
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
    from ..config import load, split_listen
    from ..daemon import Daemon
    from ..setupkit import fortigate_config
    from ..store import open_store

    try:  # check the arguments before anything starts
        split_listen(listen)
        parse_duration(interval, allow_forever=False)
    except ValueError as exc:
        raise InputError(f"--listen: {exc}") from None
    folder = directory or Path(tempfile.mkdtemp(prefix="banfeed-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    # In a file of the demo's folder (owner only), so `check`, `collect` and `verify` work
    # from another shell while the demo runs.
    token_file = folder / DEMO_TOKEN_FILE
    token_file.unlink(missing_ok=True)
    token_file.touch(mode=0o600)
    token_file.write_text(token + "\n", encoding="utf-8")
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
        daemon = Daemon(config)
        daemon.bind()
        base = daemon.url
        refresh = max(1.0, float(parse_duration(interval, allow_forever=False) or 1))
        pulled = _configure_feeds(fleet, config, base or "", refresh)
        err.print(f"banfeed demo — state in {folder}")
        err.print(f"  simulated FortiGates: {', '.join(sim.urls.values())}")
        for feed in config.feeds:
            err.print(f"  feed {feed.name}: {base}/feeds/{feed.name}.txt (also .csv, .json)")
        err.print(f"  dashboard: {base}/   metrics: {base}/metrics   ready: {base}/readyz")
        err.print(
            f"  the simulated FortiGates pull {', '.join(pulled)} every {interval}: "
            "`verify` shows what each loaded"
        )
        err.print(f"  try: banfeed --config {path} list | show ADDRESS | feeds | verify")
        err.print("\nFortiOS CLI to pull the feed (use this host's address the FortiGate reaches):")
        err.print(fortigate_config("quarantine", base or "", None, 5))
        err.print("\nCollecting; Ctrl-C to stop.")
        logging.getLogger("banfeed").setLevel(logging.INFO)
        asyncio.run(daemon.run())


DEMO_TOKEN_FILE = "demo.token"


def _configure_feeds(fleet: SimFleet, config: Config, base: str, refresh: float) -> list[str]:
    """Configure every feed on every simulated FortiGate as the external resource
    `fortigate-config` names (``banfeed-<feed>``), pulled from the demo's server every
    ``refresh`` seconds; the resource names."""
    scheme, _, rest = base.partition("://")
    host, _, port = rest.rpartition(":")
    # A wildcard listen address is not one a client connects to: use loopback.
    host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]"}.get(host, host)
    names = []
    for feed in config.feeds:
        name = f"banfeed-{feed.name}"[:35]
        url = f"{scheme}://{host}:{port}/feeds/{feed.name}.txt"
        for device in fleet.devices.values():
            device.add_feed(name, url=url, refresh_every=refresh)
        names.append(name)
    return names


def _demo_toml(urls: dict[str, str], listen: str, interval: str) -> str:
    devices = "".join(
        f'[[fortigates]]\nname = "{name}"\nurl = "{url}"\n'
        f'token_file = "{DEMO_TOKEN_FILE}"\nvdoms = ["*"]\ntimeout = "5s"\n\n'
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
