"""policy: escalating retention and the derived state of an offender."""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banfeed.models import Offender
from banfeed.net import NetworkSet, parse_address
from banfeed.policy import (
    UNCAPPED_TTL,
    Allowlist,
    Retention,
    is_active,
    state,
    suppression_reason,
)

PROPERTY = settings(max_examples=200, deadline=None)
DAY = 86400

# --------------------------------------------------------------------------- Retention


def test_ttl_escalates_and_caps() -> None:
    r = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=365 * DAY)
    assert r.ttl(1) == 30 * DAY
    assert r.ttl(2) == 60 * DAY
    assert r.ttl(3) == 120 * DAY
    assert r.ttl(4) == 240 * DAY
    assert r.ttl(5) == 365 * DAY  # 480 days, capped
    assert r.ttl(6) == 365 * DAY
    assert r.ttl(10_000) == 365 * DAY


def test_ttl_of_zero_offenses_is_base() -> None:
    r = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=365 * DAY)
    assert r.ttl(0) == 30 * DAY


def test_ttl_base_larger_than_max_is_capped() -> None:
    assert Retention(base_ttl=10 * DAY, factor=2.0, max_ttl=DAY).ttl(1) == DAY


def test_ttl_results_are_ints() -> None:
    r = Retention(base_ttl=7, factor=1.5, max_ttl=1000)
    for n in range(1, 30):
        assert type(r.ttl(n)) is int


@pytest.mark.parametrize("count", [1, 2, 50, 10_000])
def test_base_forever_is_forever(count: int) -> None:
    r = Retention(base_ttl=None, factor=2.0, max_ttl=365 * DAY)
    assert r.ttl(count) is None
    assert r.active_until(1_700_000_000, count) is None


@pytest.mark.parametrize("count", [1, 2, 100, 10_000])
def test_factor_one_without_max_never_grows(count: int) -> None:
    r = Retention(base_ttl=DAY, factor=1.0, max_ttl=None)
    assert r.ttl(count) == DAY


def test_huge_counts_do_not_overflow() -> None:
    capped = Retention(base_ttl=30 * DAY, factor=100.0, max_ttl=365 * DAY)
    assert capped.ttl(10_000) == 365 * DAY
    assert capped.active_until(1_000, 10_000) == 1_000 + 365 * DAY

    unbounded = Retention(base_ttl=DAY, factor=2.0, max_ttl=None)
    ttl = unbounded.ttl(10_000)
    assert type(ttl) is int
    assert ttl == UNCAPPED_TTL  # "as good as forever", still a finite integer
    assert unbounded.active_until(0, 10_000) == ttl

    wild = Retention(base_ttl=DAY, factor=100.0, max_ttl=None)
    assert type(wild.ttl(10_000)) is int


def test_active_until_is_last_offense_plus_ttl() -> None:
    r = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=365 * DAY)
    last = 1_700_000_000
    assert r.active_until(last, 1) == last + 30 * DAY
    assert r.active_until(last, 3) == last + 120 * DAY
    assert r.active_until(last, 99) == last + 365 * DAY


@PROPERTY
@given(
    base=st.integers(1, 10**8),
    factor=st.floats(1.0, 100.0),
    max_ttl=st.one_of(st.none(), st.integers(1, 10**9)),
    count=st.integers(1, 200),
)
def test_ttl_matches_formula(base: int, factor: float, max_ttl: int | None, count: int) -> None:
    r = Retention(base_ttl=base, factor=factor, max_ttl=max_ttl)
    got = r.ttl(count)
    assert type(got) is int
    exact = base * Fraction(factor) ** (count - 1)  # exact, no float overflow
    tolerance = max(1.0, float(min(exact, 10**13)) * 1e-12 * count)
    if max_ttl is not None:
        assert got <= max_ttl
        assert abs(got - float(min(exact, max_ttl))) <= tolerance
    elif exact <= 10**12:
        assert abs(got - float(exact)) <= tolerance
    else:
        assert got > 10**12 - tolerance
    assert r.active_until(1_000, count) == 1_000 + got


@PROPERTY
@given(
    base=st.integers(1, 10**8),
    factor=st.floats(1.0, 100.0),
    max_ttl=st.one_of(st.none(), st.integers(1, 10**9)),
    count=st.integers(1, 300),
)
def test_ttl_never_shrinks_with_more_offenses(
    base: int, factor: float, max_ttl: int | None, count: int
) -> None:
    r = Retention(base_ttl=base, factor=factor, max_ttl=max_ttl)
    first, later = r.ttl(count), r.ttl(count + 1)
    assert first is not None and later is not None
    assert later >= first


# --------------------------------------------------------------------------- state

NOW = 1_700_000_000


def offender(ip: str, *, status: str = "listed", active_until: int | None = NOW + 60) -> Offender:
    return Offender(
        ip=parse_address(ip),
        first_offense=NOW - 3600,
        last_offense=NOW - 60,
        offense_count=1,
        sources=("IPS",),
        devices=("edge-1",),
        vdoms=("edge-1/root",),
        active_until=active_until,
        status=status,
    )


ALLOW: Allowlist = NetworkSet(
    [
        (IPv4Network("8.0.0.0/8"), "config"),
        (IPv4Network("8.8.8.0/24"), "store entry 3"),
        (IPv6Network("2a00:1450::/32"), "config"),
    ]
)
EMPTY: Allowlist = NetworkSet()


@pytest.mark.parametrize(
    ("ip", "status", "active_until", "allow", "expected"),
    [
        ("1.1.1.1", "listed", NOW + 1, EMPTY, "active"),
        ("1.1.1.1", "listed", None, EMPTY, "active"),
        ("1.1.1.1", "listed", NOW, EMPTY, "expired"),  # active_until is exclusive
        ("1.1.1.1", "listed", NOW - 1, EMPTY, "expired"),
        ("1.1.1.1", "unbanned", NOW + 1, EMPTY, "unbanned"),
        ("1.1.1.1", "unbanned", None, EMPTY, "unbanned"),
        ("10.0.0.1", "unbanned", None, EMPTY, "unbanned"),
        ("10.0.0.1", "listed", NOW + 1, EMPTY, "suppressed"),
        ("10.0.0.1", "listed", NOW - 1, EMPTY, "suppressed"),
        ("::ffff:192.168.0.1", "listed", None, EMPTY, "suppressed"),
        ("fe80::1", "listed", None, EMPTY, "suppressed"),
        ("8.8.8.8", "listed", NOW + 1, ALLOW, "suppressed"),
        ("8.8.8.8", "listed", NOW - 1, ALLOW, "suppressed"),
        ("8.8.8.8", "listed", NOW + 1, EMPTY, "active"),
        ("8.8.8.8", "unbanned", NOW + 1, ALLOW, "unbanned"),
        ("2a00:1450::1", "listed", None, ALLOW, "suppressed"),
        ("2a00:1451::1", "listed", None, ALLOW, "active"),
        ("9.9.9.9", "listed", NOW + 1, ALLOW, "active"),
        ("1.1.1.1", "something-else", None, EMPTY, "expired"),
    ],
)
def test_state(
    ip: str, status: str, active_until: int | None, allow: Allowlist, expected: str
) -> None:
    assert state(offender(ip, status=status, active_until=active_until), NOW, allow) == expected


def test_is_active() -> None:
    o = offender("1.1.1.1", active_until=NOW + 10)
    assert is_active(o, NOW)
    assert is_active(o, NOW + 9)
    assert not is_active(o, NOW + 10)
    assert is_active(replace(o, active_until=None), NOW + 10**9)
    assert not is_active(replace(o, status="unbanned"), NOW)


def test_suppression_reason_names_the_cause() -> None:
    assert suppression_reason(IPv4Address("10.1.2.3"), EMPTY) == "never-block: private (RFC 1918)"
    assert suppression_reason(IPv6Address("::1"), EMPTY) == "never-block: loopback (RFC 4291)"
    # The most specific allowlist entry is the one named.
    assert suppression_reason(IPv4Address("8.8.8.8"), ALLOW) == (
        "allowlisted: 8.8.8.0/24 (store entry 3)"
    )
    assert suppression_reason(IPv4Address("8.1.1.1"), ALLOW) == "allowlisted: 8.0.0.0/8 (config)"
    # Never-block takes precedence over the allowlist.
    both: Allowlist = NetworkSet([(IPv4Network("10.0.0.0/8"), "config")])
    assert suppression_reason(IPv4Address("10.0.0.1"), both) == "never-block: private (RFC 1918)"
    assert suppression_reason(IPv4Address("1.1.1.1"), ALLOW) is None


@PROPERTY
@given(st.integers(0, 2**32 - 1).map(IPv4Address), st.integers(NOW - 10**6, NOW + 10**6))
def test_state_never_active_when_suppressed(address: IPv4Address, until: int) -> None:
    o = replace(offender("1.1.1.1", active_until=until), ip=address)
    result = state(o, NOW, ALLOW)
    if suppression_reason(address, ALLOW) is not None:
        assert result == "suppressed"
    else:
        assert result == ("active" if NOW < until else "expired")
