"""Durations, the clock, and UTC epoch conversions (pure).

Durations are written like ``"90s"``, ``"30m"``, ``"12h"``, ``"30d"``, ``"2w"`` or ``"forever"``;
``FOREVER`` (``None``) stands for an unbounded duration. Times inside banfeed are integer epoch
seconds (UTC): they compare, store and index the same way in SQLite and PostgreSQL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from .errors import InputError

Clock = Callable[[], float]
"""Returns the current time as epoch seconds; injected so nothing below the root reads the time."""

FOREVER: None = None

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


def iso(epoch: int | float | None) -> str | None:
    """ISO-8601 UTC with a ``Z``; ``None`` stays ``None`` (no expiry, never)."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
