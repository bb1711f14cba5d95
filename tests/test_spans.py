"""spans and lines: every vectorised range operation against its ``ipaddress`` reference."""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    collapse_addresses,
    ip_address,
)
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from banfeed import spans
from banfeed.net import carve, split_to_prefix
from banfeed.publish.lines import Family, Lines, changes, lost

PROPERTY = settings(max_examples=200, deadline=None)
Net = IPv4Network | IPv6Network


@st.composite
def networks(draw: st.DrawFn, version: int) -> Net:
    """Networks clustered near a few bases, so they overlap, touch and nest often."""
    bits = spans.BITS[version]
    base = draw(st.sampled_from([0, 2 ** (bits - 1), 2**bits - 2**12, 0x0B000000 << (bits - 32)]))
    value = base + draw(st.integers(0, 2**12 - 1))
    prefix = draw(st.integers(bits - 12, bits) | st.integers(0, bits))
    make = IPv4Network if version == 4 else IPv6Network
    return make((min(value, 2**bits - 1), prefix), strict=False)


def ranges(nets: list[Net], version: int) -> tuple[Any, Any]:
    lo = spans.array([int(n.network_address) for n in nets], version)
    hi = spans.array([int(n.broadcast_address) for n in nets], version)
    return lo, hi


def blocks(version: int, start: Any, length: Any) -> list[Net]:
    make = IPv4Network if version == 4 else IPv6Network
    return [make((int(s), int(n))) for s, n in zip(start, length, strict=True)]


versions = st.sampled_from([4, 6])


@PROPERTY
@given(st.data(), versions)
def test_merge_then_cidrs_is_collapse_addresses(data: st.DataObject, version: int) -> None:
    nets = data.draw(st.lists(networks(version), max_size=30))
    lo, hi = spans.merge(*ranges(nets, version))
    assert list(lo) == sorted(lo) and all(hi[:-1] + 1 < lo[1:])  # disjoint, not touching
    assert blocks(version, *spans.cidrs(lo, hi, version)) == list(collapse_addresses(nets))


@PROPERTY
@given(st.data(), versions)
def test_subtract_is_carve(data: st.DataObject, version: int) -> None:
    nets = data.draw(st.lists(networks(version), max_size=20))
    holes = data.draw(st.lists(networks(version), max_size=20))
    lo, hi = spans.subtract(
        *spans.merge(*ranges(nets, version)), *spans.merge(*ranges(holes, version)), version
    )
    assert blocks(version, *spans.cidrs(lo, hi, version)) == carve(nets, holes)


@PROPERTY
@given(st.data(), versions)
def test_contains_and_covered_match_membership(data: st.DataObject, version: int) -> None:
    nets = data.draw(st.lists(networks(version), max_size=20))
    queries = data.draw(st.lists(networks(version), max_size=30))
    lo, hi = spans.merge(*ranges(nets, version))
    starts = spans.array([int(q.network_address) for q in queries], version)
    found = spans.contains(lo, hi, starts)
    assert found.tolist() == [any(q.network_address in n for n in nets) for q in queries]
    whole = spans.covered(lo, hi, *ranges(queries, version))
    assert whole.tolist() == [carve([q], nets) == [] for q in queries]


@PROPERTY
@given(st.data(), versions, st.integers(0, 128))
def test_split_blocks_is_split_to_prefix(data: st.DataObject, version: int, limit: int) -> None:
    limit = min(limit, spans.BITS[version])
    nets = data.draw(st.lists(networks(version), max_size=10))
    collapsed = list(collapse_addresses(nets))
    collapsed = [n for n in collapsed if limit - n.prefixlen <= 10]  # keep the output small
    start = spans.array([int(n.network_address) for n in collapsed], version)
    length = np.asarray([n.prefixlen for n in collapsed], dtype=np.int64)
    got = blocks(version, *spans.split_blocks(start, length, limit, version))
    assert got == [part for n in collapsed for part in split_to_prefix(n, limit)]


def feed_lines(nets4: list[Net], nets6: list[Net]) -> list[Any]:
    """Disjoint lines in feed order, single addresses as addresses (what a build makes)."""
    out: list[Any] = []
    for net in [*collapse_addresses(nets4), *collapse_addresses(nets6)]:
        out.append(net.network_address if net.num_addresses == 1 else net)
    return out


lines_of = st.builds(
    feed_lines, st.lists(networks(4), max_size=25), st.lists(networks(6), max_size=10)
)


@PROPERTY
@given(lines_of, st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 2**128 - 1), max_size=20))
def test_lines_text_parse_and_lookup(objects: list[Any], probes: list[int]) -> None:
    lines = Lines.of(objects)
    text = "".join(f"{line}\n" for line in objects).encode()
    assert lines.text() == text
    assert list(lines) == objects
    assert Lines.parse(text).text() == text
    candidates = [ip_address(p) for p in probes] + [
        (o.network_address if hasattr(o, "network_address") else o) for o in objects
    ]
    for ip in candidates:
        expected = next(
            (
                o
                for o in objects
                if o.version == ip.version
                and (ip == o if not hasattr(o, "network_address") else ip in o)
            ),
            None,
        )
        assert lines.line_for(ip) == expected
    covered = lines.covered([_Item(ip) for ip in candidates])
    assert [c.ip for c in covered] == [ip for ip in candidates if lines.line_for(ip) is not None]


class _Item:
    def __init__(self, ip: IPv4Address | IPv6Address) -> None:
        self.ip = ip


@PROPERTY
@given(lines_of, lines_of)
def test_lost_and_changes_against_sets(old_objects: list[Any], new_objects: list[Any]) -> None:
    old, new = Lines.of(old_objects), Lines.of(new_objects)
    new_nets = [o if hasattr(o, "network_address") else _single(o) for o in new_objects]
    expected = [
        o for o in old_objects if carve([o], [n for n in new_nets if n.version == o.version]) != []
    ]
    assert list(lost(old, new)) == expected
    old_text, new_text = {str(o) for o in old_objects}, {str(o) for o in new_objects}
    assert changes(old, new) == (len(new_text - old_text), len(old_text - new_text))


def _single(address: Any) -> Net:
    return IPv4Network(address) if address.version == 4 else IPv6Network(address)


def test_ipv4_text_of_every_octet_and_prefix() -> None:
    values = [v << shift for v in range(256) for shift in (0, 8, 16, 24)]
    values += [0xFFFFFFFF, 0x01020304]
    start = np.asarray(values * 33, dtype=np.int64)
    length = np.repeat(np.arange(33, dtype=np.int64), len(values))
    expected = "".join(
        f"{IPv4Address(v)}\n" if n == 32 else f"{IPv4Address(v)}/{n}\n"
        for v, n in zip(start.tolist(), length.tolist(), strict=True)
    )
    assert Family(4, start, length).text() == expected.encode()
