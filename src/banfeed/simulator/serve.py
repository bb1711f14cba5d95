"""Running the simulator: start() in a background thread, serve_forever() in the foreground."""

from __future__ import annotations

import ipaddress
import signal
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import FrameType

import uvicorn

from .app import SimFleet

# -- serving: start() in a thread, serve_forever() in the foreground ------------------------

_REFRESH_TICK = 0.1  # seconds between two looks for threat feeds due for a fetch


class _Refresher:
    """Fetches the threat feeds that are due, in a thread of its own, as each FortiGate does on
    its ``refresh-rate``: a fetch may take seconds, and must not hold up the API's answers."""

    def __init__(self, fleet: SimFleet) -> None:
        self._fleet = fleet
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="banfeed-sim-feeds", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_REFRESH_TICK):
            self._fleet.refresh_due()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class RunningSimulator:
    """Handle for a simulator started by :func:`start`; ``urls`` maps device name to base URL."""

    urls: dict[str, str]
    _fleet: SimFleet = field(repr=False)
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _socks: list[socket.socket] = field(repr=False)
    _ports: list[int] = field(repr=False)
    _refresher: _Refresher | None = field(default=None, repr=False)

    def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.stop()
            self._refresher = None
        self._server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        for sock in self._socks:  # uvicorn closes them on shutdown, unless it never started
            sock.close()
        for port in self._ports:
            self._fleet._ports.pop(port, None)
        self._ports = []

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _bind(host: str, port: int) -> socket.socket:
    # ip_address() rejects host names, so nothing is ever resolved.
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Lets the CLI restart on a fixed port while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except BaseException:
        sock.close()
        raise
    return sock


def _bind_all(
    fleet: SimFleet, host: str, port_for: Callable[[int, str], int]
) -> tuple[list[socket.socket], dict[str, int]]:
    socks: list[socket.socket] = []
    ports: dict[str, int] = {}
    try:
        for i, name in enumerate(fleet.devices):
            socks.append(_bind(host, port_for(i, name)))
            ports[name] = socks[-1].getsockname()[1]
    except BaseException:
        for sock in socks:
            sock.close()
        raise
    for name, port in ports.items():
        fleet._ports[port] = name
    return socks, ports


def _server(fleet: SimFleet, certfile: str | None, keyfile: str | None) -> uvicorn.Server:
    config = uvicorn.Config(
        fleet.app(),
        log_level="warning",
        log_config=None,  # the CLI owns logging configuration
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,  # a pending "timeout" request must not stall stop()
        proxy_headers=False,
        server_header=False,
        loop="asyncio",
        ssl_certfile=certfile,
        ssl_keyfile=keyfile,
    )
    config.load()  # surface bad certificate paths here, not inside the server thread
    return uvicorn.Server(config)


def start(
    fleet: SimFleet,
    *,
    host: str = "127.0.0.1",
    ports: Mapping[str, int] | None = None,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> RunningSimulator:
    """Serve ``fleet`` from a background thread, one socket per device (port 0: ephemeral)."""
    wanted = dict(ports or {})
    if unknown := set(wanted) - set(fleet.devices):
        raise ValueError(f"ports given for unknown devices: {sorted(unknown)}")
    server = _server(fleet, ssl_certfile, ssl_keyfile)
    socks, bound = _bind_all(fleet, host, lambda _i, name: wanted.get(name, 0))
    scheme = "https" if ssl_certfile else "http"
    shown = f"[{host}]" if ":" in host else host
    urls = {name: f"{scheme}://{shown}:{port}" for name, port in bound.items()}
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": socks}, name="banfeed-simulator", daemon=True
    )
    running = RunningSimulator(urls, fleet, server, thread, socks, list(bound.values()))
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            running.stop()
            raise RuntimeError("simulator server failed to start")
        time.sleep(0.005)
    running._refresher = _Refresher(fleet)
    return running


def _ignore_signal(signum: int, frame: FrameType | None) -> None:
    pass


def serve_forever(
    fleet: SimFleet,
    *,
    host: str,
    first_port: int,
    ssl_certfile: str | None = None,
    ssl_keyfile: str | None = None,
) -> None:
    """Serve in the foreground, device i on ``first_port + i``, until Ctrl-C or SIGTERM."""
    server = _server(fleet, ssl_certfile, ssl_keyfile)
    socks, bound = _bind_all(fleet, host, lambda i, _name: first_port + i)
    # uvicorn re-raises the signal that stopped it once it has shut down; with a no-op
    # handler underneath, that becomes a plain return instead of KeyboardInterrupt or death.
    in_main = threading.current_thread() is threading.main_thread()
    signals = (signal.SIGINT, signal.SIGTERM) if in_main else ()
    saved = {sig: signal.signal(sig, _ignore_signal) for sig in signals}
    refresher = _Refresher(fleet)
    try:
        server.run(sockets=socks)
    finally:
        refresher.stop()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sock in socks:
            sock.close()
        for port in bound.values():
            fleet._ports.pop(port, None)
