"""Filter options of `list`, `bans` and `events`, and the targets of `unban`, parsed at the edge."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from ..errors import InputError
from ..net import IPNetwork, parse_network
from ..timeutil import clamp_time, parse_duration


def parse_since(text: str | None, now: int) -> int | None:
    """``--since``: a duration back from now (``"1d"``, ``"90m"``), a UTC time
    (``2026-11-24``, ``2026-11-24T21:00``, ``2026-11-24 21:00:00Z``, with an offset if given)
    or epoch seconds."""
    if text is None:
        return None
    value = text.strip()
    if value.isascii() and value.isdigit():
        return clamp_time(int(value))
    if value[-1:].lower() in ("s", "m", "h", "d", "w") and value[:-1].isdigit():
        seconds = parse_duration(value, allow_forever=False)
        return now - (seconds or 0)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise InputError(
            f"--since {text!r}: give a duration back from now like '1d' or '90m', or a UTC "
            "time like '2026-11-24' or '2026-11-24T21:00:00Z'"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return clamp_time(moment.timestamp())


def parse_within(text: str | None, option: str) -> IPNetwork | None:
    """``--network``/``--address``: an address or a network (host bits zero)."""
    if text is None:
        return None
    try:
        return parse_network(text.strip())
    except InputError as exc:
        raise InputError(f"{option}: {exc}") from None


ORIGINS = {"manual": "manual", "imported": "imported", "import": "imported"}


def unban_targets(targets: tuple[str, ...], file: Path | None) -> tuple[list[IPNetwork], list[str]]:
    """The networks to unban, and the lines skipped as malformed. Arguments must all be
    addresses or networks (else nothing is done); ``-`` (standard input) and ``--file`` are
    lists in the format of `import` (comments, extra columns, ranges as their CIDR blocks), so
    an imported file undoes its import, and its malformed lines, never imported, are skipped."""
    from ..control import parse_targets
    from ..importing import BOM, entries, read_lines

    networks = parse_targets(("argument", t) for t in targets if t != "-")
    lists: list[tuple[str, list[str]]] = []
    if "-" in targets:
        lists.append(("stdin", sys.stdin.read().removeprefix(BOM).splitlines()))
    if file is not None:
        lists.append((str(file), read_lines(file)))
    skipped = []
    for name, lines in lists:
        for entry in entries(lines):
            if entry.error is not None:
                skipped.append(f"{name} line {entry.number}: {entry.error}")
            networks.extend(entry.networks)
    return networks, skipped
