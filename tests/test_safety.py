"""Nothing wrong is ever published, nothing right is lost: properties of feed building checked
against an independent oracle (interval arithmetic over plain integers), on a real store."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_network,
    summarize_address_range,
)
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banfeed.models import AllowEntry, Ban, Offender
from banfeed.net import NEVER_BLOCK, carve
from banfeed.policy import Escalation, PrefixGuard, build_allowlist
from banfeed.publish import FeedPolicy, FeedSpec
from banfeed.store import Store, open_store
from conftest import T0, build_feed

# Small regions, so generated offenders, bans, allowlists and protected ranges overlap often.
REGIONS = [
    ip_network("45.33.0.0/25"),  # ordinary public space, dense enough to merge into blocks
    ip_network("192.0.0.0/22"),  # straddles 192.0.0.0/24 and 192.0.2.0/24 (never-block)
    ip_network("2a00:1450:4001::/121"),
    ip_network("2001:db8::/121"),  # documentation: all of it is never-block
]
GUARD = PrefixGuard(16, 48)


@st.composite
def network_in(draw: st.DrawFn, shortest_v4: int = 22, shortest_v6: int = 118) -> Any:
    region = draw(st.sampled_from(REGIONS))
    low = shortest_v4 if region.version == 4 else shortest_v6
    length = draw(st.integers(min_value=max(low, region.prefixlen), max_value=region.max_prefixlen))
    offset = draw(st.integers(min_value=0, max_value=region.num_addresses - 1))
    address = int(region.network_address) + offset
    return ip_network((address, length), strict=False)


@st.composite
def address_in(draw: st.DrawFn) -> Any:
    region = draw(st.sampled_from(REGIONS))
    offset = draw(st.integers(min_value=0, max_value=region.num_addresses - 1))
    cls = IPv4Address if region.version == 4 else IPv6Address
    return cls(int(region.network_address) + offset)


scenarios = st.fixed_dictionaries(
    {
        "offenders": st.lists(address_in(), max_size=60, unique=True),
        "bans": st.lists(network_in(), max_size=5, unique=True),
        "config_allow": st.lists(network_in(26, 122), max_size=3),
        "store_allow": st.lists(network_in(26, 122), max_size=3),
        "protect": st.lists(network_in(26, 122), max_size=3),
    }
)


# -- the oracle: plain integer intervals, no banfeed code -----------------------------------


def interval(network: IPv4Network | IPv6Network) -> tuple[int, int, int]:
    return (network.version, int(network.network_address), int(network.broadcast_address))


def merge(intervals: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    merged: list[tuple[int, int, int]] = []
    for version, low, high in sorted(intervals):
        if merged and merged[-1][0] == version and low <= merged[-1][2] + 1:
            merged[-1] = (version, merged[-1][1], max(merged[-1][2], high))
        else:
            merged.append((version, low, high))
    return merged


def subtract(
    have: list[tuple[int, int, int]], holes: list[tuple[int, int, int]]
) -> list[tuple[int, int, int]]:
    result = []
    for version, low, high in merge(have):
        pieces = [(low, high)]
        for h_version, h_low, h_high in merge(holes):
            if h_version != version:
                continue
            next_pieces = []
            for p_low, p_high in pieces:
                if h_high < p_low or h_low > p_high:
                    next_pieces.append((p_low, p_high))
                    continue
                if p_low < h_low:
                    next_pieces.append((p_low, h_low - 1))
                if h_high < p_high:
                    next_pieces.append((h_high + 1, p_high))
            pieces = next_pieces
        result += [(version, a, b) for a, b in pieces]
    return merge(result)


def inside(point: tuple[int, int], intervals: list[tuple[int, int, int]]) -> bool:
    version, value = point
    return any(v == version and low <= value <= high for v, low, high in intervals)


def as_network(entry: Any) -> IPv4Network | IPv6Network:
    return entry if isinstance(entry, IPv4Network | IPv6Network) else ip_network(entry)


# -- a real store, reset between examples ----------------------------------------------------


@pytest.fixture(scope="module")
def store() -> Iterator[Store]:
    folder = tempfile.mkdtemp(prefix="banfeed-prop-")
    store = open_store(f"sqlite:///{Path(folder) / 'p.db'}", create=True)
    yield store
    store.close()


def load(store: Store, case: dict[str, Any]) -> FeedPolicy:
    with store.write() as tx:
        for table in ("offenders", "bans", "allow_entries"):
            tx.conn.execute(sa.text(f"DELETE FROM {table}"))
        tx.insert_offenders(
            [
                Offender(ip, T0, T0, 1, ("IPS",), ("fw",), ("fw/root",), None, "listed")
                for ip in case["offenders"]
            ],
            T0,
        )
        for network in case["bans"]:
            tx.save_ban(Ban(network, T0, None, "manual", "test"))
        for network in case["store_allow"]:
            tx.save_allow_entry(AllowEntry(network, T0, None, "test"))
        tx.bump_version()
    return FeedPolicy(build_allowlist(case["config_allow"], case["protect"]), GUARD)


def expectations(case: dict[str, Any]) -> tuple[list[Any], list[Any], list[tuple[int, int]]]:
    holes = [interval(n) for n, _ in NEVER_BLOCK]
    holes += [interval(n) for n in case["config_allow"] + case["store_allow"] + case["protect"]]
    points = [(a.version, int(a)) for a in case["offenders"]]
    kept = [p for p in points if not inside(p, merge(holes))]
    wanted = [(v, x, x) for v, x in kept] + [interval(n) for n in case["bans"]]
    return subtract(wanted, holes), merge(holes), kept


SETTINGS = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(case=scenarios)
def test_aggregated_feed_is_exactly_the_oracle_and_minimal(
    store: Store, case: dict[str, Any]
) -> None:
    policy = load(store, case)
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f", aggregate=True), policy, T0)
    expected, _holes, _kept = expectations(case)
    published = [as_network(e) for e in build.entries]
    assert merge([interval(n) for n in published]) == expected  # covers exactly banned − allowed
    minimal = [
        n
        for v, low, high in expected
        for n in summarize_address_range(
            *(
                (IPv4Address(low), IPv4Address(high))
                if v == 4
                else (IPv6Address(low), IPv6Address(high))
            )
        )
    ]
    assert published == minimal  # and with the fewest networks, in numeric order


@SETTINGS
@given(case=scenarios)
def test_plain_feed_never_touches_holes_and_loses_nothing(
    store: Store, case: dict[str, Any]
) -> None:
    policy = load(store, case)
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f"), policy, T0)
    expected, holes, kept = expectations(case)
    published = [interval(as_network(e)) for e in build.entries]
    for entry in published:
        assert subtract([entry], holes) == [entry], f"{entry} intersects a protected range"
        assert subtract([entry], expected) == [], f"{entry} publishes what is not banned"
    for point in kept:
        assert inside(point, published), f"active offender {point} is not covered"
    assert build.overflow == 0


@SETTINGS
@given(
    networks=st.lists(network_in(), max_size=6), holes_=st.lists(network_in(24, 120), max_size=6)
)
def test_carve_equals_set_arithmetic(networks: list[Any], holes_: list[Any]) -> None:
    result = carve(networks, holes_)
    expected = subtract([interval(n) for n in networks], [interval(h) for h in holes_])
    assert merge([interval(n) for n in result]) == expected
    assert len(result) == len(
        [
            n
            for v, low, high in expected
            for n in summarize_address_range(
                *(
                    (IPv4Address(low), IPv4Address(high))
                    if v == 4
                    else (IPv6Address(low), IPv6Address(high))
                )
            )
        ]
    )


def test_escalation_publishes_the_prefix_minus_holes(store: Store) -> None:
    busy = [IPv4Address(f"45.33.7.{i}") for i in range(1, 9)]
    case = {
        "offenders": busy + [IPv4Address("45.33.9.9")],
        "bans": [],
        "config_allow": [ip_network("45.33.7.128/25")],
        "store_allow": [],
        "protect": [],
    }
    policy = load(store, case)
    escalating = FeedPolicy(policy.allowlist, GUARD, Escalation(min_offenders=8, prefix_v4=24))
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f"), escalating, T0)
    assert [str(e) for e in build.entries] == ["45.33.7.0/25", "45.33.9.9"]
    assert [str(e.prefix) for e in build.escalated] == ["45.33.7.0/24"]


def test_prefix_guard_splits_broad_aggregates(store: Store) -> None:
    case = {
        "offenders": [],
        "bans": [ip_network("45.32.0.0/16"), ip_network("45.33.0.0/16")],
        "config_allow": [],
        "store_allow": [],
        "protect": [],
    }
    policy = load(store, case)
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f", aggregate=True), policy, T0)
    assert [str(e) for e in build.entries] == ["45.32.0.0/16", "45.33.0.0/16"]  # not one /15
