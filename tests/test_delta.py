"""publish/delta.py against the whole-feed functions it replaces when a publish changes little:
``lines.changes``, ``lines.lost`` and ``Lines.text``, on random feeds of addresses and blocks.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banfeed import spans
from banfeed.publish.delta import delta, lost, splice
from banfeed.publish.lines import Family, Lines, changes
from banfeed.publish.lines import lost as lost_whole

V4 = int(IPv4Address("198.51.100.0"))
V6 = int(IPv6Address("2001:db8::"))


def _family(version: int, base: int, offsets: set[int], split: int) -> Family:
    """Lines over ``base + offsets``: below ``split`` one line an address, from it on the
    addresses merged into CIDR blocks (a feed with bans or aggregation has both)."""
    single = sorted(o for o in offsets if o < split)
    merged = sorted(o for o in offsets if o >= split)
    starts = [base + o for o in single]
    lengths = [spans.BITS[version]] * len(single)
    if merged:
        values = spans.array([base + o for o in merged], version)
        start, length = spans.cidrs(*spans.merge(values, values.copy()), version)
        starts += start.tolist()
        lengths += length.tolist()
    order = np.argsort(np.array(starts, dtype=object), kind="stable")
    return Family(
        version,
        spans.array([starts[i] for i in order], version),
        np.asarray([lengths[i] for i in order], dtype=np.int64),
    )


_offsets = st.sets(st.integers(0, 255), max_size=60)
_feed = st.tuples(_offsets, st.integers(0, 256), _offsets, st.integers(0, 256)).map(
    lambda t: Lines(_family(4, V4, t[0], t[1]), _family(6, V6, t[2], t[3]))
)


@settings(max_examples=400, deadline=None)
@given(old=_feed, new=_feed)
def test_delta_agrees_with_the_whole_feed_functions(old: Lines, new: Lines) -> None:
    change = delta(old, new)
    assert change.counts == changes(old, new)
    assert change.none == (old.text() == new.text())
    assert lost(old, new, change).text() == lost_whole(old, new).text()
    assert splice(old.text(), old, new, change, share=10.0) == new.text()  # always spliced


def test_a_large_change_is_rendered_whole_and_a_wrong_old_text_refused() -> None:
    old = Lines(_family(4, V4, set(range(0, 100)), 256), Family.of(6))
    new = Lines(_family(4, V4, set(range(50, 150)), 256), Family.of(6))
    assert splice(old.text(), old, new, delta(old, new)) is None  # 100 of 100 lines changed
    few = Lines(_family(4, V4, set(range(0, 101)), 256), Family.of(6))
    assert splice(old.text(), old, few, delta(old, few)) == few.text()
    with pytest.raises(ValueError):
        splice(old.text() + b"203.0.113.1\n", old, few, delta(old, few))


def test_a_block_split_into_addresses_is_covered_not_lost() -> None:
    """An aggregated block published as its addresses (or as smaller blocks) loses nothing;
    one address fewer loses the block."""
    block = Lines(_family(4, V4, set(range(8)), 0), _family(6, V6, set(range(4)), 0))
    singles = Lines(_family(4, V4, set(range(8)), 256), _family(6, V6, set(range(4)), 2))
    assert len(block) == 2 and len(singles) == 8 + 3
    change = delta(block, singles)
    assert len(lost(block, singles, change)) == 0 == len(lost_whole(block, singles))
    fewer = Lines(_family(4, V4, set(range(1, 8)), 256), singles.v6)
    assert lost(block, fewer, delta(block, fewer)).text() == b"198.51.100.0/29\n"
    assert lost_whole(block, fewer).text() == b"198.51.100.0/29\n"
