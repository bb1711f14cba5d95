"""Validation of FortiOS answers: the banned (quarantine) list and threat-feed status.

Every byte from the device is checked here, once: the answer must be JSON of the documented
shape, and each entry becomes an :class:`Offense` or a :class:`Rejected` with its reason.
Failures raise a :class:`DeviceError` subclass naming the device and what to do.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address
from socket import AF_INET, inet_pton
from typing import Any

from ..errors import DeviceBadResponse, DeviceHTTPError, InputError
from ..models import Offense, Rejected, VdomList
from ..net import IPAddress, parse_address
from ..timeutil import iso
from .diff import Keys, entry_keys, remembered, seen_in

MAX_SOURCE_TEXT = 64
# Past this many invalid entries in one list, and once they outnumber the valid ones, the
# answer is refused (checked as entries are read): an entry as short as `1,` would otherwise
# cost a 150-byte Rejected record (a 256 MiB answer of them: 128 million, tens of GB).
MAX_REJECTED = 10_000
_LEADING_SPACE = re.compile(rb"[ \t\n\r]*")  # matched, not stripped: stripping copies the body

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


@dataclass(frozen=True, slots=True)
class FeedStatus:
    """A device's view of one threat feed it loads (``entry-list`` monitor)."""

    feed: str
    valid: int
    invalid: int
    overflow: bool  # FortiOS reports a flag (true when entries were dropped over its limit)
    http_status: int | None
    content_time: int | None
    attempt_time: int | None = None  # the device's last fetch attempt (None: never, or push)


def parse_banned(device: str, vdom: str, body: bytes | str, *, now: int) -> list[VdomList]:
    """Validate a ``user/banned`` answer: one response object, or an array of them per VDOM.

    ``now`` is banfeed's clock (epoch seconds): an entry whose ``created`` or ``expires`` lies
    outside the window around it is rejected alone, like a malformed address. ``body`` is the
    answer's bytes, or their text from :func:`banned_text`.
    """
    return banned_lists(device, vdom, load_banned(device, body), now=now)


def load_banned(device: str, body: bytes | str) -> Any:
    """The JSON document of a ``user/banned`` answer (its bytes, or their text)."""
    text = banned_text(device, body) if isinstance(body, bytes) else body
    return _load(device, text, "answer")


def banned_lists(device: str, vdom: str, document: Any, *, now: int) -> list[VdomList]:
    """The lists of a loaded ``user/banned`` document (see :func:`parse_banned`). Each entry's
    JSON object is released from the document as it becomes an offense."""
    return diffed_lists(device, vdom, document, now=now, known=None)[0]


def diffed_lists(
    device: str, vdom: str, document: Any, *, now: int, known: Keys | None
) -> tuple[list[VdomList], Keys]:
    """:func:`banned_lists` of an answer whose entries with a key in ``known`` (those of the
    last stored answer: see :mod:`.diff`) are counted as unchanged instead of parsed; and the
    keys of this answer's accepted entries, to pass as ``known`` next time."""
    objects = document if isinstance(document, list) else [document]
    keys: list[Keys] = []
    with gc_paused():
        lists = [_parse_object(device, vdom, obj, now, known, keys) for obj in objects]
    return lists, remembered(keys)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Python's cycle collector paused for a CPU-bound stretch of a large poll or write: its
    millions of new acyclic objects (offenses, addresses, rows) trigger full collections that
    find nothing — 6 s of a million-entry first ingest's 30. Reference counting still frees
    everything; the collector resumes after (if it was running)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def banned_text(device: str, body: bytes | bytearray) -> str:
    """The text of a ``user/banned`` answer, decoded exactly as ``json.loads`` decodes bytes.

    The client holds a large answer in one form at a time (78 MB of bytes at a million
    entries, the same again as text, then its JSON objects): it decodes, drops the bytes,
    loads, drops the text, then builds the offenses (:func:`banned_lists`).
    """
    match = _LEADING_SPACE.match(body)
    first = match.end() if match else 0
    if body[first : first + 1] == b"<":
        raise DeviceBadResponse(
            device, "answered an HTML page instead of JSON — check the URL and port"
        )
    try:
        return body.decode(json.detect_encoding(body), "surrogatepass")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text ({exc.reason} at byte {exc.start}) — check the URL and port"
    raise DeviceBadResponse(device, f"answer is {reason}")


def undecodable(exc: BaseException, size: int) -> str:
    """What a decoding failure of a device's JSON says, for the message that fails the device
    alone (``json`` raises more than ValueError on hostile bytes)."""
    if isinstance(exc, RecursionError):  # about a thousand nested `[` or `{"a":`
        return "nested too deeply to be a FortiOS answer — check the URL and the device"
    if isinstance(exc, MemoryError):
        return f"too large to parse in memory ({size:,} bytes) — lower max_response"
    if isinstance(exc, UnicodeDecodeError):  # before ValueError, which it is a kind of
        return f"not UTF-8 text ({exc.reason} at byte {exc.start}) — check the URL and port"
    if isinstance(exc, ValueError):  # bad JSON, or an integer over Python's 4,300-digit limit
        return f"not valid JSON ({str(exc)[:120]})"
    # numbers or values the decoder cannot hold
    return f"not parseable ({type(exc).__name__}: {str(exc)[:120]})"


def _load(device: str, body: bytes | bytearray | str, what: str) -> Any:
    """``json.loads`` of bytes a device sent: the document, or a :class:`DeviceBadResponse`.

    Hostile bytes make json.loads raise more than ValueError, and any of them escaping here
    would take the whole collection cycle down instead of this device alone: each is named.
    """
    try:
        return json.loads(body)
    except (RecursionError, MemoryError, ValueError, OverflowError, TypeError) as exc:
        reason = undecodable(exc, len(body))
    raise DeviceBadResponse(device, f"{what} is {reason}")


def _parse_object(
    device: str, requested: str, obj: Any, now: int, known: Keys | None, keys: list[Keys]
) -> VdomList:
    if not isinstance(obj, dict):
        raise DeviceBadResponse(device, f"wrong JSON shape: expected an object, got {_kind(obj)}")
    results = obj.get("results")
    vdom = checked_vdom(device, requested, obj, results)
    assert isinstance(results, list)
    batch = EntryBatch(device, vdom, now, known)
    batch.parse(results, 0)
    keys.append(batch.keys())
    return batch.result()


def checked_vdom(device: str, requested: str, obj: dict[str, Any], results: Any) -> str:
    """The VDOM of one response object, once it is known to be a list of entries: an error
    object, ``results`` that are no list or a bad ``vdom`` raise (in that order)."""
    if obj.get("status") == "error":
        status = obj.get("http_status")
        raise DeviceHTTPError(device, f"the device reported an error: {_short(obj)}", _int(status))
    if not isinstance(results, list):
        raise DeviceBadResponse(
            device, f"wrong JSON shape: 'results' should be a list, got {_kind(results)}"
        )
    vdom = obj.get("vdom", requested)
    if not isinstance(vdom, str) or not vdom or len(vdom) > 64 or not vdom.isprintable():
        raise DeviceBadResponse(device, f"wrong JSON shape: bad 'vdom' {_cut(vdom)!r}")
    return vdom


class EntryBatch:
    """The entries of one VDOM's list, parsed a batch at a time (the whole list at once, or
    slices of it as :mod:`.stream` reads them): offenses, rejections, accepted keys."""

    def __init__(self, device: str, vdom: str, now: int, known: Keys | None) -> None:
        self.device, self.vdom, self.now, self.known = device, vdom, now, known
        self.offenses: list[Offense] = []
        self.rejected: list[Rejected] = []
        self.sources: dict[str, str] = {}  # a list repeats a handful of causes: check each once
        self.unchanged = 0
        self._keys: list[Keys] = []

    def parse(self, results: list[Any], offset: int) -> None:
        """Parse ``results``, the entries numbered from ``offset``; empties the list."""
        device, vdom = self.device, self.vdom
        entry_key = entry_keys(vdom, results)
        accepted = seen_in(entry_key, self.known)  # unchanged entries, then every accepted one
        unchanged = int(accepted.sum())
        self.unchanged += unchanged
        todo = (~accepted).nonzero()[0].tolist() if unchanged else range(len(results))
        for index in todo:
            entry = results[index]
            # Each entry's dict is let go once it is an Offense: a million-entry answer is
            # never held as JSON objects and offenses at once.
            results[index] = None
            try:
                self.offenses.append(_parse_entry(device, vdom, entry, self.sources, self.now))
            except InputError as exc:
                self.rejected.append(Rejected(device, vdom, offset + index, str(exc)))
                if len(self.rejected) > max(MAX_REJECTED, len(self.offenses) + self.unchanged):
                    raise DeviceBadResponse(device, _mostly_invalid(self.rejected)) from None
            else:
                accepted[index] = True
        results.clear()  # the unchanged entries' dicts too
        self._keys.append(entry_key[accepted])

    def keys(self) -> Keys:
        return remembered(self._keys)

    def result(self) -> VdomList:
        return VdomList(self.vdom, self.offenses, self.rejected, self.unchanged)


def _mostly_invalid(rejected: list[Rejected]) -> str:
    return (
        f"more than {len(rejected) - 1:,} invalid entries, and more than valid ones: not a "
        f"quarantine list (the first: {rejected[0].reason[:120]}) — check the URL and the device"
    )


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
    # The device's text escaped (repr without its quotes): a newline or terminal escape in it
    # must not forge log lines or reach a terminal (tests/test_fuzz_parser.py).
    return ", ".join(f"{k}={repr(_cut(obj[k], 80))[1:-1]}" for k in keys if k in obj) or "no detail"


def parse_entry_list(device: str, feed: str, body: bytes | bytearray) -> FeedStatus:
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
        attempt_time=count("conn_attempt_time") or None,
    )
