"""timeutil: durations written by people, and epoch seconds shown as ISO-8601."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banfeed.errors import InputError
from banfeed.timeutil import (
    FOREVER,
    MAX_TIME,
    MIN_TIME,
    clamp_time,
    format_duration,
    http_date,
    iso,
    parse_duration,
    system_clock,
)

PROPERTY = settings(max_examples=200, deadline=None)
UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1),
        ("90s", 90),
        ("30m", 1800),
        ("12h", 43200),
        ("30d", 2592000),
        ("365d", 31536000),
        ("2w", 1209600),
        ("007s", 7),
        ("30D", 2592000),
        (" 30m ", 1800),
    ],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["forever", "FOREVER", "Forever"])
def test_parse_duration_forever(text: str) -> None:
    assert parse_duration(text) is None
    assert parse_duration(text) is FOREVER


def test_parse_duration_forever_can_be_refused() -> None:
    with pytest.raises(InputError, match="not allowed"):
        parse_duration("forever", allow_forever=False)
    assert parse_duration("10s", allow_forever=False) == 10


@pytest.mark.parametrize(
    "text",
    [
        "",
        " ",
        "5",
        "5x",
        "-5m",
        "+5m",
        "0s",
        "0w",
        "00d",
        "1.5h",
        "1e3s",
        "m",
        "s",
        "5 m",
        "5mm",
        "5ms",
        "1h30m",
        "forever!",
        "never",
        "0x10s",
        "5_000s",
    ],
)
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_duration(text)


def test_parse_duration_message_says_how_to_write_it() -> None:
    with pytest.raises(InputError) as info:
        parse_duration("5x")
    assert "'5x'" in str(info.value)
    assert "30d" in str(info.value)
    with pytest.raises(InputError, match="longer than zero"):
        parse_duration("0s")


@pytest.mark.parametrize(
    "text",
    [
        "²s",  # superscript two: str.isdigit() is True, int() refuses it
        "١٢s",  # Arabic-Indic digits: isdigit() and int() accept them, a duration should not
        "1" * 5000 + "s",  # more digits than int() converts (sys.int_info.str_digits_check)
        " " * 10_000 + "x",
    ],
)
def test_parse_duration_odd_digits_raise_input_error(text: str) -> None:
    """Every bad duration is an InputError, never a stray ValueError."""
    with pytest.raises(InputError):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "forever"),
        (1, "1s"),
        (59, "59s"),
        (60, "1m"),
        (90, "90s"),
        (3600, "1h"),
        (5400, "90m"),
        (86400, "1d"),
        (604800, "1w"),
        (30 * 86400, "30d"),
        (365 * 86400, "365d"),
        (14 * 86400, "2w"),
    ],
)
def test_format_duration(seconds: int | None, text: str) -> None:
    assert format_duration(seconds) == text


@PROPERTY
@given(st.integers(1, 10**12))
def test_format_then_parse_round_trips(seconds: int) -> None:
    text = format_duration(seconds)
    assert parse_duration(text) == seconds
    # The shortest exact spelling: the unit is the largest one that divides evenly.
    unit = text[-1]
    assert seconds % UNITS[unit] == 0
    larger = [u for u, n in UNITS.items() if n > UNITS[unit]]
    assert all(seconds % UNITS[u] != 0 for u in larger)


@PROPERTY
@given(st.integers(1, 10**6), st.sampled_from(sorted(UNITS)))
def test_parse_then_format_is_equivalent(number: int, unit: str) -> None:
    seconds = parse_duration(f"{number}{unit}")
    assert seconds == number * UNITS[unit]
    assert parse_duration(format_duration(seconds)) == seconds


def test_forever_round_trips() -> None:
    assert parse_duration(format_duration(None)) is None


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (1_700_000_000.9, "2023-11-14T22:13:20Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (4_102_444_799, "2099-12-31T23:59:59Z"),
    ],
)
def test_iso(epoch: float, text: str) -> None:
    assert iso(epoch) == text


def test_iso_none_stays_none() -> None:
    assert iso(None) is None


FAR = "9999-12-31T23:59:59Z"
EPOCH = "1970-01-01T00:00:00Z"
INT64 = st.integers(-(2**63), 2**63 - 1)
ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)


def test_max_time_is_the_last_second_of_year_9999() -> None:
    assert datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp() == MAX_TIME
    assert MAX_TIME == 253_402_300_799 and MIN_TIME == 0
    with pytest.raises((ValueError, OverflowError, OSError)):
        datetime.fromtimestamp(MAX_TIME + 1, UTC)  # why the clamp exists


@pytest.mark.parametrize(
    ("epoch", "text"),
    [
        (MAX_TIME, FAR),
        (MAX_TIME - 1, "9999-12-31T23:59:58Z"),
        (MAX_TIME + 1, FAR),
        (10**12, FAR),  # what UNCAPPED_TTL escalation stored: year ~33,700
        (10**15, FAR),
        (2**40, FAR),  # the largest `created` a device may report: year 36812
        (2**62, FAR),  # beyond even datetime's C range (an OSError, not a ValueError)
        (2**63 - 1, FAR),
        (10**100, FAR),
        (MAX_TIME + 0.5, FAR),
        (math.inf, FAR),
        (1e300, FAR),
        (-1, EPOCH),
        (-(2**63), EPOCH),
        (-0.5, EPOCH),
        (-math.inf, EPOCH),
        (math.nan, EPOCH),  # no time at all: the earliest, never an error
    ],
)
def test_iso_clamps_times_it_cannot_show(epoch: float, text: str) -> None:
    assert iso(epoch) == text


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (0, 0),
        (1, 1),
        (1.9, 1),  # floor: the second it happened in
        (1_700_000_000.999, 1_700_000_000),
        (MAX_TIME, MAX_TIME),
        (MAX_TIME + 1, MAX_TIME),
        (MAX_TIME - 0.5, MAX_TIME - 1),
        (math.inf, MAX_TIME),
        (-1, MIN_TIME),
        (-math.inf, MIN_TIME),
        (math.nan, MIN_TIME),
        (True, 1),
    ],
)
def test_clamp_time(epoch: float, expected: int) -> None:
    got = clamp_time(epoch)
    assert got == expected
    assert type(got) is int


def test_http_date_is_an_imf_fixdate() -> None:
    assert http_date(784_111_777) == "Sun, 06 Nov 1994 08:49:37 GMT"  # RFC 7231's example
    assert http_date(0) == "Thu, 01 Jan 1970 00:00:00 GMT"
    assert http_date(MAX_TIME) == "Fri, 31 Dec 9999 23:59:59 GMT"
    assert http_date(2**62) == http_date(math.inf) == http_date(MAX_TIME)
    assert http_date(-5) == http_date(math.nan) == http_date(0)
    assert http_date(1_700_000_000.7) == http_date(1_700_000_000)


@PROPERTY
@given(st.one_of(INT64, ANY_FLOAT))
def test_showing_a_time_never_raises(epoch: float) -> None:
    """Any int64 or float a store (or a hand edit) can hold is shown, clamped, never an error."""
    clamped = clamp_time(epoch)
    assert MIN_TIME <= clamped <= MAX_TIME
    text = iso(epoch)
    assert text is not None and len(text) == len(FAR)
    header = http_date(epoch)
    # Both read back as the clamped second.
    shown = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert shown.timestamp() == clamped
    assert parsedate_to_datetime(header).timestamp() == clamped


@PROPERTY
@given(st.integers(MIN_TIME, MAX_TIME))
def test_showable_times_are_shown_exactly(epoch: int) -> None:
    assert clamp_time(epoch) == epoch
    moment = datetime.fromtimestamp(epoch, UTC)
    assert iso(epoch) == moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert http_date(epoch) == format_datetime(moment, usegmt=True)


@PROPERTY
@given(INT64, INT64)
def test_clamp_keeps_order(a: int, b: int) -> None:
    low, high = sorted((a, b))
    assert clamp_time(low) <= clamp_time(high)
    assert clamp_time(clamp_time(a)) == clamp_time(a)


def test_system_clock_is_epoch_seconds() -> None:
    now = system_clock()
    assert isinstance(now, float)
    assert now > 1_700_000_000
