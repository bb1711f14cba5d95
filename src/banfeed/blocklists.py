"""Blocklists on a URL (``[[blocklists]]``), polled by the collector like a device.

A list is a :class:`BlocklistTarget` (a :class:`DeviceTarget` with the VDOM ``list``) whose
client answers like a FortiGate's (:class:`~.fortios.fortimanager.BannedSource`): the collector's
own per-device code then gives it back-off, status, answer fingerprints, rejects, metrics and
the write — allowlist, ``[safety] protect`` and never-block suppression included — unchanged.
Its offenses come from the device ``import:NAME`` with the list's ``cause``.

Offense times: an entry has none of its own, so its offense is dated by the ``ttl`` window it
was seen in (``now - now % ttl``). Every poll in one window lists the same offense again (stored
once); an entry still listed in the next window is a new offense, which renews the offender as
a FortiGate's new quarantine does. The answer's fingerprint covers the window, so an unchanged
list is still read once in each new window.

Formats: ``lines`` is the line format of ``banfeed import`` (:func:`.importing.entries`, the
same parser: comments, BOM, extra columns); ``crowdsec`` is the JSON of a CrowdSec LAPI
``GET /v1/decisions/stream?startup=true`` (``new`` decisions of scope ``Ip`` and type ``ban``).
A network or range is rejected (a network is an operator's ban: ``banfeed import`` or ``ban``).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from .config import beside
from .config.blocklists import BlocklistConfig
from .errors import (
    ConfigError,
    DeviceBadResponse,
    DeviceConfigError,
    DeviceError,
    DeviceTimeout,
    InputError,
)
from .fortios import BannedAnswer, DeviceTarget, FortiOSClient, Keys
from .fortios.client import _status_error, _transport_error
from .fortios.parse import MAX_REJECTED, undecodable
from .fortios.scrub import scrub_logs
from .importing import entries
from .models import Offense, Rejected, VdomList
from .net import IPAddress, parse_address

VDOM = "list"  # the one "VDOM" of a list: its status row is (import:NAME, list)
HTML = b"<"


@dataclass(frozen=True, slots=True, repr=False)
class BlocklistTarget(DeviceTarget):
    """One ``[[blocklists]]`` entry: ``url`` is the whole list URL, ``token`` the value of the
    ``header`` that authenticates (``Authorization: Bearer …`` or ``X-Api-Key``)."""

    header: str | None = None
    format: str = "lines"
    cause: str = "import"
    ttl: int = 30 * 86400
    interval: int | None = None  # poll at most this often; None: every cycle
    max_entries: int = 1_000_000
    # The last fetch of this process: (time, ttl window, fingerprint), for ``interval``.
    last: dict[str, tuple[int, int, str]] = field(default_factory=dict, compare=False)

    def __repr__(self) -> str:  # never show the secret
        return f"BlocklistTarget(name={self.name!r}, url={self.url!r})"

    def client(self) -> BlocklistClient:
        return BlocklistClient(self)


def targets_from(sections: Sequence[BlocklistConfig], base_dir: Path) -> list[DeviceTarget]:
    """One target per ``[[blocklists]]``; a secret that cannot be read fails that list alone."""
    built: list[DeviceTarget] = []
    for item in sections:
        header, secret, problem = None, None, None
        try:
            found = item.secret_header(base_dir)
        except ConfigError as exc:
            problem = str(exc)
        else:
            if found is not None:
                header, secret = found
        ca_file = None if item.ca_file is None else beside(item.ca_file, base_dir)
        built.append(
            BlocklistTarget(
                name=item.device,
                url=item.url,
                token=secret,
                vdoms=(VDOM,),
                verify_tls=item.verify_tls,
                ca_file=ca_file,
                timeout=float(item.timeout),
                max_response=item.max_response,
                token_problem=problem,
                header=header,
                format=item.format,
                cause=item.cause,
                ttl=item.ttl,
                interval=item.interval,
                max_entries=item.max_entries,
            )
        )
    return built


class BlocklistClient(FortiOSClient):
    """A list's client: the FortiOS client's connection, TLS, deadline, size limit and
    status errors, one GET of the list URL, and the list parsed into offenses."""

    target: BlocklistTarget

    def __init__(self, target: BlocklistTarget) -> None:
        super().__init__(target)

    async def banned(
        self,
        vdom: str,
        *,
        now: int,
        known_fingerprint: str | None = None,
        known_keys: Keys | None = None,
    ) -> BannedAnswer:
        t = self.target
        window = now - now % t.ttl
        last = t.last.get(vdom)
        if (
            last is not None
            and t.interval is not None
            and now - last[0] < t.interval
            and last[1] == window
            and last[2] == known_fingerprint
        ):
            return BannedAnswer([], last[2], unchanged=True)  # polled lately: not again yet
        body = await self._fetch()
        fingerprint = hashlib.sha256(b"%d\n" % window + body).hexdigest()
        t.last[vdom] = (now, window, fingerprint)
        if fingerprint == known_fingerprint:
            return BannedAnswer([], fingerprint, unchanged=True)
        return BannedAnswer([self._parse(vdom, body, window)], fingerprint, unchanged=False)

    async def _fetch(self) -> bytearray:
        """The list's bytes; a :class:`DeviceError` names what failed, the secret scrubbed."""
        t = self.target
        if t.token_problem is not None:
            raise DeviceConfigError(t.name, t.token_problem)
        assert self._client is not None, "use BlocklistClient as an async context manager"
        headers = {"Accept": "application/json" if t.format == "crowdsec" else "text/plain, */*"}
        url = t.url  # as written: httpx would replace its query by any params given
        if t.format == "crowdsec" and "startup=" not in url:  # every answer: every decision
            url += ("&" if "?" in url else "?") + "startup=true"
        secret = t.token.get_secret_value() if t.token is not None else ""
        if t.header is not None:
            headers[t.header] = f"Bearer {secret}" if t.header == "Authorization" else secret
        scrub = scrub_logs(secret)  # a server may echo the request: see fortios.scrub
        try:
            async with asyncio.timeout(t.timeout):  # connect, headers and body: one deadline
                async with self._client.stream("GET", url, headers=headers) as r:
                    if r.status_code != 200:
                        raise _status_error(t.name, r, scrub)
                    return scrub.body(await self._read_limited(r))
        except DeviceError as exc:
            raise scrub.error(exc) from None
        except (TimeoutError, httpx.TimeoutException):
            raise DeviceTimeout(
                t.name, f"no complete answer within {t.timeout:g}s (connect, headers and body)"
            ) from None
        except httpx.TransportError as exc:
            raise scrub.error(_transport_error(t.name, t.url, exc)) from None

    def _parse(self, vdom: str, body: bytearray, created: int) -> VdomList:
        t = self.target
        start = body.lstrip()[:1]
        if start == HTML:
            raise DeviceBadResponse(t.name, "answered an HTML page, not a list — check the URL")
        if t.format == "crowdsec":
            items = _decisions(t.name, body)
        else:
            text = body.decode("utf-8-sig", errors="replace")
            items = _lines(text.splitlines())
        found: dict[IPAddress, Offense] = {}
        rejected: list[Rejected] = []
        for number, value, error in items:
            if error is None:
                try:
                    ip = parse_address(value)
                except InputError as exc:
                    error = str(exc)
                else:
                    found.setdefault(ip, Offense(t.name, vdom, ip, created, None, t.cause))
                    if len(found) > t.max_entries:
                        raise DeviceBadResponse(
                            t.name, f"more than max_entries ({t.max_entries:,}) entries"
                        )
                    continue
            rejected.append(Rejected(t.name, vdom, number, error))
            if len(rejected) > max(MAX_REJECTED, len(found)):
                raise DeviceBadResponse(
                    t.name,
                    f"more than {MAX_REJECTED:,} invalid entries, and more than valid ones: not "
                    f"a list (the first: {rejected[0].reason[:120]}) — check the URL",
                )
        return VdomList(vdom, list(found.values()), rejected)


Item = tuple[int, str, str | None]  # (line or index, the address text, why it is no address)


def _lines(lines: list[str]) -> list[Item]:
    """The entries of a plain list, as ``banfeed import`` reads them."""
    items: list[Item] = []
    for entry in entries(lines):
        if entry.error is not None:
            items.append((entry.number, entry.entry, entry.error))
        elif entry.is_range or entry.networks[0].prefixlen != entry.networks[0].max_prefixlen:
            items.append((entry.number, entry.entry, _network(entry.entry)))
        else:
            items.append((entry.number, str(entry.networks[0].network_address), None))
    return items


def _network(text: str) -> str:
    return f"{text[:64]!r} is a network or range: a list brings addresses (ban networks)"


def _decisions(name: str, body: bytearray) -> list[Item]:
    """The ban decisions on addresses of a CrowdSec decision stream (``startup=true``)."""
    try:
        document: Any = json.loads(body)
    except (RecursionError, MemoryError, ValueError, OverflowError, TypeError) as exc:
        raise DeviceBadResponse(name, f"answer is {undecodable(exc, len(body))}") from None
    new = document.get("new") if isinstance(document, dict) else None
    if not isinstance(document, dict) or not isinstance(new, list | None):
        raise DeviceBadResponse(
            name, 'wrong JSON shape: expected {"new": [decisions…]} — is this /v1/decisions/stream?'
        )
    items: list[Item] = []
    for index, decision in enumerate(new or []):
        if not isinstance(decision, dict):
            items.append((index, "", "decision is not an object"))
            continue
        value, scope, kind = decision.get("value"), decision.get("scope"), decision.get("type")
        text = value if isinstance(value, str) else ""
        if not isinstance(scope, str) or scope.lower() != "ip":
            items.append((index, text, f"scope {str(scope)[:20]!r}: only Ip decisions are taken"))
        elif kind != "ban":
            items.append((index, text, f"type {str(kind)[:20]!r}: only ban decisions are taken"))
        else:
            items.append((index, text, None))
    return items
