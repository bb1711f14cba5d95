"""Address ranges as arrays: merge, subtract, membership and CIDR cover, vectorised.

A family's addresses are a numpy array of integers: ``int64`` for IPv4 (every address and
``2**32`` fit), and ``object`` (Python ints) for IPv6, whose set is the smaller one and whose
values do not fit a machine word. Every function works on both, with the same numpy calls; the
IPv6 ones just run at Python-int speed. A range is a pair of arrays ``(lo, hi)``, inclusive.

``ipaddress`` is the reference: tests/test_spans.py checks each function against it (or against
``net.aggregate``, itself checked against ``collapse_addresses``) on generated inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]

BITS = {4: 32, 6: 128}


def dtype(version: int) -> type[Any]:
    return np.int64 if version == 4 else object


def array(values: Any, version: int) -> Array:
    return np.asarray(values, dtype=dtype(version)) if len(values) else empty(version)


def empty(version: int) -> Array:
    return np.empty(0, dtype=dtype(version))


def bit_length(values: Array) -> Array:
    """``int.bit_length`` of each (non-negative) value, as int64."""
    if values.dtype == object:
        lengths: Array = np.frompyfunc(int.bit_length, 1, 1)(values)  # type: ignore[assignment]
        return lengths.astype(np.int64)
    # frexp's exponent is the bit length for positive values below 2**53; 0 gives 0.
    return np.frexp(values.astype(np.float64))[1].astype(np.int64)


def power_of_two(exponents: Array, version: int) -> Array:
    """``2 ** e`` for each exponent, in the family's dtype."""
    if version == 4:
        return np.left_shift(np.int64(1), exponents.astype(np.int64))
    return np.array([1 << int(e) for e in exponents], dtype=object)


def merge(lo: Array, hi: Array) -> tuple[Array, Array]:
    """The union of ranges as disjoint ranges in ascending order; adjacent ones are joined."""
    if len(lo) == 0:
        return lo, hi
    order = np.argsort(lo, kind="stable")
    lo, hi = lo[order], hi[order]
    reach = np.maximum.accumulate(hi)
    starts = np.ones(len(lo), dtype=bool)
    starts[1:] = lo[1:] > reach[:-1] + 1
    first = np.flatnonzero(starts)
    last = np.append(first[1:] - 1, len(lo) - 1)
    return lo[first], reach[last]


def contains(lo: Array, hi: Array, values: Array) -> Array:
    """Which ``values`` fall inside the disjoint, ascending ranges ``(lo, hi)``: a bool array."""
    return covered(lo, hi, values, values)


def covered(lo: Array, hi: Array, qlo: Array, qhi: Array) -> Array:
    """Which query ranges ``(qlo, qhi)`` lie wholly inside one of the disjoint, ascending,
    merged ranges ``(lo, hi)``."""
    if len(lo) == 0 or len(qlo) == 0:
        return np.zeros(len(qlo), dtype=bool)
    at = np.searchsorted(lo, qlo, side="right") - 1
    inside = at >= 0
    inside[inside] = qhi[inside] <= hi[at[inside]]
    return inside


def subtract(
    lo: Array, hi: Array, hole_lo: Array, hole_hi: Array, version: int
) -> tuple[Array, Array]:
    """Merged ranges minus merged holes: the parts of ``(lo, hi)`` no hole covers."""
    if len(lo) == 0 or len(hole_lo) == 0:
        return lo, hi
    top = (1 << BITS[version]) - 1
    # The gaps between holes, then each range cut by every gap it overlaps.
    gap_lo = np.concatenate([array([0], version), hole_hi + 1])
    gap_hi = np.concatenate([hole_lo - 1, array([top], version)])
    real = gap_lo <= gap_hi
    gap_lo, gap_hi = gap_lo[real], gap_hi[real]
    first = np.searchsorted(gap_hi, lo, side="left")
    last = np.searchsorted(gap_lo, hi, side="right") - 1
    pieces = np.maximum(last - first + 1, 0)
    owner = np.repeat(np.arange(len(lo)), pieces)
    offsets = np.cumsum(pieces) - pieces
    gap = first[owner] + (np.arange(len(owner)) - offsets[owner])
    return np.maximum(lo[owner], gap_lo[gap]), np.minimum(hi[owner], gap_hi[gap])


def cidrs(lo: Array, hi: Array, version: int) -> tuple[Array, Array]:
    """The fewest aligned blocks covering disjoint ranges: ``(start, prefix length)`` arrays in
    ascending order (what ``net.aggregate`` computes one range at a time)."""
    bits = BITS[version]
    starts: list[Array] = []
    lengths: list[Array] = []
    lo, hi = lo.copy(), hi.copy()
    while len(lo):
        aligned = lo & -lo  # the largest block aligned at lo (0 is aligned to everything)
        aligned[lo == 0] = 1 << bits
        fits = power_of_two(bit_length(hi - lo + 1) - 1, version)
        size = np.minimum(aligned, fits)
        starts.append(lo)
        lengths.append(bits + 1 - bit_length(size))
        lo = lo + size
        more = lo <= hi
        lo, hi = lo[more], hi[more]
    if not starts:
        return empty(version), np.empty(0, dtype=np.int64)
    start = np.concatenate(starts)
    length = np.concatenate(lengths)
    order = np.argsort(start, kind="stable")
    return start[order], length[order]


def block_ends(start: Array, length: Array, version: int) -> Array:
    """The last address of each block."""
    return start + power_of_two(BITS[version] - length, version) - 1


def split_blocks(start: Array, length: Array, max_prefix: int, version: int) -> tuple[Array, Array]:
    """Blocks broader than ``max_prefix`` cut into blocks of exactly that length (the prefix
    guard); the others kept. Ascending order is kept."""
    broad = length < max_prefix
    if not broad.any():
        return start, length
    parts = power_of_two(np.where(broad, max_prefix - length, 0), version).astype(np.int64)
    owner = np.repeat(np.arange(len(start)), parts)
    offsets = np.cumsum(parts) - parts
    step = power_of_two(BITS[version] - np.maximum(length, max_prefix), version)
    index = np.arange(len(owner)) - offsets[owner]
    if version == 6:
        index = index.astype(object)
    new_start = start[owner] + index * step[owner]
    return new_start, np.maximum(length[owner], max_prefix)
