"""Filter options of `list`, `bans` and `events`, and the targets of `unban`, parsed at the edge."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import InputError
from ..net import IPNetwork, parse_network
from ..timeutil import parse_moment


def parse_since(text: str | None, now: int) -> int | None:
    """``--since``: a duration back from now, a UTC time or epoch seconds
    (``timeutil.parse_moment``)."""
    return None if text is None else parse_moment(text, now, "--since")


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
