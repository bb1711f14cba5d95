"""A fleet of fake FortiGates speaking the parts of the FortiOS REST API banfeed uses.

banfeed's poller must be tested against something that behaves like real FortiOS, including
the ugly parts: HTML error pages, 401/429 lock-outs, hung connections, resets, truncated or
absurdly large bodies and entries whose ``ip_address`` is garbage. Real devices cannot be made
to misbehave on demand, so this module serves the documented response shapes (see the
fixtures in the FortiOS notes) from an in-process uvicorn server, one listening socket per
simulated device, with faults, latency, expiry and churn switchable per device at run time.

Endpoints (under ``/api/v2/monitor`` unless said; Bearer token only, ``?access_token=`` is
refused):

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
- ``GET|POST /api/v2/cmdb/system/external-resource``, ``GET|PUT|DELETE …/<name>``: the feeds
  as ``config system external-resource`` objects (``cmdb_endpoints``). A pull feed configured
  with ``refresh_every`` (the CMDB's ``refresh-rate`` minutes) is fetched at once, then on that
  schedule, by a running simulator's refresher thread, as a FortiGate does.

Bad write bodies get 400 ``{"status": "error", "http_status": 400, "error": -1}``; unknown
vdoms and feeds get 404 with ``"error": -3``.

Fault modes (``SimDevice.fault``), checked after ``latency`` and before anything else:

- every endpoint: ``401`` (HTML, even with a good token), ``403``/``404``/``424``/``429``
  (JSON error; 429 with ``Retry-After: 60``), ``500`` (HTML), ``503`` (HTML,
  ``Retry-After: 30``), ``html`` (a 200 login page),
  ``timeout`` (hang ``timeout_delay`` seconds, then answer), ``reset`` (TCP RST).
- every endpoint, slowly (one step every ``drip_interval`` seconds, 1 by default: never quiet
  for as long as a sensible read timeout, so only a deadline on the whole request ends them):
  ``drip`` (the normal 200 answer, its body one byte a step; a write is applied first),
  ``drip-headers`` (the status line and headers one byte a step, written to the socket
  directly, then the body; in-process, with no socket, it drips the body instead),
  ``slow-chunked`` (a 200 chunked body that never ends: the start of a banned list, then one
  small entry a step; nothing is written).
- every endpoint: ``nested`` (a 200 JSON body of 100,000 nested ``[``; nothing is written).
- every endpoint: ``echo`` (a 200 FortiOS error object whose ``cli_error`` echoes the request
  line and headers, ``Authorization`` included, as a helpful proxy might), ``echo-redirect``
  (a 302 whose ``Location`` carries the same, URL-encoded), ``gzip-bomb`` (a gzip body, about
  a thousandth of ``huge_bytes``, that inflates to ``huge_bytes`` of spaces); nothing is
  written.
- the banned list only: ``truncated`` (half the JSON), ``invalid`` (garbage entries added),
  ``shape`` (``results`` is not a list), ``huge`` (padded to ``huge_bytes``), ``bad-time``
  (entries whose ``created`` is in year 3000, negative, a float or before 2000, or whose
  ``expires`` is in year 3000 or before 2000, added beside the valid ones). Other endpoints
  answer normally under these.

Every request is counted in ``SimDevice.requests`` and recorded in ``SimDevice.calls``.

It deliberately shares no code with banfeed's client: a simulator that reused the client's
parsing or models would agree with the client's bugs instead of exposing them.

Only IP literals are accepted as bind addresses and feed URLs must name 127.0.0.1, ::1 or
localhost, so no other name is ever resolved and nothing is fetched off this machine; the
default bind address is 127.0.0.1.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import ipaddress
import random
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import EllipsisType

from .constants import BUILD as BUILD
from .constants import DEFAULT_TTL, FAULTS, FEED_LIMIT, SOURCES
from .feeds import _Feed, _ThreatFeeds

__all__ = ["DEFAULT_TTL", "FAULTS", "FEED_LIMIT", "SOURCES", "SimDevice", "SimEntry"]


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


@dataclass(eq=False)
class SimDevice(_ThreatFeeds):
    """One simulated FortiGate. Attributes may be changed while the simulator runs."""

    name: str
    token: str
    vdoms: dict[str, list[SimEntry]] = field(default_factory=lambda: {"root": []})
    fault: str = "none"
    latency: float = 0.0
    churn: int = 0
    timeout_delay: float = 30.0
    drip_interval: float = 1.0  # seconds between two bytes (drip*) or chunks (slow-chunked)
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
