"""Shards: a feed bigger than one consumer loads, served as ``NAME-1`` … ``NAME-N``.

A FortiGate loads at most ``limit`` entries from one external resource (131,072 before 7.4.4,
168,928 on a VM02), so a feed of ``shards = N`` publishes up to N × ``limit`` lines and splits
them into N feeds of at most ``limit`` lines each, worst offenders first: shard 1 holds the
lines the cap would keep if the feed had room for ``limit`` only (bans and escalated prefixes,
then the most recent, then most repeated offenders: ``Selection.ranked``), shard 2 the next
``limit``, and so on. The shards partition the feed's lines exactly: every line of
``/feeds/NAME.txt`` is in one shard, and each shard's text is those lines in numeric order
(a subset of a maximal CIDR cover is one too, so an aggregated feed's shards are aggregated).

Each shard is recorded as a version of its own, in ``feed_versions`` under :func:`key`
(``NAME#k``: no feed name holds a ``#``, so no feed, present or removed, shares its rows) with
the number of the feed's version, in the same transaction: the shards of version 7 are exactly
what ``NAME.txt`` version 7 held, a rollback serves that version's shards, and a shard never
comes from another version than its siblings. A shard whose text did not change keeps its bytes,
ETag and ``created`` (its Last-Modified) in the new row.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..config.limits import shard_name
from ..errors import InputError
from ..models import FeedVersion
from ..net import IPAddress
from ..spans import Array
from ..store import Store, Tx
from .active import Selection
from .delta import Delta, delta, splice
from .lines import Lines, changes
from .render import etag_of

if TYPE_CHECKING:
    from .build import FeedBuild, FeedSpec
    from .publisher import Served

# A kept shard of a recorded version: its row (compressed body included), lines and text.
Kept = tuple[FeedVersion, Lines, bytes]

_LAST = np.iinfo(np.int64).max  # the rank of a line no published offender or network made


def key(feed: str, shard: int) -> str:
    """The name shard ``shard`` of ``feed`` is kept under in the store: ``feed#shard``."""
    return f"{feed}#{shard}"


name = shard_name  # ``feed-k``: what consumers fetch, config's rule


def names(feed: str, shards: int) -> list[str]:
    """The shards' names (``name``: ``feed-k``, as consumers fetch them); none for one."""
    return [name(feed, k) for k in range(1, shards + 1)] if shards > 1 else []


def check_rollback(store: Store, feed: str, number: int, shards: int) -> None:
    """Refuse to pin version ``number`` of a sharded feed that lacks a shard's bytes: its
    shards would answer 503 while ``NAME.txt`` serves it (``feeds rollback``)."""
    if shards == 1:
        return
    with store.read() as tx:
        if tx.feed_version(feed, number) is None:
            return  # pinning says there is no such version
        missing = [
            k
            for k in range(1, shards + 1)
            if (row := tx.feed_version(key(feed, k), number)) is None or row.body is None
        ]
    if missing:
        raise InputError(
            f"feed {feed}: version {number} has no bytes kept for shard(s) "
            f"{', '.join(map(str, missing))} (published before shards = {shards}, or pruned); "
            f"pick a newer version from `banfeed feeds history {feed}`"
        )


def split(
    entries: Lines, networks: Lines, published: Selection, spec: FeedSpec
) -> tuple[Lines, ...]:
    """``entries`` as ``spec.shards`` blocks of at most ``spec.max_entries`` lines, in the cap's
    order: lines holding a ban or an escalated prefix first (in numeric order), then each line
    by the best ranked published offender it covers. ``entries`` (at most ``spec.capacity``
    lines) are the disjoint lines of the build; ``networks`` and ``published`` what made them."""
    rank = np.empty(len(published), dtype=np.int64)
    rank[published.ranked()] = np.arange(len(published), dtype=np.int64)
    per_family = []
    offset = 0
    for fam, nets in zip(entries.families, networks.families, strict=True):
        version, ends = fam.version, fam.ends()
        line_rank = np.full(len(fam), _LAST, dtype=np.int64)
        count = len(published.indices(version))
        at, inside = _covering(fam.start, ends, published.addresses(version))
        at, best = at[inside], rank[offset : offset + count][inside]
        if len(at):  # addresses ascend, so do their lines: one run of equal ``at`` a line
            first = np.flatnonzero(np.concatenate([[True], at[1:] != at[:-1]]))
            line_rank[at[first]] = np.minimum.reduceat(best, first)
        offset += count
        at, inside = _covering(fam.start, ends, nets.start)
        line_rank[at[inside]] = -1  # bans and escalated prefixes come first
        per_family.append(line_rank)
    ranks = np.concatenate(per_family)
    order = np.argsort(ranks, kind="stable")  # ties (the networks): numeric order
    shard_of = np.empty(len(ranks), dtype=np.int64)
    shard_of[order] = np.arange(len(ranks), dtype=np.int64) // spec.max_entries
    n4 = len(entries.v4)
    return tuple(entries.take(shard_of[:n4] == k, shard_of[n4:] == k) for k in range(spec.shards))


def _covering(start: Array, ends: Array, values: Array) -> tuple[Array, Array]:
    """For each value, the index of the line that may cover it, and whether it does."""
    if not len(start) or not len(values):
        empty = np.zeros(len(values), dtype=np.int64)
        return empty, np.zeros(len(values), dtype=bool)
    at = np.searchsorted(start, values, side="right") - 1
    inside = at >= 0
    at[~inside] = 0
    inside &= np.asarray(ends[at] >= values, dtype=bool)
    return at, inside


@dataclass(frozen=True)
class ShardText:
    """One shard of a build: its lines, text and ETag, and the previous version's shard."""

    number: int  # 1-based
    lines: Lines
    text: bytes
    etag: str
    change: Delta | None  # against ``previous`` (None: no previous shard)
    previous: FeedVersion | None  # this shard in the feed's newest version, with its body

    @property
    def same(self) -> bool:
        """The same bytes as the previous version's shard: its row is reused whole."""
        previous = self.previous
        return previous is not None and previous.etag == self.etag and previous.body is not None


def texts(build: FeedBuild, previous: list[Kept | None]) -> list[ShardText]:
    """Each shard's text, made like the feed's own (``Publisher._decide``): the previous text
    when its lines did not change, the previous text spliced when few did, rendered otherwise."""
    found = []
    for number, lines in enumerate(build.shards, 1):
        kept = previous[number - 1] if number <= len(previous) else None
        text, change = None, None
        if kept is not None:
            change = delta(kept[1], lines)
            text = kept[2] if change.none else splice(kept[2], kept[1], lines, change)
        if text is None:
            text = lines.text()
        row = kept[0] if kept is not None else None
        found.append(ShardText(number, lines, text, etag_of(text), change, row))
    return found


def kept(parts: list[ShardText]) -> list[Kept | None]:
    """What a publisher remembers of ``parts`` once their version is the newest."""
    return [(p.previous, p.lines, p.text) if p.previous is not None else None for p in parts]


def versions(
    feed: FeedVersion, parts: list[ShardText], bodies: list[bytes | None]
) -> list[FeedVersion]:
    """The rows of ``parts`` recorded with version ``feed`` (number, reason, approver, counts of
    the whole feed); ``bodies``: each changed shard's compressed text (None for the same)."""
    rows = []
    for part, body in zip(parts, bodies, strict=True):
        previous = part.previous
        if part.same and previous is not None:
            added, removed, created, body = 0, 0, previous.created, previous.body
        else:
            counts = part.change.counts if part.change is not None else None
            added, removed = counts or changes(Lines(), part.lines)
            created = feed.created
        rows.append(
            dataclasses.replace(
                feed,
                feed=key(feed.feed, part.number),
                created=created,
                etag=part.etag,
                entries=len(part.lines),
                added=added,
                removed=removed,
                body=body,
            )
        )
    return rows


def shard_of(shards: Sequence[Lines | None], ip: IPAddress) -> int | None:
    """Which shard (1-based) lists ``ip``, or None (a shard not recorded: None)."""
    for number, lines in enumerate(shards, 1):
        if lines is not None and lines.line_for(ip) is not None:
            return number
    return None


def listing(tx: Tx, shown: Served, count: int, ip: IPAddress) -> int | None:
    """Which shard of the version ``shown`` lists ``ip`` (what `show` says), or None."""
    from .publisher import served_shards  # the publisher imports this module

    return shard_of([p.lines() if p else None for p in served_shards(tx, shown, count)], ip)
