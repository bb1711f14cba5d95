"""A feed's lines as arrays: each family's blocks as ``(start, prefix length)``, ascending.

Lines of a build are disjoint, so ordering by start is the feed's numeric order, and "which line
covers this address" is one binary search. The plain text of a million IPv4 lines is made by
numpy from a table of the 256 octets, not by formatting a million address objects; IPv6 lines
(the smaller set) are formatted by ``ipaddress``. Iterating gives ``ipaddress`` objects, for
the few callers that want them.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import Protocol, TypeVar

import numpy as np

from .. import spans
from ..net import IPAddress, IPNetwork
from ..spans import Array

Line = IPAddress | IPNetwork


class _HasIp(Protocol):
    @property
    def ip(self) -> IPAddress: ...


_T = TypeVar("_T", bound=_HasIp)
_I = TypeVar("_I")

_OCTETS = np.zeros((256, 3), dtype=np.uint8)  # right-aligned digits; 0 marks no character
for _value in range(256):
    _digits = str(_value).encode()
    _OCTETS[_value, 3 - len(_digits) :] = list(_digits)
_SUFFIX = np.zeros((33, 3), dtype=np.uint8)  # "/nn", none for /32
for _value in range(32):
    _text = f"/{_value}".encode()
    _SUFFIX[_value, : len(_text)] = list(_text)


def _ipv4_text(start: Array, length: Array) -> bytes:
    """``a.b.c.d[/n]\\n`` per block: a fixed 19-byte row each, then the unused bytes dropped."""
    rows = np.zeros((len(start), 19), dtype=np.uint8)
    octets = start.astype(">u4").view(np.uint8).reshape(-1, 4)
    for k in range(4):
        rows[:, 4 * k : 4 * k + 3] = _OCTETS[octets[:, k]]
        if k < 3:
            rows[:, 4 * k + 3] = ord(".")
    rows[:, 15:18] = _SUFFIX[length]
    rows[:, 18] = ord("\n")
    flat = rows.reshape(-1)
    return bytes(flat[flat != 0].tobytes())


@dataclass(frozen=True)
class Family:
    """One family's lines: ``start`` (the family's dtype) and ``length`` (int64), ascending."""

    version: int
    start: Array
    length: Array

    @classmethod
    def of(cls, version: int, start: Array | None = None, length: Array | None = None) -> Family:
        if start is None or length is None:
            return cls(version, spans.empty(version), np.empty(0, dtype=np.int64))
        return cls(version, start, length)

    def __len__(self) -> int:
        return len(self.start)

    def ends(self) -> Array:
        return spans.block_ends(self.start, self.length, self.version)

    def merged(self) -> tuple[Array, Array]:
        return spans.merge(self.start, self.ends())

    def keys(self) -> set[tuple[int, int]] | Array:
        """Comparable keys of the lines (for added / removed counts)."""
        if self.version == 4:
            return np.asarray(self.start, dtype=np.int64) * 64 + self.length
        return set(zip(self.start.tolist(), self.length.tolist(), strict=True))

    def text(self) -> bytes:
        if not len(self):
            return b""
        if self.version == 4:
            return _ipv4_text(self.start, self.length)
        out = []
        for start, length in zip(self.start.tolist(), self.length.tolist(), strict=True):
            address = IPv6Address(start)
            out.append(f"{address}\n" if length == 128 else f"{address}/{length}\n")
        return "".join(out).encode("ascii")

    def take(self, mask: Array) -> Family:
        return Family(self.version, self.start[mask], self.length[mask])


class Lines:
    """The lines of one feed: IPv4 blocks, then IPv6 blocks, each ascending and disjoint."""

    def __init__(self, v4: Family | None = None, v6: Family | None = None) -> None:
        self.v4 = v4 if v4 is not None else Family.of(4)
        self.v6 = v6 if v6 is not None else Family.of(6)

    @property
    def families(self) -> tuple[Family, Family]:
        return self.v4, self.v6

    def family(self, version: int) -> Family:
        return self.v4 if version == 4 else self.v6

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def __iter__(self) -> Iterator[Line]:
        for fam in self.families:
            full = spans.BITS[fam.version]
            make_address = IPv4Address if fam.version == 4 else IPv6Address
            make_network = IPv4Network if fam.version == 4 else IPv6Network
            for start, length in zip(fam.start.tolist(), fam.length.tolist(), strict=True):
                if length == full:
                    yield make_address(start)
                else:
                    yield make_network((start, length))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Lines):
            return NotImplemented
        return self.text() == other.text()

    __hash__ = None  # type: ignore[assignment]

    def text(self) -> bytes:
        """The plain feed: one address or CIDR a line, LF, IPv4 first, numeric order."""
        return self.v4.text() + self.v6.text()

    def line_for(self, ip: IPAddress) -> Line | None:
        """The line that covers ``ip``, or ``None`` (lines are disjoint: one binary search)."""
        fam = self.family(ip.version)
        value = int(ip)
        at = int(np.searchsorted(fam.start, value, side="right")) - 1
        if at < 0:
            return None
        start, length = int(fam.start[at]), int(fam.length[at])
        full = spans.BITS[ip.version]
        if value > start + (1 << (full - length)) - 1:
            return None
        if length == full:
            return IPv4Address(start) if ip.version == 4 else IPv6Address(start)
        return (IPv4Network if ip.version == 4 else IPv6Network)((start, length))

    def covered(self, offenders: Sequence[_T]) -> list[_T]:
        """The items of ``offenders`` whose address a line covers (in their order)."""
        return list(itertools.compress(offenders, self.mask(offenders)))

    def mask(self, offenders: Sequence[_HasIp]) -> list[bool]:
        """For each of ``offenders``, whether a line covers its address."""
        keep = np.zeros(len(offenders), dtype=bool)
        for fam in self.families:
            at = [i for i, o in enumerate(offenders) if o.ip.version == fam.version]
            if not at:
                continue
            values = spans.array([int(offenders[i].ip) for i in at], fam.version)
            keep[at] = spans.contains(*fam.merged(), values)
        mask: list[bool] = keep.tolist()
        return mask

    def covered_stream(self, items: Iterable[_I], of: Callable[[_I], _HasIp]) -> Iterator[_I]:
        """The items of a stream whose offender (``of(item)``) a line covers, judged a few
        thousand at a time (bounded memory)."""
        chunk: list[_I] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == 5000:
                yield from itertools.compress(chunk, self.mask([of(i) for i in chunk]))
                chunk = []
        yield from itertools.compress(chunk, self.mask([of(i) for i in chunk]))

    def take(self, v4: Array, v6: Array) -> Lines:
        return Lines(self.v4.take(v4), self.v6.take(v6))

    @classmethod
    def of(cls, lines: Sequence[Line]) -> Lines:
        """From ``ipaddress`` objects (any order, disjoint)."""
        parts: dict[int, tuple[list[int], list[int]]] = {4: ([], []), 6: ([], [])}
        for line in lines:
            starts, lengths = parts[line.version]
            if isinstance(line, IPv4Network | IPv6Network):
                starts.append(int(line.network_address))
                lengths.append(line.prefixlen)
            else:
                starts.append(int(line))
                lengths.append(line.max_prefixlen)
        return cls(*(_family(version, *parts[version]) for version in (4, 6)))

    @classmethod
    def parse(cls, body: bytes) -> Lines:
        """The lines of a plain feed banfeed wrote (the store's recorded versions)."""
        v4_starts: list[bytes] = []
        v4_lengths: list[int] = []
        v6: list[Line] = []
        for text in body.decode("ascii").split("\n"):
            if not text:
                continue
            if ":" in text:
                v6.append(ip_network(text) if "/" in text else ip_address(text))
                continue
            address, _, length = text.partition("/")
            v4_starts.append(socket.inet_aton(address))
            v4_lengths.append(int(length) if length else 32)
        packed = np.frombuffer(b"".join(v4_starts), dtype=">u4").astype(np.int64)
        lengths = np.asarray(v4_lengths, dtype=np.int64)
        order = _numeric_order(packed, lengths)
        v4 = Family(4, packed[order], lengths[order])
        return cls(v4, cls.of(v6).v6)


def _family(version: int, starts: list[int], lengths: list[int]) -> Family:
    if not starts:
        return Family.of(version)
    start = spans.array(starts, version)
    length = np.asarray(lengths, dtype=np.int64)
    order = _numeric_order(start, length)
    return Family(version, start[order], length[order])


def _numeric_order(start: Array, length: Array) -> Array:
    """By start, then prefix length: two stable sorts, which work on both families' dtypes
    (``np.lexsort`` does not take object arrays)."""
    by_length = np.argsort(length, kind="stable")
    return by_length[np.argsort(start[by_length], kind="stable")]


def lost(old: Lines, new: Lines) -> Lines:
    """Lines of ``old`` not wholly covered by the lines of ``new``."""
    masks = []
    for old_fam, new_fam in zip(old.families, new.families, strict=True):
        lo, hi = new_fam.merged()
        masks.append(~spans.covered(lo, hi, old_fam.start, old_fam.ends()))
    return old.take(*masks)


def changes(old: Lines, new: Lines) -> tuple[int, int]:
    """How many lines ``new`` adds to ``old``, and how many it removes."""
    added = removed = 0
    for old_fam, new_fam in zip(old.families, new.families, strict=True):
        old_keys, new_keys = old_fam.keys(), new_fam.keys()
        if isinstance(old_keys, set) and isinstance(new_keys, set):
            added += len(new_keys - old_keys)
            removed += len(old_keys - new_keys)
        else:
            assert isinstance(old_keys, np.ndarray) and isinstance(new_keys, np.ndarray)
            added += len(np.setdiff1d(new_keys, old_keys, assume_unique=True))
            removed += len(np.setdiff1d(old_keys, new_keys, assume_unique=True))
    return added, removed
