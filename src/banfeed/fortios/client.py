"""The HTTP side of the FortiOS client: one device's connection, requests and their failures.

Failures raise a :class:`DeviceError` subclass naming the device and what to do. The token goes
in the ``Authorization`` header only — never in a URL (FortiOS's ``access_token`` parameter is
logged by proxies and disabled by default since 7.4.5). Every answer is checked by
:mod:`.parse`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from pydantic import SecretStr

from .. import __version__
from ..errors import (
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
)
from ..models import VdomList
from .diff import Keys
from .parse import (
    FeedStatus,
    _kind,
    _load,
    _short,
    banned_text,
    parse_entry_list,
)
from .scrub import Scrubber, scrub_logs
from .stream import streamed_lists

BANNED_PATH = "/api/v2/monitor/user/banned"
ENTRY_LIST_PATH = "/api/v2/monitor/system/external-resource/entry-list"
DYNAMIC_PATH = "/api/v2/monitor/system/external-resource/dynamic"

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

    def client(self) -> FortiOSClient:
        """The client the collector polls it with (a blocklist source brings its own)."""
        return FortiOSClient(self)


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
class BannedAnswer:
    lists: list[VdomList]
    fingerprint: str
    unchanged: bool  # byte-identical to ``known_fingerprint``: not parsed again
    keys: Keys | None = None  # the accepted entries' keys (see diff), for ``known_keys``


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
            headers={
                "User-Agent": f"banfeed/{__version__}",
                "Accept": "application/json",
                "Accept-Encoding": "gzip, deflate",  # what _read_limited decompresses
            },
        )
        return self

    async def __aexit__(self, *_exc: object) -> None:
        if self._client is not None:
            await self._client.aclose()

    async def banned(
        self,
        vdom: str,
        *,
        now: int,
        known_fingerprint: str | None = None,
        known_keys: Keys | None = None,
    ) -> BannedAnswer:
        """The quarantine list of ``vdom`` (``"*"`` for every VDOM); ``now`` (epoch seconds) is
        banfeed's clock, which every entry's times are checked against. With the fingerprint
        and keys of the last stored answer, an identical answer is not parsed and a changed
        one only in its changed entries (see :mod:`.diff`)."""
        body = await self._get(BANNED_PATH, {"vdom": vdom})
        fingerprint = hashlib.sha256(body).hexdigest()
        if fingerprint == known_fingerprint:
            return BannedAnswer([], fingerprint, unchanged=True)
        # A large answer is held as bytes, then as text, while its entries become offenses a
        # batch at a time: never as one tree of JSON objects (see stream).
        text = banned_text(self.target.name, body)
        del body
        lists, keys = streamed_lists(self.target.name, vdom, text, now=now, known=known_keys)
        return BannedAnswer(lists, fingerprint, unchanged=False, keys=keys)

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

    async def _get(self, path: str, params: dict[str, str]) -> bytearray:
        return await self._request("GET", path, params, None)

    async def _request(
        self, method: str, path: str, params: dict[str, str], content: bytes | None
    ) -> bytearray:
        name = self.target.name
        if self.target.token is None:
            raise DeviceConfigError(name, self.target.token_problem or "no token configured")
        assert self._client is not None, "use FortiOSClient as an async context manager"
        token = self.target.token.get_secret_value()
        headers = {"Authorization": f"Bearer {token}"}
        if content is not None:
            headers["Content-Type"] = "application/json"
        scrub = scrub_logs(token)
        try:
            # httpx's timeout bounds each read, not the request: a device that sends a byte a
            # second (headers or body) or an endless chunked body would hold the whole cycle.
            # One deadline covers connect, headers and body; httpx's own stays for the rest.
            async with asyncio.timeout(self.target.timeout):
                # A device or a proxy in front of it may echo the request, Authorization
                # header included: every byte it sends is scrubbed of the token before any of
                # it can reach a message, a log line or the store.
                body = await self._exchange(method, path, params, headers, content, scrub)
                return scrub.body(body)
        except DeviceError as exc:
            raise scrub.error(exc) from None
        except (TimeoutError, httpx.TimeoutException):
            raise DeviceTimeout(
                name,
                f"no complete answer within {self.target.timeout:g}s (connect, headers and "
                "body) — is the device overloaded?",
            ) from None
        except httpx.TransportError as exc:
            raise scrub.error(_transport_error(name, self.target.url, exc)) from None

    async def _exchange(
        self,
        method: str,
        path: str,
        params: dict[str, str],
        headers: dict[str, str],
        content: bytes | None,
        scrub: Scrubber,
    ) -> bytearray:
        assert self._client is not None
        async with self._client.stream(
            method, path, params=params, headers=headers, content=content
        ) as resp:
            if resp.status_code != 200:
                if _small(resp):  # read (not decompressed) so the connection can be reused
                    async for _chunk in resp.aiter_raw():
                        pass
                raise _status_error(self.target.name, resp, scrub)
            return await self._read_limited(resp)

    async def _read_limited(self, resp: httpx.Response) -> bytearray:
        """The body, decompressed, refused as soon as it is larger than ``max_response``: read
        into one buffer (no list of chunks joined into a second copy), and decompressed by
        at most what the limit leaves, so a gzip bomb never inflates past it."""
        name, limit = self.target.name, self.target.max_response
        declared = resp.headers.get("content-length")
        if declared is not None and _digits(declared) and int(declared) > limit:
            raise DeviceBadResponse(name, _too_large(int(declared), limit))
        inflate = _decompressor(name, resp.headers.get("content-encoding", ""))
        body = bytearray()
        async for chunk in resp.aiter_raw():
            data = chunk if inflate is None else inflate.decompress(chunk, limit + 1 - len(body))
            while True:
                body += data
                if len(body) > limit:
                    raise DeviceBadResponse(name, _too_large(len(body), limit))
                if inflate is None or not inflate.unconsumed_tail:
                    break
                data = inflate.decompress(inflate.unconsumed_tail, limit + 1 - len(body))
        if inflate is not None:
            if not inflate.eof:
                raise DeviceBadResponse(name, "compressed answer cut short — check the device")
            body += inflate.flush()
        return body


def _decompressor(name: str, encoding: str) -> zlib._Decompress | None:
    """A decompressor for the answer's Content-Encoding: gzip and deflate (all banfeed asks
    for), None for an uncompressed answer."""
    coding = encoding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":  # zlib-wrapped, as RFC 9110 says (a raw stream is refused)
        return zlib.decompressobj(zlib.MAX_WBITS)
    raise DeviceBadResponse(name, f"unsupported Content-Encoding {coding[:40]!r}")


def _small(resp: httpx.Response) -> bool:
    declared = resp.headers.get("content-length", "")
    return _digits(declared) and int(declared) < 65536


def _digits(text: str) -> bool:
    # str.isdigit() accepts "²" and other Unicode digits that int() refuses.
    return text.isascii() and text.isdigit()


def _too_large(size: int, limit: int) -> str:
    return f"answer larger than max_response ({size:,} > {limit:,} bytes) — raise max_response"


def _status_error(name: str, resp: httpx.Response, scrub: Scrubber) -> DeviceHTTPError:
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
        target = scrub.text(resp.headers.get("location", "?"))  # before it is cut
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
