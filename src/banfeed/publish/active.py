"""The active offenders as columns: what feed builds are made of, kept in memory between builds.

One array per column and family, ascending by address: ``addr`` (the family's dtype, see
``spans``), ``last`` (last offense), ``count`` (offenses), ``until`` (active until;
:data:`FOREVER` for no expiry) and ``combo`` (an index into :attr:`ActiveSet.combos`, the few
distinct ``(sources, devices, vdoms)`` a fleet produces). A build filters, ranks and aggregates
these arrays; it makes no object per offender.

The set is read whole once, then kept in step with the store by the rows changed since the
version it reflects (``Tx.offender_columns(changed_after=…)``): each cycle and each operator
action costs what it changed. Rows that expire stay until the next full read: every build masks
them out by ``until``. ``to_bytes`` / ``from_bytes`` are the saved set new processes start from
(``inputs.read_inputs``).
"""

from __future__ import annotations

import bisect
import io
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .. import spans
from ..net import IPAddress, address_from_sort_key
from ..spans import Array
from ..store import FOREVER as STORE_FOREVER
from ..store import OffenderColumns

FOREVER = np.int64(STORE_FOREVER)  # ``until`` of an offender without expiry


_LOW = (1 << 64) - 1


@dataclass(frozen=True, slots=True)
class Combo:
    sources: tuple[str, ...]
    devices: tuple[str, ...]
    vdoms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Member:
    """One active offender, as a build sees it (what feed filters and explanations read)."""

    ip: IPAddress
    last_offense: int
    offense_count: int
    active_until: int | None
    sources: tuple[str, ...]
    devices: tuple[str, ...]
    vdoms: tuple[str, ...]


@dataclass(frozen=True)
class Columns:
    """One family's active offenders, ascending by address."""

    version: int
    addr: Array
    last: Array
    count: Array
    until: Array
    combo: Array

    @classmethod
    def empty(cls, version: int) -> Columns:
        ints = np.empty(0, dtype=np.int64)
        return cls(version, spans.empty(version), ints, ints, ints, np.empty(0, dtype=np.int32))

    def __len__(self) -> int:
        return len(self.addr)

    def index(self, value: int) -> int | None:
        at = int(np.searchsorted(self.addr, value))
        if at < len(self.addr) and int(self.addr[at]) == value:
            return at
        return None

    def take(self, keep: Array) -> Columns:
        return Columns(
            self.version,
            self.addr[keep],
            self.last[keep],
            self.count[keep],
            self.until[keep],
            self.combo[keep],
        )


class ActiveSet:
    """Every listed offender that was active when read (both families); the store version it
    reflects is its ``FeedInputs``'."""

    def __init__(
        self, v4: Columns, v6: Columns, combos: list[Combo], index: dict[str, int]
    ) -> None:
        self.v4, self.v6 = v4, v6
        self.combos = combos
        self._index = index
        # The addresses of the rows ``apply`` made this set from (IPv4, IPv6; ascending): what
        # a build may compare with the previous one (``build.unchanged``).
        self.applied: tuple[Array, Array] = (spans.empty(4), spans.empty(6))

    @classmethod
    def empty(cls) -> ActiveSet:
        return cls(Columns.empty(4), Columns.empty(6), [], {})

    @classmethod
    def read(cls, chunks: Iterable[Sequence[OffenderColumns]]) -> ActiveSet:
        """From the store's narrow rows (``Tx.offender_columns(active_at=…)``)."""
        return cls.empty().apply(chunks)

    @property
    def families(self) -> tuple[Columns, Columns]:
        return self.v4, self.v6

    def family(self, version: int) -> Columns:
        return self.v4 if version == 4 else self.v6

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def member(self, cols: Columns, at: int) -> Member:
        combo = self.combos[int(cols.combo[at])]
        until = int(cols.until[at])
        return Member(
            ip=address_from_sort_key(_key(cols.version, int(cols.addr[at]))),
            last_offense=int(cols.last[at]),
            offense_count=int(cols.count[at]),
            active_until=None if until == FOREVER else until,
            sources=combo.sources,
            devices=combo.devices,
            vdoms=combo.vdoms,
        )

    def get(self, ip: IPAddress, now: int) -> Member | None:
        """The offender at ``ip`` if it is in the set and active at ``now``."""
        cols = self.family(ip.version)
        at = cols.index(int(ip))
        if at is None or int(cols.until[at]) <= now:
            return None
        return self.member(cols, at)

    def to_bytes(self) -> bytes:
        """The set as an ``.npz`` archive (no pickles): IPv6 addresses as two 64-bit halves,
        the combinations as JSON. What ``Tx.save_snapshot`` keeps for new processes."""
        arrays: dict[str, Array] = {}
        for cols in self.families:
            name = f"v{cols.version}"
            if cols.version == 4:
                arrays[f"{name}_addr"] = cols.addr.astype(np.uint32)
            else:  # two 64-bit halves
                arrays[f"{name}_high"] = np.array([a >> 64 for a in cols.addr], dtype=np.uint64)
                arrays[f"{name}_low"] = np.array([a & _LOW for a in cols.addr], dtype=np.uint64)
            arrays[f"{name}_last"] = cols.last
            arrays[f"{name}_count"] = cols.count
            arrays[f"{name}_until"] = cols.until
            arrays[f"{name}_combo"] = cols.combo
        combos = [[list(c.sources), list(c.devices), list(c.vdoms)] for c in self.combos]
        arrays["combos"] = np.frombuffer(json.dumps(combos).encode(), dtype=np.uint8)
        out = io.BytesIO()
        np.savez(out, allow_pickle=False, **arrays)
        return out.getvalue()

    @classmethod
    def from_bytes(cls, body: bytes) -> ActiveSet:
        archive = np.load(io.BytesIO(body), allow_pickle=False)
        families = []
        for version in (4, 6):
            name = f"v{version}"
            if version == 4:
                addr = archive[f"{name}_addr"].astype(np.int64)
            else:
                high, low = archive[f"{name}_high"].tolist(), archive[f"{name}_low"].tolist()
                halves = zip(high, low, strict=True)
                addr = np.array([h << 64 | lo for h, lo in halves], dtype=object)
            families.append(
                Columns(
                    version,
                    addr,
                    archive[f"{name}_last"],
                    archive[f"{name}_count"],
                    archive[f"{name}_until"],
                    archive[f"{name}_combo"],
                )
            )
        combos = [
            Combo(tuple(s), tuple(d), tuple(v))
            for s, d, v in json.loads(archive["combos"].tobytes().decode())
        ]
        index = {
            "\n".join(json.dumps(list(x)) for x in (c.sources, c.devices, c.vdoms)): i
            for i, c in enumerate(combos)
        }
        found = cls(families[0], families[1], combos, index)
        for cols in found.families:
            sizes = {len(a) for a in (cols.addr, cols.last, cols.count, cols.until, cols.combo)}
            ordered = bool((cols.addr[1:] > cols.addr[:-1]).all())
            known = not len(cols.combo) or 0 <= int(cols.combo.min()) <= int(
                cols.combo.max()
            ) < len(combos)
            if len(sizes) != 1 or not ordered or not known:
                raise ValueError(f"saved active set: IPv{cols.version} columns are inconsistent")
        return found

    def apply(self, chunks: Iterable[Sequence[OffenderColumns]]) -> ActiveSet:
        """A new set with changed rows applied: each replaces the address's old row; rows no
        longer listed leave the set. This set is left as it was (builds may still read it)."""
        combos, index = list(self.combos), dict(self._index)
        parts: dict[int, list[_Rows]] = {4: [], 6: []}
        for chunk in chunks:  # by sort key: IPv4 rows (5-byte keys), then IPv6 (17 bytes)
            # Each chunk becomes arrays at once: a full read holds one chunk of tuples at a time.
            split = bisect.bisect_left(chunk, 6, key=lambda row: len(row[0]))
            for version, rows in ((4, chunk[:split]), (6, chunk[split:])):
                if rows:
                    parts[version].append(_arrays(version, rows, combos, index))
        found = ActiveSet(_merge(self.v4, parts[4]), _merge(self.v6, parts[6]), combos, index)
        found.applied = (_addresses(4, parts[4]), _addresses(6, parts[6]))
        return found


_Rows = tuple[Array, Array, Array, Array, Array, Array]  # addr, last, count, until, combo, listed


def _arrays(
    version: int, rows: Sequence[OffenderColumns], combos: list[Combo], index: dict[str, int]
) -> _Rows:
    keys, last, count, until, origins, listed = zip(*rows, strict=True)
    if version == 4:
        packed = np.frombuffer(b"".join(keys), dtype=np.uint8).reshape(-1, 5)[:, 1:]
        addr = packed.copy().view(">u4").reshape(-1).astype(np.int64)
    else:
        addr = np.array([int.from_bytes(k[1:], "big") for k in keys], dtype=object)
    ids = np.fromiter(
        (index.get(o) if o in index else _combo_id(o, combos, index) for o in origins),
        dtype=np.int32,
        count=len(origins),
    )
    return (
        addr,
        np.asarray(last, dtype=np.int64),
        np.asarray(count, dtype=np.int64),
        np.asarray(until, dtype=np.int64),
        ids,
        np.asarray(listed, dtype=bool),
    )


def _key(version: int, value: int) -> bytes:
    return bytes([version]) + value.to_bytes(4 if version == 4 else 16, "big")


def _addresses(version: int, parts: list[_Rows]) -> Array:
    if not parts:
        return spans.empty(version)
    return np.sort(np.concatenate([p[0] for p in parts]), kind="stable")


def _merge(cols: Columns, parts: list[_Rows]) -> Columns:
    if not parts:
        return cols
    addr, last, count, until, combo, listed = (np.concatenate(p) for p in zip(*parts, strict=True))
    order = np.argsort(addr, kind="stable")  # already in order when read by sort key
    addr = addr[order]
    unique = np.ones(len(addr), dtype=bool)  # the last row of an address wins
    unique[:-1] = addr[1:] != addr[:-1]
    # Drop every old row of a changed address, then insert the changed rows still listed.
    at = np.searchsorted(cols.addr, addr)
    hit = at < len(cols.addr)
    hit[hit] = cols.addr[at[hit]] == addr[hit]
    base = cols
    if hit.any():
        keep = np.ones(len(cols.addr), dtype=bool)
        keep[at[hit]] = False
        base = cols.take(keep)
    new = unique & listed[order]
    if not new.any():
        return base
    add = order[new]
    where = np.searchsorted(base.addr, addr[new])
    return Columns(
        cols.version,
        np.insert(base.addr, where, addr[new]),
        np.insert(base.last, where, last[add]),
        np.insert(base.count, where, count[add]),
        np.insert(base.until, where, until[add]),
        np.insert(base.combo, where, combo[add]),
    )


def _combo_id(origin: str, combos: list[Combo], index: dict[str, int]) -> int:
    found = index[origin] = len(combos)
    sources, devices, vdoms = origin.split("\n")
    combos.append(Combo(*(tuple(json.loads(t)) for t in (sources, devices, vdoms))))
    return found


@dataclass(frozen=True)
class Selection:
    """Offenders of a build's active set: row indices per family, ascending by address."""

    active: ActiveSet
    v4: Array
    v6: Array

    def indices(self, version: int) -> Array:
        return self.v4 if version == 4 else self.v6

    def addresses(self, version: int) -> Array:
        return self.active.family(version).addr[self.indices(version)]

    def __len__(self) -> int:
        return len(self.v4) + len(self.v6)

    def __iter__(self) -> Iterator[Member]:
        """Each selected offender as an object, in numeric order (for the few who want them)."""
        for cols in self.active.families:
            for at in self.indices(cols.version).tolist():
                yield self.active.member(cols, at)

    def get(self, ip: IPAddress) -> Member | None:
        cols = self.active.family(ip.version)
        at = cols.index(int(ip))
        rows = self.indices(ip.version)
        if at is None:
            return None
        where = int(np.searchsorted(rows, at))
        if where < len(rows) and int(rows[where]) == at:
            return self.active.member(cols, at)
        return None

    def rank(self) -> tuple[Array, Array]:
        """``(last offense, offenses)`` of every selected offender, IPv4 then IPv6."""
        v4, v6 = self.active.v4, self.active.v6
        return (
            np.concatenate([v4.last[self.v4], v6.last[self.v6]]),
            np.concatenate([v4.count[self.v4], v6.count[self.v6]]),
        )

    def ahead(self, member: Member) -> int:
        """How many selected offenders are more recent, or as recent and more repeated."""
        last, count = self.rank()
        newer = (last > member.last_offense) | (
            (last == member.last_offense) & (count > member.offense_count)
        )
        return int(newer.sum())

    def ranked(self) -> Array:
        """Positions of the selected offenders (IPv4 then IPv6) in the order the cap keeps
        them: most recent, then most repeated, then lower address first. ``top`` and the
        shards of a feed (``shards.split``) both take this order."""
        last, count = self.rank()
        return np.lexsort((np.arange(len(last)), -count, -last))

    def top(self, room: int) -> Selection:
        """The ``room`` most recent, then most repeated (ties: lower address first)."""
        order = self.ranked()[:room]
        split = len(self.v4)
        return Selection(
            self.active,
            np.sort(self.v4[order[order < split]]),
            np.sort(self.v6[order[order >= split] - split]),
        )
