"""A fleet of fake FortiGates answering ``GET /api/v2/monitor/user/banned``.

banfeed's poller must be tested against something that behaves like real FortiOS, including
the ugly parts: HTML error pages, 401/429 lock-outs, hung connections, resets, truncated or
absurdly large bodies and entries whose ``ip_address`` is garbage. Real devices cannot be made
to misbehave on demand, so this module serves the documented response shapes (see the
fixtures in the FortiOS notes) from an in-process uvicorn server, one listening socket per
simulated device, with faults, latency, expiry and churn switchable per device at run time.

It deliberately shares no code with banfeed's client: a simulator that reused the client's
parsing or models would agree with the client's bugs instead of exposing them.

Only IP literals are accepted as bind addresses, so nothing is ever resolved; the default is
127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import hmac
import ipaddress
import json
import random
import signal
import socket
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType, FrameType
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

__all__ = [
    "FAULTS", "SOURCES", "RunningSimulator", "SimDevice", "SimEntry", "SimFleet", "serve_forever",
    "start",
]  # fmt: skip

FAULTS = (
    "none", "500", "timeout", "html", "truncated", "invalid", "shape", "huge",
    "401", "403", "404", "424", "429", "reset",
)  # fmt: skip
SOURCES = ("IPS", "DoS", "AV", "APP", "DLP")
DEFAULT_TTL = 300  # FortiOS default quarantine-expiry is 5 minutes
BUILD = 1517
_PATH = "/api/v2/monitor/user/banned"
_RAW_SEND = "banfeed.simulator.raw_send"
_HTML_401 = "<html><head><title>401 Unauthorized</title></head><body>Unauthorized</body></html>"
_HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>Error</body></html>"
_HTML_LOGIN = "<html><body>Please login</body></html>"
# TEST-NET-3: the one "valid" address in the invalid-fault extras, so even a client that
# wrongly accepts created="yesterday" can never push a real host into a feed.
_BAD_CREATED_IP = "203.0.113.77"
_HUGE_PAD_IP = "192.0.2.1"

# A superset of the non-global IPv4 space (plus multicast, reserved and the documentation
# nets). Checking random ints against sorted intervals is ~20x faster than
# IPv4Address.is_global, which matters for populating a million entries.
_V4_EXCLUDED = sorted(
    (int(n.network_address), int(n.broadcast_address))
    for n in map(
        ipaddress.IPv4Network,
        (
            "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
            "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
            "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/3",
        ),
    )
)  # fmt: skip
_V4_STARTS = [start for start, _ in _V4_EXCLUDED]
_V4_ENDS = [end for _, end in _V4_EXCLUDED]
_V6_BASE = 0x2A0 << 116  # 2a00::/12, RIPE-allocated global unicast


@dataclass
class SimEntry:
    """One quarantined address, served as-is (``ip`` may be deliberately invalid)."""

    ip: str
    created: int
    expires: int | None  # None: key omitted from the JSON, like a no-expiry ban
    source: str = "IPS"
    ipv6: int | None = None  # None: 1 if ":" in ip else 0

    def to_json(self) -> dict[str, object]:
        ip = self.ip
        ipv6 = self.ipv6 if self.ipv6 is not None else int(":" in ip)
        if ":" in ip:
            ip = _exploded(ip)
        if self.expires is None:
            return {"created": self.created, "ip_address": ip, "source": self.source, "ipv6": ipv6}
        return {
            "expires": self.expires,
            "created": self.created,
            "ip_address": ip,
            "source": self.source,
            "ipv6": ipv6,
        }


@functools.lru_cache(maxsize=1 << 17)
def _exploded(ip: str) -> str:
    # Real FortiOS answers IPv6 fully expanded; clients must normalise. Invalid text is
    # served unchanged. Cached because parsing dominates serving large IPv6-heavy lists.
    try:
        return ipaddress.IPv6Address(ip).exploded
    except ValueError:
        return ip


@dataclass(eq=False)
class SimDevice:
    """One simulated FortiGate. Attributes may be changed while the simulator runs."""

    name: str
    token: str
    vdoms: dict[str, list[SimEntry]] = field(default_factory=lambda: {"root": []})
    fault: str = "none"
    latency: float = 0.0
    churn: int = 0
    timeout_delay: float = 30.0
    huge_bytes: int = 2_000_000
    version: str = "v7.2.5"
    requests: int = 0  # /user/banned requests received (counted on arrival, any outcome)
    ipv6_ratio: float = 0.1  # share of IPv6 among churned-in entries
    clock: Callable[[], float] = field(default=time.time, repr=False)
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    # The server thread and test code mutate the lists concurrently.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; expected one of {FAULTS}")

    @property
    def serial(self) -> str:
        return "FGVM" + hashlib.sha256(self.name.encode()).hexdigest()[:12].upper()

    def add(
        self,
        vdom: str,
        ip: str,
        *,
        created: int | None = None,
        expires: int | None | EllipsisType = ...,
        source: str = "IPS",
    ) -> SimEntry:
        if created is None:
            created = int(self.clock())
        if isinstance(expires, EllipsisType):
            expires = created + DEFAULT_TTL
        entry = SimEntry(ip=ip, created=created, expires=expires, source=source)
        with self._lock:
            self.vdoms.setdefault(vdom, []).append(entry)
        return entry

    def remove(self, vdom: str, ip: str) -> None:
        """Forget every entry for ``ip`` in ``vdom``; absent addresses are ignored."""
        with self._lock:
            if vdom in self.vdoms:
                self.vdoms[vdom] = [e for e in self.vdoms[vdom] if e.ip != ip]

    def populate(
        self,
        vdom: str,
        count: int,
        *,
        ipv6_ratio: float = 0.1,
        source: str | None = None,
        ttl: int | None = DEFAULT_TTL,
    ) -> list[SimEntry]:
        """Add ``count`` random public addresses, unique within the device (ttl None: no expiry)."""
        gc_was_enabled = gc.isenabled()
        # A million new objects would trigger dozens of full collections that find nothing.
        gc.disable()
        try:
            with self._lock:
                fresh = self._fresh(count, ipv6_ratio, source, ttl)
                self.vdoms.setdefault(vdom, []).extend(fresh)
        finally:
            if gc_was_enabled:
                gc.enable()
        return fresh

    def _fresh(
        self, count: int, ipv6_ratio: float, source: str | None, ttl: int | None
    ) -> list[SimEntry]:
        # Caller holds the lock. The taken set is rebuilt each time because callers may
        # edit `vdoms` directly, so no cached index could be trusted.
        taken = {e.ip for entries in self.vdoms.values() for e in entries}
        now = int(self.clock())
        expires = None if ttl is None else now + ttl
        # Local aliases: this loop runs a million times for the large benchmarks.
        rand, bits, starts, ends = self.rng.random, self.rng.getrandbits, _V4_STARTS, _V4_ENDS
        out: list[SimEntry] = []
        while len(out) < count:
            if ipv6_ratio > 0 and rand() < ipv6_ratio:
                ip = str(ipaddress.IPv6Address(_V6_BASE | bits(116)))
            else:
                n = bits(32)
                # Redraw here rather than `continue`, which would re-toss the v4/v6 coin and
                # skew the ratio. starts[0] == 0, so the bisect index is never -1.
                while n <= ends[bisect_right(starts, n) - 1]:
                    n = bits(32)
                ip = f"{n >> 24}.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"
            if ip in taken:
                continue
            taken.add(ip)
            src = source if source is not None else SOURCES[int(rand() * len(SOURCES))]
            out.append(SimEntry(ip, now, expires, src))
        return out

    def _poll(self, vdom: str) -> list[dict[str, object]]:
        """Expire, churn, and render one vdom, as a real poll would observe it."""
        with self._lock:
            now = self.clock()
            entries = [e for e in self.vdoms[vdom] if e.expires is None or e.expires > now]
            self.vdoms[vdom] = entries  # before _fresh, so dropped addresses count as free
            if self.churn > 0:
                del entries[: self.churn]
                entries.extend(self._fresh(self.churn, self.ipv6_ratio, None, DEFAULT_TTL))
            return [e.to_json() for e in entries]


class _SimApp(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette wraps `send`; keep uvicorn's own so the "reset" fault can reach the socket.
        scope[_RAW_SEND] = send
        await super().__call__(scope, receive, send)


class SimFleet:
    """A set of simulated devices sharing one seeded RNG and one clock."""

    def __init__(self, *, seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.clock = clock
        self.rng = random.Random(seed)
        self.devices: dict[str, SimDevice] = {}
        self._ports: dict[int, str] = {}  # local port -> device name, filled by start()
        self.in_flight = 0  # requests being answered now, across the fleet
        self.max_in_flight = 0  # the most at once: shows how a client bounds its concurrency

    def add_device(
        self,
        name: str,
        *,
        token: str,
        vdoms: Sequence[str] = ("root",),
        entries: int = 0,
        churn: int = 0,
        latency: float = 0.0,
        fault: str = "none",
        ipv6_ratio: float = 0.1,
    ) -> SimDevice:
        if name in self.devices:
            raise ValueError(f"duplicate device name {name!r}")
        device = SimDevice(
            name=name,
            token=token,
            vdoms={v: [] for v in vdoms},
            fault=fault,
            latency=latency,
            churn=churn,
            ipv6_ratio=ipv6_ratio,
            clock=self.clock,
            rng=self.rng,
        )
        for vdom in vdoms:
            device.populate(vdom, entries, ipv6_ratio=ipv6_ratio)
        self.devices[name] = device
        return device

    def app(self) -> Starlette:
        """ASGI app for all devices, routed by local port (or, in-process, by host name)."""
        routes = [Route(_PATH, self._endpoint), Route(_PATH + "/select", self._endpoint)]
        return _SimApp(routes=routes)

    def _device_for(self, scope: Scope) -> SimDevice | None:
        server = scope.get("server")
        name = None
        if server:
            name = self._ports.get(server[1])
            if name is None and server[0] in self.devices:
                name = server[0]  # httpx.ASGITransport with base_url "http://<device name>"
        if name is None and len(self.devices) == 1:
            name = next(iter(self.devices))
        return self.devices.get(name) if name is not None else None

    async def _endpoint(self, request: Request) -> Response:
        device = self._device_for(request.scope)
        if device is None:
            return PlainTextResponse("no simulated device here", status_code=404)
        device.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if not await _sleep(request, device.latency):
                return Response(status_code=499)  # client gone: uvicorn sends nothing
            return await _answer(device, request)
        finally:
            self.in_flight -= 1


async def _answer(device: SimDevice, request: Request) -> Response:
    fault = device.fault
    if fault == "401" or not _authorized(request, device.token):
        return HTMLResponse(_HTML_401, status_code=401)
    if fault in ("403", "404", "424", "429"):
        status = int(fault)
        headers = {"Retry-After": "60"} if status == 429 else None
        return _json({"status": "error", "http_status": status, "error": -status}, status, headers)
    if fault == "500":
        return HTMLResponse(_HTML_500, status_code=500)
    if fault == "html":
        return HTMLResponse(_HTML_LOGIN)
    if fault == "shape":
        return _json({"status": "success", "results": {"not": "a list"}})
    if fault == "reset":
        # After a real reset uvicorn drops this reply; in-process (no socket) it is the answer.
        await _reset(request)
        return Response(status_code=502)
    if fault == "timeout":
        if not await _sleep(request, device.timeout_delay):
            return Response(status_code=499)
    elif fault not in ("none", "truncated", "invalid", "huge"):
        return PlainTextResponse(f"unknown simulator fault {fault!r}", status_code=500)

    raw = request.query_params.get("vdom") or "root"
    if raw == "*":
        names = sorted(device.vdoms)
    else:
        names = [v for v in raw.split(",") if v]
    missing = [v for v in names if v not in device.vdoms]
    if missing or not names:
        body = {"status": "error", "http_status": 404, "error": -3, "vdom": ",".join(missing)}
        return _json(body, 404)
    select = request.url.path.rstrip("/").endswith("/select")
    objects = [_response_object(device, v, device._poll(v), select) for v in names]
    now = int(device.clock())
    if fault == "invalid":
        for obj in objects:
            obj["results"].extend(_invalid_entries(now))
    payload: object = objects if (raw == "*" or "," in raw) else objects[0]
    data = _dumps(payload)
    if fault == "huge" and len(data) < device.huge_bytes:
        pad = {"expires": now + DEFAULT_TTL, "created": now, "ip_address": _HUGE_PAD_IP}
        pad |= {"source": "", "ipv6": 0}
        objects[0]["results"].append(pad)
        # One pad entry of exactly the missing size keeps the body valid JSON of huge_bytes.
        pad["source"] = "X" * (device.huge_bytes - len(_dumps(payload)))
        data = _dumps(payload)
    elif fault == "truncated":
        data = data[: len(data) // 2]
    return Response(data, media_type="application/json")


async def _sleep(request: Request, delay: float) -> bool:
    """Sleep ``delay`` seconds; False as soon as the client hangs up.

    Returning early matters for "timeout": a client that gave up must not leave a handler
    running, or stopping the server would wait for the graceful-shutdown timeout.
    """
    if delay <= 0:
        return True

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(delay))
    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait((sleeper, watcher), return_when=asyncio.FIRST_COMPLETED)
        return not watcher.done()
    finally:
        sleeper.cancel()
        watcher.cancel()


def _authorized(request: Request, token: str) -> bool:
    # FortiOS 7.4.5+ refuses ?access_token=; banfeed must never rely on it.
    if "access_token" in request.query_params:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _response_object(
    device: SimDevice, vdom: str, results: list[dict[str, object]], select: bool
) -> dict[str, Any]:
    obj: dict[str, Any] = {"http_method": "GET", "results": results, "vdom": vdom}
    obj |= {"path": "user", "name": "banned"}
    if select:
        obj["action"] = "select"
    obj |= {"status": "success", "serial": device.serial, "version": device.version}
    obj["build"] = BUILD
    return obj


def _invalid_entries(now: int) -> list[dict[str, object]]:
    base: dict[str, object] = {"expires": now + DEFAULT_TTL, "created": now}
    base |= {"source": "IPS", "ipv6": 0}
    bad_ips = ("999.1.1.1", "01.02.03.04", "1.2.3.4\n5.6.7.8", "", "a" * 300)
    out = [{**base, "ip_address": ip} for ip in bad_ips]
    out.append(dict(base))  # no ip_address at all
    out.append({**base, "ip_address": _BAD_CREATED_IP, "created": "yesterday"})
    return out


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(body), status, headers, media_type="application/json")


async def _reset(request: Request) -> None:
    """Abort the TCP connection with an RST (no-op when no real socket is reachable)."""
    raw_send = request.scope.get(_RAW_SEND)
    # uvicorn's send is a bound method of its per-request cycle, which owns the transport.
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger 0 turns close() into an RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(3):  # let connection_lost run so uvicorn drops the reply we return
        await asyncio.sleep(0)


@dataclass
class RunningSimulator:
    """Handle for a simulator started by :func:`start`; ``urls`` maps device name to base URL."""

    urls: dict[str, str]
    _fleet: SimFleet = field(repr=False)
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _socks: list[socket.socket] = field(repr=False)
    _ports: list[int] = field(repr=False)

    def stop(self) -> None:
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
    try:
        server.run(sockets=socks)
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
        for sock in socks:
            sock.close()
        for port in bound.values():
            fleet._ports.pop(port, None)
