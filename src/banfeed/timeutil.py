"""Durations, the clock, and UTC epoch conversions (pure).

Durations are written like ``"90s"``, ``"30m"``, ``"12h"``, ``"30d"``, ``"2w"`` or ``"forever"``;
``FOREVER`` (``None``) stands for an unbounded duration. Times inside banfeed are integer epoch
seconds (UTC): they compare, store and index the same way in SQLite and PostgreSQL.

Showing a time never fails: :func:`iso` and :func:`http_date` accept any number a store may
hold (an older version's escalation, a hand edit, a device's garbage) and clamp it into
[``MIN_TIME``, ``MAX_TIME``], so a time past year 9999 is shown as ``9999-12-31T23:59:59Z``
and one before 1970 as ``1970-01-01T00:00:00Z``. One absurd row must not take ``list``,
``export`` or a feed down with it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime

from .errors import InputError

Clock = Callable[[], float]
"""Returns the current time as epoch seconds; injected so nothing below the root reads the time."""

FOREVER: None = None

MIN_TIME = 0
"""The earliest time shown: the epoch (nothing banfeed records happened before 1970)."""
MAX_TIME = 253_402_300_799
"""9999-12-31T23:59:59Z, the latest instant ``datetime`` (and so ISO-8601 and HTTP) can show."""

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def system_clock() -> float:
    return time.time()


def parse_duration(text: str, *, allow_forever: bool = True) -> int | None:
    """Parse ``"30d"`` into seconds; ``"forever"`` into ``FOREVER`` (``None``)."""
    value = text.strip().lower()
    if len(value) > 20:
        raise InputError(f"{text[:30]!r}…: too long to be a duration")
    if value == "forever":
        if not allow_forever:
            raise InputError(f"{text!r}: 'forever' is not allowed here; give a duration like '30d'")
        return FOREVER
    number, unit = value[:-1], value[-1:]
    if unit not in _UNITS or not (number.isascii() and number.isdigit()):
        raise InputError(
            f"{text!r} is not a duration: write a whole number and a unit "
            "(s, m, h, d, w), like '30m' or '30d', or 'forever'"
        )
    seconds = int(number) * _UNITS[unit]
    if seconds <= 0:
        raise InputError(f"{text!r}: a duration must be longer than zero")
    return seconds


def format_duration(seconds: int | None) -> str:
    """The shortest exact spelling of a duration (inverse of :func:`parse_duration`)."""
    if seconds is None:
        return "forever"
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def clamp_time(epoch: int | float) -> int:
    """Whole epoch seconds within [``MIN_TIME``, ``MAX_TIME``], for any int or float.

    Fractions are dropped (floor: the second it happened in); ``inf`` is ``MAX_TIME``, ``-inf``
    ``MIN_TIME``, and NaN, which is no time at all, ``MIN_TIME``.
    """
    # Compare before converting: int(inf) and int(nan) raise, and a huge int needs no floor.
    if epoch >= MAX_TIME:
        return MAX_TIME
    if epoch > MIN_TIME:
        return math.floor(epoch)  # an int keeps its value; a bool becomes a plain int
    return MIN_TIME  # also NaN, for which every comparison is false


def iso(epoch: int | float | None) -> str | None:
    """ISO-8601 UTC with a ``Z``; ``None`` stays ``None`` (no expiry, never).

    Never raises: the time is clamped first (:func:`clamp_time`), so anything past year 9999
    is ``9999-12-31T23:59:59Z``.
    """
    if epoch is None:
        return None
    return datetime.fromtimestamp(clamp_time(epoch), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def http_date(epoch: int | float) -> str:
    """RFC 7231 IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), clamped like :func:`iso`."""
    return format_datetime(datetime.fromtimestamp(clamp_time(epoch), UTC), usegmt=True)


def parse_moment(text: str, now: int, name: str) -> int | None:
    """A moment as `--since`, `--until` and the dashboard's filters take it: a duration back
    from now (``1d``, ``90m``), a UTC time (``2026-11-24``, ``2026-11-24T21:00``,
    ``2026-11-24 21:00:00Z``, with an offset if given) or epoch seconds; "" is none. ``name``
    is what the error calls it."""
    value = text.strip()
    if not value:
        return None
    if value.isascii() and value.isdigit():
        return clamp_time(int(value))
    if value[-1:].lower() in ("s", "m", "h", "d", "w") and value[:-1].isdigit():
        return now - (parse_duration(value, allow_forever=False) or 0)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"{name} {text!r}: give a duration back from now like '1d' or '90m', or a UTC "
            "time like '2026-11-24' or '2026-11-24T21:00:00Z'"
        ) from None
    return clamp_time((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
