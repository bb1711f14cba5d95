"""What changed between a feed's last recorded lines and a new build, found once.

Publishing compares each build with the version served before it three times: whether it
changed at all, which old lines it loses (the mass-drop guard), how many lines it adds and
removes (the version's record). All three follow from one comparison of the two sorted line
arrays (:func:`delta`), and so does the new plain text: the old text with the removed lines cut
out and the added ones put in (:func:`splice`), instead of rendering a million lines again
because a thousand changed. tests/test_delta.py checks each against ``lines.lost``,
``lines.changes`` and ``Lines.text`` on random feeds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import spans
from ..spans import Array
from .lines import Family, Lines

# Beyond this share of changed lines, rendering the new text whole is as cheap as splicing.
SPLICE_SHARE = 0.2


@dataclass(frozen=True)
class Delta:
    """Per family (IPv4, IPv6): the indices of old lines the new build does not have, and of
    new lines the old one did not have, ascending."""

    removed: tuple[Array, Array]
    added: tuple[Array, Array]

    @property
    def counts(self) -> tuple[int, int]:
        """(lines added, lines removed): what ``lines.changes`` returns."""
        return sum(len(a) for a in self.added), sum(len(r) for r in self.removed)

    @property
    def none(self) -> bool:
        return self.counts == (0, 0)


def delta(old: Lines, new: Lines) -> Delta:
    """The lines one build has and the other has not. Lines of a feed are disjoint and in
    ascending order, so a line's key (start, then length) orders them, and membership is one
    binary search per line."""
    removed, added = [], []
    for old_fam, new_fam in zip(old.families, new.families, strict=True):
        old_keys, new_keys = _keys(old_fam), _keys(new_fam)
        removed.append(np.flatnonzero(~_present(old_keys, new_keys)))
        added.append(np.flatnonzero(~_present(new_keys, old_keys)))
    return Delta((removed[0], removed[1]), (added[0], added[1]))


def _keys(fam: Family) -> Array:
    if fam.version == 4:
        return np.asarray(fam.start, dtype=np.int64) * 64 + fam.length
    return np.array(
        [s * 256 + n for s, n in zip(fam.start.tolist(), fam.length.tolist(), strict=True)],
        dtype=object,
    )


def _present(keys: Array, sorted_keys: Array) -> Array:
    """Which ``keys`` are in ``sorted_keys`` (ascending, distinct)."""
    if not len(sorted_keys) or not len(keys):
        return np.zeros(len(keys), dtype=bool)
    at = np.searchsorted(sorted_keys, keys)
    at[at == len(sorted_keys)] = 0
    return np.asarray(sorted_keys[at] == keys, dtype=bool)


def lost(old: Lines, new: Lines, change: Delta) -> Lines:
    """``lines.lost(old, new)``: the old lines no new line covers, judged for the removed lines
    only (a line both have is covered). Lines are CIDR blocks, which nest or are disjoint: an
    old block is covered by one new block holding it, or by new blocks inside it that add up
    to its size."""
    masks = []
    for old_fam, new_fam, gone in zip(old.families, new.families, change.removed, strict=True):
        mask = np.zeros(len(old_fam), dtype=bool)
        if len(gone):
            mask[gone] = ~_covered(old_fam.take(gone), new_fam)
        masks.append(mask)
    return old.take(*masks)


def _covered(blocks: Family, by: Family) -> Array:
    start, end = blocks.start, blocks.ends()
    if not len(by):
        return np.zeros(len(start), dtype=bool)
    # One new block holding the old one: the last new block starting at or before it.
    at = np.searchsorted(by.start, start, side="right") - 1
    holds = at >= 0
    inside = at[holds]
    holds[holds] = spans.block_ends(by.start[inside], by.length[inside], by.version) >= end[holds]
    # New blocks inside it, adding up to its size.
    sizes = spans.power_of_two(spans.BITS[by.version] - by.length, by.version)
    total = np.concatenate([spans.array([0], by.version), np.cumsum(sizes)])
    first = np.searchsorted(by.start, start, side="left")
    last = np.searchsorted(by.start, end, side="right")
    filled = np.asarray(total[last] - total[first] == end - start + 1, dtype=bool)
    return np.asarray(holds | filled, dtype=bool)


def splice(
    old_text: bytes, old: Lines, new: Lines, change: Delta, share: float = SPLICE_SHARE
) -> bytes | None:
    """The new plain text made from the old one (``new.text()``), or None when more than
    ``share`` of the lines changed (rendering it whole is then the cheaper way). ``old_text``
    must be ``old.text()``."""
    added_total, removed_total = change.counts
    if added_total + removed_total > share * max(len(old), len(new), 1):
        return None
    ends = np.flatnonzero(np.frombuffer(old_text, dtype=np.uint8) == 10) + 1
    if len(ends) != len(old):
        raise ValueError("old_text is not the text of the old lines")
    starts = np.concatenate([np.zeros(1, dtype=np.int64), ends[:-1]])
    n4 = len(old.v4)
    removed = np.concatenate([change.removed[0], change.removed[1] + n4])
    added = np.concatenate([change.added[0], change.added[1] + len(new.v4)])
    inserted = (
        new.take(_mask(len(new.v4), change.added[0]), _mask(len(new.v6), change.added[1]))
        .text()
        .split(b"\n")[:-1]
    )
    keep = np.ones(len(old), dtype=bool)
    keep[removed] = False
    kept = np.flatnonzero(keep)
    # Cut the kept lines into runs contiguous in the old text, and at each insertion point
    # (an added line goes before the kept line whose rank is its index minus the added lines
    # before it).
    at = added - np.arange(len(added))
    cuts = np.union1d(np.flatnonzero(np.diff(kept) != 1) + 1, at)
    cuts = np.union1d(cuts, [0, len(kept)])
    pieces: list[bytes] = []
    adding = 0
    for left, right in zip(cuts[:-1].tolist(), cuts[1:].tolist(), strict=True):
        while adding < len(at) and at[adding] == left:
            pieces.append(inserted[adding] + b"\n")
            adding += 1
        if right > left:
            pieces.append(old_text[starts[kept[left]] : ends[kept[right - 1]]])
    pieces.extend(line + b"\n" for line in inserted[adding:])
    return b"".join(pieces)


def _mask(size: int, indices: Array) -> Array:
    mask = np.zeros(size, dtype=bool)
    mask[indices] = True
    return mask
