"""A fleet of fake FortiGates speaking the parts of the FortiOS REST API banfeed uses.

banfeed's poller must be tested against something that behaves like real FortiOS, including
the ugly parts: HTML error pages, 401/429 lock-outs, hung connections, resets, truncated or
absurdly large bodies and entries whose ``ip_address`` is garbage. Real devices cannot be made
to misbehave on demand, so this module serves the documented response shapes (see the
fixtures in the FortiOS notes) from an in-process uvicorn server, one listening socket per
simulated device, with faults, latency, expiry and churn switchable per device at run time.

Endpoints (all under ``/api/v2/monitor``; Bearer token only, ``?access_token=`` is refused):

- ``GET user/banned[/select]?vdom=V|a,b|*``: the quarantine list (expiry and churn applied).
- ``POST user/banned/add_users?vdom=V`` ``{"ip_addresses": [...], "expiry": s}`` (0: none).
- ``POST user/banned/clear_users?vdom=V`` ``{"ip_addresses": [...]}``.
- ``POST user/banned/clear_all?vdom=V``.
- ``GET user/banned/check?vdom=V&ip_address=X``: ``{"ip_address", "is_banned"}``.
- ``GET system/external-resource/entry-list?mkey=F[&start=&count=]``: what a threat feed
  (``SimDevice.add_feed``) holds, shaped like the v7.4.2 fixture.
- ``POST system/external-resource/refresh?mkey=F``: fetch a pull feed now
  (``SimDevice.refresh_feed``: loopback URLs only, a real HTTP GET like the FortiGate's curl).
- ``POST system/external-resource/dynamic`` ``{"commands": [...]}``: push feeds (7.2.1+).

Bad write bodies get 400 ``{"status": "error", "http_status": 400, "error": -1}``; unknown
vdoms and feeds get 404 with ``"error": -3``.

Fault modes (``SimDevice.fault``), checked after ``latency`` and before anything else:

- every endpoint: ``401`` (HTML, even with a good token), ``403``/``404``/``424``/``429``
  (JSON error; 429 with ``Retry-After: 60``), ``500`` (HTML), ``html`` (a 200 login page),
  ``timeout`` (hang ``timeout_delay`` seconds, then answer), ``reset`` (TCP RST).
- the banned list only: ``truncated`` (half the JSON), ``invalid`` (garbage entries added),
  ``shape`` (``results`` is not a list), ``huge`` (padded to ``huge_bytes``). Other endpoints
  answer normally under these.

Every request is counted in ``SimDevice.requests`` and recorded in ``SimDevice.calls``.

It deliberately shares no code with banfeed's client: a simulator that reused the client's
parsing or models would agree with the client's bugs instead of exposing them.

Only IP literals are accepted as bind addresses and feed URLs must name 127.0.0.1, ::1 or
localhost, so no other name is ever resolved and nothing is fetched off this machine; the
default bind address is 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hashlib
import hmac
import ipaddress
import itertools
import json
import random
import signal
import socket
import ssl
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import EllipsisType, FrameType
from typing import Any, Final

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
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
FEED_LIMIT = 131_072  # entries per feed before FortiOS 7.4.4
_API = "/api/v2/monitor"
_PATH = _API + "/user/banned"
_FEEDS = _API + "/system/external-resource"
_RAW_SEND = "banfeed.simulator.raw_send"
_HTML_401 = "<html><head><title>401 Unauthorized</title></head><body>Unauthorized</body></html>"
_HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>Error</body></html>"
_HTML_LOGIN = "<html><body>Please login</body></html>"
# TEST-NET-3: the one "valid" address in the invalid-fault extras, so even a client that
# wrongly accepts created="yesterday" can never push a real host into a feed.
_BAD_CREATED_IP = "203.0.113.77"
_HUGE_PAD_IP = "192.0.2.1"
_BODY_FAULTS = ("none", "truncated", "invalid", "shape", "huge")  # banned list only
_NOT_JSON: Final = object()  # request body absent or not JSON
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
_FETCH_TIMEOUT = 5.0
_CALLS_KEPT = 100_000  # SimDevice.calls drops its oldest half when it grows past this
_ENTRY_PAGE = 100  # entry-list entries per answer unless ?count= says otherwise


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


@functools.lru_cache(maxsize=1 << 17)
def _ip_key(ip: str) -> str:
    # Text to compare entries by: valid IPv4 text is already canonical (ipaddress refuses
    # leading zeros), IPv6 comes in many spellings. Invalid text is returned unchanged.
    if ":" not in ip:
        return ip
    try:
        return str(ipaddress.IPv6Address(ip))
    except ValueError:
        return ip


# -- threat feeds ("config system external-resource", type address) ---------------------------


@dataclass
class _Feed:
    url: str
    username: str | None
    password: str | None
    push: bool
    verify: ssl.SSLContext | bool
    entries: dict[str, str] = field(default_factory=dict)  # canonical -> text as received
    invalid: list[str] = field(default_factory=list)  # invalid lines since the last snapshot
    overflow: int = 0  # valid entries dropped over the device's feed_limit
    http_status_code: int = 0  # of the last fetch; 0: connection failed, or never fetched
    etag: str | None = None
    last_content_update_time: float | None = None
    conn_attempt_time: float | None = None
    fetches: int = 0

    def update(self, texts: Iterable[str], command: str, limit: int) -> None:
        """Apply lines or pushed entries; invalid ones are counted, never fatal."""
        if command == "snapshot":
            self.entries, self.invalid, self.overflow = {}, [], 0
        for text in texts:
            key = _feed_entry(text)
            if key is None:
                self.invalid.append(text)
            elif command == "remove":
                self.entries.pop(key, None)
            elif key not in self.entries:  # duplicates collapse (a guess; not counted)
                if len(self.entries) < limit:
                    self.entries[key] = text
                else:  # FortiOS drops the newest entries over the limit
                    self.overflow += 1


def _feed_entry(text: str) -> str | None:
    """Canonical form of one feed line (IP, CIDR/prefix or a-b range), None if invalid."""
    if "%" in text:  # ipaddress accepts IPv6 scope ids; a FortiGate surely does not
        return None
    try:
        if "-" in text:
            first, _, last = text.partition("-")
            low, high = ipaddress.ip_address(first), ipaddress.ip_address(last)
            if low.version != high.version or int(low) > int(high):
                return None
            return f"{low}-{high}"
        if "/" in text:
            # Host bits may be set: the v7.4.2 fixture lists "172.200.1.4/16" as valid.
            return str(ipaddress.ip_network(text, strict=False))
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _check_loopback(url: str) -> None:
    """Refuse any feed URL that could make the simulator talk to another machine."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise ValueError(f"bad feed URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or parsed.host not in _LOOPBACK_HOSTS:
        raise ValueError(f"feed URL {url!r}: only http(s) to {_LOOPBACK_HOSTS} is fetched")


def _fetch(feed: _Feed, url: str) -> tuple[int, str | None, bytes | None]:
    """GET the feed like a FortiGate's curl: (status, ETag, body if 2xx); status 0: no answer."""
    headers = {"User-Agent": "curl/7.58.0", "Accept": "*/*"}
    if feed.etag is not None:
        headers["If-None-Match"] = feed.etag
    auth = None if feed.username is None else httpx.BasicAuth(feed.username, feed.password or "")
    # trust_env=False: an HTTP(S)_PROXY in the environment must not route this off the host.
    with httpx.Client(timeout=_FETCH_TIMEOUT, verify=feed.verify, trust_env=False) as client:
        # curl sends no Accept-Encoding unless --compressed (the FortiGate's flags: unverified).
        del client.headers["Accept-Encoding"]
        try:
            response = client.get(url, headers=headers, auth=auth)
        except httpx.HTTPError:
            return 0, None, None
    if not response.is_success:
        return response.status_code, None, None
    return response.status_code, response.headers.get("etag"), response.content


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
    requests: int = 0  # API requests received (counted on arrival, any outcome)
    ipv6_ratio: float = 0.1  # share of IPv6 among churned-in entries
    clock: Callable[[], float] = field(default=time.time, repr=False)
    rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)
    feed_limit: int = FEED_LIMIT  # entries per threat feed; the rest are dropped (overflow)
    # (method, path, JSON body, or the query dict when there is no body) of every request;
    # only the most recent ones are kept (see _CALLS_KEPT).
    calls: list[tuple[str, str, object]] = field(default_factory=list, repr=False)
    # Set to a set() to record every (vdom, canonical ip, created) ever served: the ground
    # truth a test compares a store with ("no offense lost or duplicated").
    ledger: set[tuple[str, str, int]] | None = field(default=None, repr=False)
    poll_times: list[float] = field(default_factory=list, repr=False)  # each banned-list answer
    # The server thread and test code mutate the lists concurrently.
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _feeds: dict[str, _Feed] = field(default_factory=dict, init=False, repr=False)

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
            entries = self._live(vdom)  # before _fresh, so dropped addresses count as free
            if self.churn > 0:
                del entries[: self.churn]
                entries.extend(self._fresh(self.churn, self.ipv6_ratio, None, DEFAULT_TTL))
            self.poll_times.append(self.clock())
            if self.ledger is not None:
                for e in entries:
                    try:
                        self.ledger.add((vdom, str(ipaddress.ip_address(e.ip)), e.created))
                    except ValueError:
                        pass  # deliberately invalid text: never an offense
            return [e.to_json() for e in entries]

    # -- administrative bans (add_users / clear_users / clear_all / check) ------------------

    def _live(self, vdom: str) -> list[SimEntry]:
        # Caller holds the lock. Expired entries are gone, as on a real device.
        now = self.clock()
        entries = [e for e in self.vdoms[vdom] if e.expires is None or e.expires > now]
        self.vdoms[vdom] = entries
        return entries

    def _ban(self, vdom: str, ips: Sequence[str], expiry: int) -> None:
        """Ban canonical ``ips``; one already listed gets its expiry replaced."""
        with self._lock:
            created = int(self.clock())
            expires = None if expiry == 0 else created + expiry
            wanted, todo = set(ips), dict.fromkeys(ips)  # todo: not listed yet, in order
            entries = self._live(vdom)
            for entry in entries:
                key = _ip_key(entry.ip)
                if key in wanted:
                    entry.expires = expires
                    todo.pop(key, None)
            entries.extend(SimEntry(ip, created, expires, "Administrative") for ip in todo)

    def _unban(self, vdom: str, ips: Sequence[str] | None) -> None:
        """Forget canonical ``ips`` (None: everything) in ``vdom``."""
        with self._lock:
            gone = set(ips or ())
            keep = [] if ips is None else [e for e in self._live(vdom) if _ip_key(e.ip) not in gone]
            self.vdoms[vdom] = keep

    def _is_banned(self, vdom: str, ip: str) -> bool:
        with self._lock:
            return any(_ip_key(e.ip) == ip for e in self._live(vdom))

    # -- threat feeds ---------------------------------------------------------------------

    def add_feed(
        self,
        name: str,
        *,
        url: str,
        username: str | None = None,
        password: str | None = None,
        push: bool = False,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """Configure an IP threat feed; an existing one of that name is replaced and empty.

        ``push``: ``set update-method push`` (7.2.1+), filled only by the ``dynamic`` endpoint.
        ``verify`` is for HTTPS feeds (a context trusting a test CA, or False).
        """
        with self._lock:
            self._feeds[name] = _Feed(url, username, password, push, verify)

    def refresh_feed(self, name: str) -> int:
        """Fetch a pull feed now, as the FortiGate does every refresh-rate; returns the status.

        2xx: the body replaces the entries (an empty body empties the feed). 304: nothing
        changes. Anything else, or 0 for no answer: the last good entries are kept. Raises
        KeyError for an unknown feed, ValueError for a push feed or a non-loopback URL.
        """
        with self._lock:
            feed = self._feeds[name]
            url = feed.url
        if feed.push:
            raise ValueError(f"feed {name!r} is a push feed: nothing to fetch")
        _check_loopback(url)
        attempt = self.clock()
        status, etag, body = _fetch(feed, url)
        lines = None if body is None else body.decode("utf-8", "replace").split("\n")
        with self._lock:
            feed.fetches += 1
            feed.conn_attempt_time, feed.http_status_code = attempt, status
            if lines is not None:
                feed.etag = etag
                texts = filter(None, (line.strip() for line in lines))  # blank lines ignored
                feed.update(texts, "snapshot", self.feed_limit)
                feed.last_content_update_time = self.clock()
        return status

    def feed_entries(self, name: str) -> set[str]:
        """Valid entries of a feed, canonical (ipaddress text; ranges as "a-b")."""
        with self._lock:
            return set(self._feeds[name].entries)

    def feed_status(self, name: str) -> dict[str, object]:
        """The feed's counters; ``overflow`` is the number of entries dropped, not a bool."""
        with self._lock:
            feed = self._feeds[name]
            return {
                "push": feed.push,
                "url": feed.url,
                "valid_count": len(feed.entries),
                "invalid_count": len(feed.invalid),
                "overflow": feed.overflow,
                "http_status_code": feed.http_status_code,
                "etag": feed.etag,
                "last_content_update_time": feed.last_content_update_time,
                "conn_attempt_time": feed.conn_attempt_time,
                "fetches": feed.fetches,
            }

    def _push(self, commands: Sequence[tuple[str, str, Sequence[str]]]) -> None:
        with self._lock:
            for name, command, entries in commands:
                feed = self._feeds[name]
                feed.update(entries, command, self.feed_limit)
                feed.last_content_update_time = self.clock()


# -- the ASGI app: routing by port, counting, latency, then auth and faults, then handlers --


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
        return _SimApp(routes=[self._route(*r) for r in _ROUTES])

    def _route(self, path: str, method: str, handler: _Handler, vdom_rule: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self._endpoint(request, handler, vdom_rule)

        return Route(path, endpoint, methods=[method])

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

    async def _endpoint(self, request: Request, handler: _Handler, vdom_rule: str) -> Response:
        device = self._device_for(request.scope)
        if device is None:
            return PlainTextResponse("no simulated device here", status_code=404)
        device.requests += 1
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)
        body = _loads(raw)
        if not raw:
            recorded: object = dict(request.query_params)
        else:
            recorded = raw.decode("utf-8", "replace") if body is _NOT_JSON else body
        device.calls.append((request.method, request.url.path, recorded))
        if len(device.calls) > _CALLS_KEPT:  # a long `banfeed simulate` must not grow forever
            del device.calls[: _CALLS_KEPT // 2]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if not await _sleep(request, device.latency):
                return Response(status_code=499)  # client gone: uvicorn sends nothing
            if (refused := await _refused(device, request)) is not None:
                return refused
            vdom = request.query_params.get("vdom") or "root"
            if vdom_rule != "any" and vdom not in device.vdoms:
                if vdom_rule == "known" or "vdom" in request.query_params:
                    return _error(404, -3, vdom=vdom)
            return await handler(device, request, body, vdom)
        finally:
            self.in_flight -= 1


# -- what every endpoint shares: auth, faults, FortiOS-shaped answers -------------------------

# (device, request, JSON body or _NOT_JSON, the vdom the query names) -> answer
_Handler = Callable[[SimDevice, Request, object, str], Awaitable[Response]]


async def _refused(device: SimDevice, request: Request) -> Response | None:
    """The answer when auth or a fault preempts the endpoint; None: go on and answer."""
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
    if fault == "reset":
        # After a real reset uvicorn drops this reply; in-process (no socket) it is the answer.
        await _reset(request)
        return Response(status_code=502)
    if fault == "timeout":
        if not await _sleep(request, device.timeout_delay):
            return Response(status_code=499)
    elif fault not in _BODY_FAULTS:
        return PlainTextResponse(f"unknown simulator fault {fault!r}", status_code=500)
    return None


def _loads(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else _NOT_JSON
    except ValueError:  # UnicodeDecodeError included
        return _NOT_JSON


def _error(status: int, error: int = -1, **extra: str) -> Response:
    return _json({"status": "error", "http_status": status, "error": error, **extra}, status)


def _done(device: SimDevice, vdom: str, path: str, name: str, action: str) -> Response:
    # No real body of a monitor POST answer was found; this is the GET shape minus results.
    body = {"http_method": "POST", "status": "success", "http_status": 200, "vdom": vdom}
    body |= {"path": path, "name": name, "action": action, "serial": device.serial}
    body |= {"version": device.version, "build": BUILD}
    return _json(body)


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


# -- GET user/banned[/select] ------------------------------------------------------------------


async def _banned(device: SimDevice, request: Request, _body: object, _vdom: str) -> Response:
    fault = device.fault
    if fault == "shape":
        return _json({"status": "success", "results": {"not": "a list"}})
    raw = request.query_params.get("vdom") or "root"
    if raw == "*":
        names = sorted(device.vdoms)
    else:
        names = [v for v in raw.split(",") if v]
    missing = [v for v in names if v not in device.vdoms]
    if missing or not names:
        body = {"status": "error", "http_status": 404, "error": -3, "vdom": ",".join(missing)}
        return _json(body, 404)
    action = "select" if request.url.path.rstrip("/").endswith("/select") else None
    objects = [_response_object(device, v, device._poll(v), action) for v in names]
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


def _response_object(
    device: SimDevice, vdom: str, results: object, action: str | None
) -> dict[str, Any]:
    """A GET answer of user/banned (``action``: "select", "check" or None for the plain list)."""
    obj: dict[str, Any] = {"http_method": "GET", "results": results, "vdom": vdom}
    obj |= {"path": "user", "name": "banned"}
    if action is not None:
        obj["action"] = action
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


# -- POST user/banned/add_users, clear_users, clear_all; GET user/banned/check ----------------


def _ip_list(body: object) -> list[str] | None:
    """Canonical text of ``body["ip_addresses"]``; None if absent, ill-typed or invalid."""
    ips = body.get("ip_addresses") if isinstance(body, dict) else None
    if not isinstance(ips, list) or not all(isinstance(ip, str) and "%" not in ip for ip in ips):
        return None
    try:
        return [str(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError:
        return None


async def _add_users(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    ips = _ip_list(body)
    expiry = body.get("expiry") if isinstance(body, dict) else None
    if ips is None or not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 0:
        return _error(400)
    device._ban(vdom, ips, expiry)
    return _done(device, vdom, "user", "banned", "add_users")


async def _clear_users(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    if (ips := _ip_list(body)) is None:
        return _error(400)
    device._unban(vdom, ips)
    return _done(device, vdom, "user", "banned", "clear_users")


async def _clear_all(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    device._unban(vdom, None)
    return _done(device, vdom, "user", "banned", "clear_all")


async def _check(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    given = request.query_params.get("ip_address", "")
    if (ips := _ip_list({"ip_addresses": [given]})) is None:
        return _error(400)
    results = {"ip_address": given, "is_banned": device._is_banned(vdom, ips[0])}
    return _json(_response_object(device, vdom, results, "check"))


# -- system/external-resource: entry-list, refresh, dynamic (push) ----------------------------


def _mkey(request: Request, body: object) -> str | None:
    mkey = request.query_params.get("mkey")
    if mkey is None and isinstance(body, dict) and isinstance(body.get("mkey"), str):
        mkey = body["mkey"]  # FortiOS monitor POSTs usually take parameters in the body
    return mkey or None


def _int_param(request: Request, name: str, default: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    return int(text) if text.isascii() and text.isdigit() else None


async def _entry_list(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    mkey, start = _mkey(request, None), _int_param(request, "start", 0)
    count = _int_param(request, "count", _ENTRY_PAGE)
    if mkey is None or start is None or count is None:
        return _error(400)
    count = count or _ENTRY_PAGE  # the fixture asked count=0 and got all 6: a guess either way
    with device._lock:
        feed = device._feeds.get(mkey)
        if feed is None:
            return _error(404, -3)
        lines = itertools.chain(
            ({"entry": text, "valid": True} for text in feed.entries.values()),
            ({"entry": text, "valid": False} for text in feed.invalid),
        )
        # Keys and order as in fixtures/external_resource_entry_list_v7.4.2.json.
        results = {
            "conn_attempt_time": int(feed.conn_attempt_time or 0),
            "entries": list(itertools.islice(lines, start, start + count)),
            "http_status_code": feed.http_status_code,
            "invalid_count": len(feed.invalid),
            "last_content_update_time": int(feed.last_content_update_time or 0),
            "overflow": feed.overflow > 0,
            "resource_file_status": (
                "downloaded" if feed.last_content_update_time is not None else "not-downloaded"
            ),
            "status": "success",
            "valid_count": len(feed.entries),
        }
    obj = {"action": "entry-list", "build": BUILD, "http_method": "GET"}
    obj |= {"name": "external-resource", "path": "system", "results": results}
    obj |= {"serial": device.serial, "status": "success", "vdom": vdom, "version": device.version}
    return _json(obj)


async def _refresh(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    if (mkey := _mkey(request, body)) is None:
        return _error(400)
    try:
        # In a thread: the feed may be served by this very event loop (or a slow server).
        await asyncio.to_thread(device.refresh_feed, mkey)
    except KeyError:
        return _error(404, -3)
    except ValueError:  # a push feed, or a URL the simulator will not fetch
        return _error(400)
    return _done(device, vdom, "system", "external-resource", "refresh")


def _commands(device: SimDevice, body: object) -> list[tuple[str, str, list[str]]] | None:
    commands = body.get("commands") if isinstance(body, dict) else None
    if not isinstance(commands, list) or not commands:
        return None
    out: list[tuple[str, str, list[str]]] = []
    for command in commands:
        if not isinstance(command, dict):
            return None
        name, verb, entries = command.get("name"), command.get("command"), command.get("entries")
        if verb not in ("add", "remove", "snapshot") or not isinstance(entries, list):
            return None
        if not isinstance(name, str) or not all(isinstance(e, str) for e in entries):
            return None
        feed = device._feeds.get(name)
        if feed is None or not feed.push:
            return None
        out.append((name, verb, entries))
    return out


async def _dynamic(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    with device._lock:
        commands = _commands(device, body)
    if commands is None:  # all commands are checked before any is applied
        return _error(400)
    device._push(commands)
    return _done(device, vdom, "system", "external-resource", "dynamic")


# vdom rule: "known" (default root, must exist: else 404), "given" (checked only when given:
# feeds are global objects here), "any" (the handler checks; the list takes "a,b" and "*").
_ROUTES: list[tuple[str, str, _Handler, str]] = [
    (_PATH, "GET", _banned, "any"),
    (_PATH + "/select", "GET", _banned, "any"),
    (_PATH + "/check", "GET", _check, "known"),
    (_PATH + "/add_users", "POST", _add_users, "known"),
    (_PATH + "/clear_users", "POST", _clear_users, "known"),
    (_PATH + "/clear_all", "POST", _clear_all, "known"),
    (_FEEDS + "/entry-list", "GET", _entry_list, "given"),
    (_FEEDS + "/refresh", "POST", _refresh, "given"),
    (_FEEDS + "/dynamic", "POST", _dynamic, "given"),
]


# -- serving: start() in a thread, serve_forever() in the foreground ------------------------


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
