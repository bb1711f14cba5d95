"""Async FortiOS REST client: the banned (quarantine) list of one device, typed and validated.

Every byte from the device is checked here, once: the answer must be JSON of the documented
shape, and each entry becomes an :class:`Offense` or a :class:`Rejected` with its reason.
Failures raise a :class:`DeviceError` subclass naming the device and what to do. The token goes
in the ``Authorization`` header only — never in a URL (FortiOS's ``access_token`` parameter is
logged by proxies and disabled by default since 7.4.5).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from socket import AF_INET, inet_pton
from typing import Any

import httpx
from pydantic import SecretStr

from . import __version__
from .errors import (
    DeviceAuthError,
    DeviceBadResponse,
    DeviceConfigError,
    DeviceError,
    DeviceHTTPError,
    DeviceNotFoundError,
    DevicePermissionError,
    DeviceRateLimited,
    DeviceServerError,
    DeviceTimeout,
    DeviceTLSError,
    DeviceUnavailableError,
    DeviceUnreachable,
    InputError,
)
from .models import Offense, Rejected, VdomList
from .net import IPAddress, parse_address
from .timeutil import iso

BANNED_PATH = "/api/v2/monitor/user/banned"
ENTRY_LIST_PATH = "/api/v2/monitor/system/external-resource/entry-list"
DYNAMIC_PATH = "/api/v2/monitor/system/external-resource/dynamic"
MAX_SOURCE_TEXT = 64

# The window of times a device may send (epoch seconds, checked per entry against banfeed's
# clock). A time outside it is a wrong device clock or garbage, and stored it would do harm:
# retention counts from the last offense, so a `created` in year 3000 publishes an address for
# a thousand years and counts as its most recent offense for ever; an `expires` centuries
# ahead is stored, shown and exported as if it were a real quarantine.
EARLIEST = 946_684_800  # 2000-01-01T00:00:00Z: FortiOS has no quarantine list before that
# A day covers a device whose clock is off by a time zone (at most 14 h) and no more.
FUTURE_SKEW = 86_400
# A sensor's quarantine-expiry is at most 364d23h59m; an administrative ban can be longer (the
# v7.2.5 fixture has one 8.5 years ahead) and one without expiry has no `expires` at all. Ten
# years ahead is no real expiry.
EXPIRES_AHEAD = 10 * 365 * 86_400
_SHOWABLE = 253_402_300_799  # 9999-12-31T23:59:59Z, the last second ISO-8601 can show

_STATUS_ERRORS: dict[int, tuple[type[DeviceHTTPError], str]] = {
    401: (
        DeviceAuthError,
        "token refused (401) — check the token, and that this host is in the REST API "
        "admin's trusted hosts; polling is backed off",
    ),
    403: (DevicePermissionError, "forbidden (403) — give the API admin's profile read access"),
    404: (DeviceNotFoundError, "not found (404) — check the URL, port and VDOM name"),
    424: (DeviceUnavailableError, "feature unavailable (424) on this device or VDOM"),
    429: (
        DeviceRateLimited,
        "too many requests (429): this source is locked out after failed logins; "
        "polling is backed off",
    ),
}


@dataclass(frozen=True, slots=True)
class DeviceTarget:
    """Everything needed to poll one FortiGate; built from config by the composition root."""

    name: str
    url: str
    token: SecretStr | None
    vdoms: tuple[str, ...] = ("root",)
    verify_tls: bool = True
    ca_file: Path | None = None
    timeout: float = 10.0
    max_response: int = 256 * 1024**2
    token_problem: str | None = None  # why the token could not be read, if it could not

    def __repr__(self) -> str:  # never show the token
        return f"DeviceTarget(name={self.name!r}, url={self.url!r}, vdoms={self.vdoms!r})"


_CONTEXTS: dict[tuple[bool, str | None, float], ssl.SSLContext] = {}


def _ssl_context(verify: bool, ca_file: Path | None) -> ssl.SSLContext:
    """One TLS context per (verify, CA file) for the whole process: building one loads the
    system's CA bundle (~25 ms), which per device and cycle was most of a quiet cycle."""
    mtime = ca_file.stat().st_mtime if verify and ca_file is not None else 0.0
    key = (verify, str(ca_file) if verify and ca_file else None, mtime)
    context = _CONTEXTS.get(key)
    if context is None:
        if not verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif ca_file is not None:
            context = ssl.create_default_context(cafile=str(ca_file))
        else:
            context = ssl.create_default_context()
        _CONTEXTS[key] = context
    return context


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A device's view of one threat feed it loads (``entry-list`` monitor)."""

    feed: str
    valid: int
    invalid: int
    overflow: bool  # FortiOS reports a flag (true when entries were dropped over its limit)
    http_status: int | None
    content_time: int | None


@dataclass(frozen=True, slots=True)
class BannedAnswer:
    lists: list[VdomList]
    fingerprint: str
    unchanged: bool  # byte-identical to ``known_fingerprint``: not parsed again


class FortiOSClient:
    """One device's client; use as ``async with FortiOSClient(target) as client``."""

    def __init__(self, target: DeviceTarget) -> None:
        self.target = target
        self._client: httpx.AsyncClient | None = None

    async def __aenter__(self) -> FortiOSClient:
        try:
            verify = _ssl_context(self.target.verify_tls, self.target.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise DeviceConfigError(
                self.target.name, f"ca_file {self.target.ca_file}: cannot load: {exc}"
            ) from None
        self._client = httpx.AsyncClient(
            base_url=self.target.url,
            verify=verify,
            timeout=self.target.timeout,
            follow_redirects=False,
            trust_env=False,  # no proxy from the environment: devices are reached directly
            headers={"User-Agent": f"banfeed/{__version__}", "Accept": "application/json"},
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def banned(
        self, vdom: str, *, now: int, known_fingerprint: str | None = None
    ) -> BannedAnswer:
        """The quarantine list of ``vdom`` (``"*"`` for every VDOM); ``now`` (epoch seconds) is
        banfeed's clock, which every entry's times are checked against."""
        body = await self._get(BANNED_PATH, {"vdom": vdom})
        fingerprint = hashlib.sha256(body).hexdigest()
        if fingerprint == known_fingerprint:
            return BannedAnswer([], fingerprint, unchanged=True)
        lists = parse_banned(self.target.name, vdom, body, now=now)
        return BannedAnswer(lists, fingerprint, unchanged=False)

    async def add_users(self, addresses: Sequence[str], expiry: int, vdom: str = "root") -> None:
        """Quarantine ``addresses`` for ``expiry`` seconds (0: no expiry) on this device."""
        body = {"ip_addresses": list(addresses), "expiry": max(0, expiry)}
        await self._post(f"{BANNED_PATH}/add_users", {"vdom": vdom}, body)

    async def clear_users(self, addresses: Sequence[str], vdom: str = "root") -> None:
        """Release ``addresses`` from this device's quarantine."""
        await self._post(
            f"{BANNED_PATH}/clear_users", {"vdom": vdom}, {"ip_addresses": list(addresses)}
        )

    async def push_feed(self, feed: str, command: str, entries: Sequence[str]) -> None:
        """Send ``snapshot``/``add``/``remove`` to a threat feed with ``update-method push``."""
        body = {"commands": [{"name": feed, "command": command, "entries": list(entries)}]}
        await self._post(DYNAMIC_PATH, {}, body)

    async def feed_status(self, feed: str) -> FeedStatus:
        """What the device loaded from threat feed ``feed`` (external resource ``mkey``)."""
        body = await self._get(ENTRY_LIST_PATH, {"mkey": feed})
        return parse_entry_list(self.target.name, feed, body)

    async def _post(self, path: str, params: dict[str, str], body: dict[str, Any]) -> None:
        answer = await self._request("POST", path, params, json.dumps(body).encode())
        document = _load(self.target.name, answer, f"{path}: answer") if answer.strip() else {}
        if not isinstance(document, dict) or document.get("status", "success") != "success":
            detail = _short(document) if isinstance(document, dict) else _kind(document)
            raise DeviceBadResponse(self.target.name, f"{path}: not a success ({detail})")

    async def _get(self, path: str, params: dict[str, str]) -> bytes:
        return await self._request("GET", path, params, None)

    async def _request(
        self, method: str, path: str, params: dict[str, str], content: bytes | None
    ) -> bytes:
        name = self.target.name
        if self.target.token is None:
            raise DeviceConfigError(name, self.target.token_problem or "no token configured")
        assert self._client is not None, "use FortiOSClient as an async context manager"
        headers = {"Authorization": f"Bearer {self.target.token.get_secret_value()}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        try:
            # httpx's timeout bounds each read, not the request: a device that sends a byte a
            # second (headers or body) or an endless chunked body would hold the whole cycle.
            # One deadline covers connect, headers and body; httpx's own stays for the rest.
            async with asyncio.timeout(self.target.timeout):
                return await self._exchange(method, path, params, headers, content)
        except (TimeoutError, httpx.TimeoutException):
            raise DeviceTimeout(
                name,
                f"no complete answer within {self.target.timeout:g}s (connect, headers and "
                "body) — is the device overloaded?",
            ) from None
        except httpx.TransportError as exc:
            raise _transport_error(name, self.target.url, exc) from None

    async def _exchange(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        content: bytes | None,
    ) -> bytes:
        assert self._client is not None
        async with self._client.stream(
            method, path, params=params, headers=headers, content=content
        ) as resp:
            if resp.status_code != 200:
                await resp.aread() if _small(resp) else None
                raise _status_error(self.target.name, resp)
            return await self._read_limited(resp)

    async def _read_limited(self, resp: httpx.Response) -> bytes:
        limit = self.target.max_response
        declared = resp.headers.get("content-length")
        if declared is not None and _digits(declared) and int(declared) > limit:
            raise DeviceBadResponse(self.target.name, _too_large(int(declared), limit))
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > limit:
                raise DeviceBadResponse(self.target.name, _too_large(size, limit))
            chunks.append(chunk)
        return b"".join(chunks)


def _small(resp: httpx.Response) -> bool:
    declared = resp.headers.get("content-length", "")
    return _digits(declared) and int(declared) < 65536


def _digits(text: str) -> bool:
    # str.isdigit() accepts "²" and other Unicode digits that int() refuses.
    return text.isascii() and text.isdigit()


def _too_large(size: int, limit: int) -> str:
    return f"answer larger than max_response ({size:,} > {limit:,} bytes) — raise max_response"


def _status_error(name: str, resp: httpx.Response) -> DeviceHTTPError:
    status = resp.status_code
    retry_after: float | None = None
    value = resp.headers.get("retry-after", "")
    if _digits(value):
        retry_after = float(value)
    if status in _STATUS_ERRORS:
        cls, message = _STATUS_ERRORS[status]
        return cls(name, message, status, retry_after)
    if 500 <= status < 600:
        return DeviceServerError(name, f"device error ({status}) — retried next cycle", status)
    if 300 <= status < 400:
        target = resp.headers.get("location", "?")
        return DeviceHTTPError(
            name,
            f"redirected ({status}) to {target[:100]} — use the admin URL it points to",
            status,
        )
    return DeviceHTTPError(name, f"unexpected HTTP status {status}", status)


def _transport_error(name: str, url: str, exc: httpx.TransportError) -> DeviceError:
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return DeviceTLSError(
                name,
                f"certificate not trusted ({cause.verify_message}) — set ca_file to the "
                "device's CA, or verify_tls = false for a lab",
            )
        if isinstance(cause, ssl.SSLError):
            return DeviceTLSError(name, f"TLS handshake failed ({cause.reason}) — is {url} HTTPS?")
        cause = cause.__cause__ or cause.__context__
    text = str(exc) or type(exc).__name__
    if isinstance(exc, httpx.ConnectError):
        return DeviceUnreachable(name, f"cannot connect to {url}: {text}")
    return DeviceUnreachable(name, f"connection to {url} failed: {text}")


# -- parsing ----------------------------------------------------------------------------------


def parse_banned(device: str, vdom: str, body: bytes, *, now: int) -> list[VdomList]:
    """Validate a ``user/banned`` answer: one response object, or an array of them per VDOM.

    ``now`` is banfeed's clock (epoch seconds): an entry whose ``created`` or ``expires`` lies
    outside the window around it is rejected alone, like a malformed address.
    """
    if body.lstrip()[:1] == b"<":
        raise DeviceBadResponse(
            device, "answered an HTML page instead of JSON — check the URL and port"
        )
    document = _load(device, body, "answer")
    objects = document if isinstance(document, list) else [document]
    return [_parse_object(device, vdom, obj, now) for obj in objects]


def _load(device: str, body: bytes, what: str) -> Any:
    """``json.loads`` of bytes a device sent: the document, or a :class:`DeviceBadResponse`.

    Hostile bytes make json.loads raise more than ValueError, and any of them escaping here
    would take the whole collection cycle down instead of this device alone: each is named.
    """
    try:
        return json.loads(body)
    except RecursionError:  # about a thousand nested `[` or `{"a":` exceed Python's limit
        reason = "nested too deeply to be a FortiOS answer — check the URL and the device"
    except MemoryError:
        reason = f"too large to parse in memory ({len(body):,} bytes) — lower max_response"
    except UnicodeDecodeError as exc:  # before ValueError, which it is a kind of
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start}) — check the URL and port"
    except ValueError as exc:  # bad JSON, or an integer over Python's 4,300-digit limit
        reason = f"not valid JSON ({str(exc)[:120]})"
    except (OverflowError, TypeError) as exc:  # numbers or values the decoder cannot hold
        reason = f"not parseable ({type(exc).__name__}: {str(exc)[:120]})"
    raise DeviceBadResponse(device, f"{what} is {reason}")


def _parse_object(device: str, requested: str, obj: Any, now: int) -> VdomList:
    if not isinstance(obj, dict):
        raise DeviceBadResponse(device, f"wrong JSON shape: expected an object, got {_kind(obj)}")
    if obj.get("status") == "error":
        status = obj.get("http_status")
        raise DeviceHTTPError(device, f"the device reported an error: {_short(obj)}", _int(status))
    results = obj.get("results")
    if not isinstance(results, list):
        raise DeviceBadResponse(
            device, f"wrong JSON shape: 'results' should be a list, got {_kind(results)}"
        )
    vdom = obj.get("vdom", requested)
    if not isinstance(vdom, str) or not vdom or len(vdom) > 64 or not vdom.isprintable():
        raise DeviceBadResponse(device, f"wrong JSON shape: bad 'vdom' {_cut(vdom)!r}")
    offenses: list[Offense] = []
    rejected: list[Rejected] = []
    sources: dict[str, str] = {}  # a list repeats a handful of causes: check each once
    for index, entry in enumerate(results):
        try:
            offenses.append(_parse_entry(device, vdom, entry, sources, now))
        except InputError as exc:
            rejected.append(Rejected(device, vdom, index, str(exc)))
    return VdomList(vdom, offenses, rejected)


def _parse_entry(device: str, vdom: str, entry: Any, sources: dict[str, str], now: int) -> Offense:
    if not isinstance(entry, dict):
        raise InputError(f"entry is {_kind(entry)}, not an object")
    text = entry.get("ip_address")
    ip = _fast_ipv4(text) or parse_address(text)
    flag = entry.get("ipv6")
    if flag is not None:
        if flag not in (0, 1) or isinstance(flag, float):
            raise InputError(f"ipv6 flag {_cut(flag, 20)!r} is not 0 or 1")
        if bool(flag) != (":" in str(text)):
            raise InputError(f"ipv6 flag {flag!r} contradicts address {text!r}")
    created = _created(entry.get("created"), now)
    expires = _expires(entry.get("expires"), now)
    raw = entry.get("source", "unknown")
    source = sources.get(raw) if isinstance(raw, str) else None
    if source is None:
        if not isinstance(raw, str) or not raw.isprintable() or len(raw) > MAX_SOURCE_TEXT:
            raise InputError(f"source {_cut(raw)!r} is not a short printable text")
        source = sources[raw] = raw.strip() or "unknown"
    return Offense(device, vdom, ip, created, expires, source)


def _fast_ipv4(text: Any) -> IPAddress | None:
    # Most entries are plain IPv4. The C library's inet_pton parses dotted quads exactly as
    # strictly as ipaddress (no leading zeros, spaces or short forms; a test checks they agree)
    # six times faster; ipaddress then builds the address from the four bytes. Anything
    # inet_pton refuses takes the general path, which decides.
    if isinstance(text, str) and 7 <= len(text) <= 15:
        try:
            return IPv4Address(inet_pton(AF_INET, text))
        except (OSError, ValueError):
            return None
    return None


def _created(value: Any, now: int) -> int:
    if value is None:
        raise InputError("created is missing")
    created = _epoch(value, "created")
    if created > now + FUTURE_SKEW:
        raise InputError(
            f"created {_when(created)} is more than a day ahead of banfeed's clock "
            f"({_date(now)}) — check the device's clock (NTP)"
        )
    return created


def _expires(value: Any, now: int) -> int | None:
    if value is None:  # absent: the device bans it with no expiry
        return None
    expires = _epoch(value, "expires")
    if expires > now + EXPIRES_AHEAD:
        raise InputError(
            f"expires {_when(expires)} is more than ten years ahead of banfeed's clock "
            f"({_date(now)}) — no FortiOS quarantine lasts that long"
        )
    return expires


def _epoch(value: Any, key: str) -> int:
    # bool is an int to Python and 1.8e9 a float to JSON: FortiOS sends neither as a time.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(f"{key} {_cut(value)!r} is not an epoch time in whole seconds")
    if value < EARLIEST:
        raise InputError(f"{key} {_when(value)} is before 2000-01-01: not a quarantine time")
    return value


def _when(epoch: int) -> str:
    """An epoch time a device sent: the number and, where ISO-8601 can show it, the date."""
    date = _date(epoch)
    return date if date == _cut(epoch) else f"{epoch} ({date})"


def _date(epoch: int) -> str:
    # datetime cannot show a time before 1970 or after 9999; those keep their number.
    return (iso(epoch) or "") if 0 <= epoch <= _SHOWABLE else _cut(epoch)


def _cut(value: Any, width: int = 40) -> str:
    """A device's value for a message: scalars cut to ``width`` characters, anything else by
    its type alone (the text of a list can be huge, or nested deep enough to overflow)."""
    if value is None or isinstance(value, str | int | float):
        return str(value)[:width]
    return f"<{_kind(value)}>"


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _short(obj: dict[str, Any]) -> str:
    keys = ("http_status", "error", "cli_error")
    return ", ".join(f"{k}={_cut(obj[k], 80)}" for k in keys if k in obj) or "no detail"


def parse_entry_list(device: str, feed: str, body: bytes) -> FeedStatus:
    """Validate an ``external-resource/entry-list`` answer into counts (all optional but typed)."""
    document = _load(device, body, "entry-list answer")
    results = document.get("results") if isinstance(document, dict) else None
    if isinstance(results, list) and len(results) == 1:
        results = results[0]
    if not isinstance(results, dict):
        raise DeviceBadResponse(device, f"entry-list: 'results' is {_kind(results)}")

    def count(*keys: str) -> int | None:
        for key in keys:
            value = results.get(key)
            if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
                return value
        return None

    return FeedStatus(
        feed=feed,
        valid=count("valid_count") or 0,
        invalid=count("invalid_count") or 0,
        overflow=bool(results.get("overflow")),
        http_status=count("http_status_code", "status_code"),
        content_time=count("last_content_update_time", "last_update_time"),
    )
