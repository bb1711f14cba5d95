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
    AllowKind,
    AllowLabel,
    Allowlist,
    Retention,
    is_active,
    state,
    suppression_reason,
)
from banfeed.timeutil import MAX_TIME, iso

PROPERTY = settings(max_examples=200, deadline=None)
DAY = 86400
NOW = 1_700_000_000

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
    assert ttl == MAX_TIME  # finite, and no longer than the whole showable range
    assert unbounded.active_until(0, 10_000) == MAX_TIME
    assert unbounded.active_until(NOW, 10_000) == MAX_TIME

    wild = Retention(base_ttl=DAY, factor=100.0, max_ttl=None)
    assert type(wild.ttl(10_000)) is int
    assert wild.active_until(NOW, 10**9) == MAX_TIME


def test_an_int_factor_does_not_build_a_huge_power() -> None:
    """factor = 2 in TOML may arrive as an int: 2 ** 10**9 would be a 125 MB integer."""
    r = Retention(base_ttl=DAY, factor=2, max_ttl=None)
    assert r.ttl(10**9) == MAX_TIME
    assert r.ttl(3) == 4 * DAY and type(r.ttl(3)) is int


def test_repeat_offender_with_max_ttl_forever_is_capped_at_year_9999() -> None:
    """The bug: the documented max_ttl = "forever" and factor 2 put the 20th offense in year
    ~33,700 (last offense + 10**12 s), and every command showing it raised ValueError."""
    r = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=None)
    assert r.active_until(NOW, 1) == NOW + 30 * DAY
    until = r.active_until(NOW, 20)
    assert until == MAX_TIME
    assert iso(until) == "9999-12-31T23:59:59Z"
    for count in range(1, 200):
        until = r.active_until(NOW, count)
        assert until is not None and until <= MAX_TIME
        assert iso(until) is not None
    hourly = Retention(base_ttl=3600, factor=2.0, max_ttl=None)
    assert hourly.active_until(NOW, 40) == MAX_TIME  # 1h × 2^39: ~63 million years


def test_expiry_below_the_cap_is_exact() -> None:
    r = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=None)
    last = MAX_TIME - 31 * DAY
    assert r.active_until(last, 1) == last + 30 * DAY
    assert r.active_until(last, 2) == MAX_TIME  # 60 days would pass year 9999
    assert r.active_until(MAX_TIME, 1) == MAX_TIME
    assert r.active_until(2**62, 1) == MAX_TIME  # a garbage last offense is capped too


def test_forever_stays_none_not_a_huge_number() -> None:
    r = Retention(base_ttl=None, factor=2.0, max_ttl=None)
    for count in (0, 1, 2, 20, 40, 10**9):
        assert r.ttl(count) is None
        assert r.active_until(NOW, count) is None
        assert r.active_until(NOW, count) is None  # and again, from the cache


def test_the_ttl_cache_is_invisible() -> None:
    """Remembering TTLs per count changes no answer, no equality, no hash and no repr."""
    used = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=365 * DAY)
    fresh = Retention(base_ttl=30 * DAY, factor=2.0, max_ttl=365 * DAY)
    first = [used.active_until(NOW, n) for n in range(1, 10_000)]  # more counts than it keeps
    again = [used.active_until(NOW, n) for n in range(1, 10_000)]
    assert first == again == [NOW + (fresh.ttl(n) or 0) for n in range(1, 10_000)]
    assert used == fresh and hash(used) == hash(fresh)
    assert (
        repr(used)
        == repr(fresh)
        == (f"Retention(base_ttl={30 * DAY}, factor=2.0, max_ttl={365 * DAY})")
    )
    assert replace(used, factor=3.0).active_until(NOW, 2) == NOW + 90 * DAY
    assert used.active_until(NOW, 2) == NOW + 60 * DAY


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
    bound = min(exact, max_ttl) if max_ttl is not None else exact
    tolerance = max(1.0, float(min(bound, MAX_TIME)) * 1e-12 * count)
    assert got <= MAX_TIME
    if max_ttl is not None:
        assert got <= max_ttl
    # The formula, or the longest TTL that matters (MAX_TIME seconds) when it is longer.
    assert abs(got - float(min(bound, MAX_TIME))) <= tolerance
    assert r.active_until(1_000, count) == min(1_000 + got, MAX_TIME)


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
    until, later_until = r.active_until(NOW, count), r.active_until(NOW, count + 1)
    assert until is not None and later_until is not None
    assert later_until >= until


@PROPERTY
@given(
    base=st.one_of(st.none(), st.integers(1, 10**12)),
    factor=st.floats(1.0, 100.0),
    max_ttl=st.one_of(st.none(), st.integers(1, 10**13)),
    count=st.integers(-10, 10**7),
    last=st.integers(0, 2**62),
)
def test_active_until_never_passes_max_time(
    base: int | None, factor: float, max_ttl: int | None, count: int, last: int
) -> None:
    """Whatever the settings and the history, an expiry can be stored and shown; forever is
    None (never a huge number), and below the cap the expiry is last offense + TTL exactly."""
    r = Retention(base_ttl=base, factor=factor, max_ttl=max_ttl)
    until = r.active_until(last, count)
    if base is None:
        assert until is None and r.ttl(count) is None
        return
    ttl = r.ttl(count)
    assert until is not None and ttl is not None
    assert until <= MAX_TIME
    assert until == min(last + ttl, MAX_TIME)
    assert iso(until) is not None


# --------------------------------------------------------------------------- state


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
        (IPv4Network("8.0.0.0/8"), AllowLabel(AllowKind.CONFIG, "config")),
        (IPv4Network("8.8.8.0/24"), AllowLabel(AllowKind.STORE, "store entry 3")),
        (IPv6Network("2a00:1450::/32"), AllowLabel(AllowKind.CONFIG, "config")),
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
    both: Allowlist = NetworkSet([(IPv4Network("10.0.0.0/8"), AllowLabel(AllowKind.CONFIG, "c"))])
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
