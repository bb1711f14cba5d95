"""Lists an operator hands banfeed: parsed once, here (`import`, `unban --file`), and imported.

A line holds one entry, its first token: an address, a CIDR network, or a range ``a-b`` (also
written ``a - b``). Whatever follows the entry on the line (more columns: a date, a reason, a
score, separated by blanks or commas) is ignored, and so are comments from ``#`` or ``;`` to the
end of the line, blank lines and a UTF-8 byte order mark.

:func:`import_list` brings a list in with every guard a device report or a ban gets: addresses
become offenders (an offense from the device ``import``), networks and ranges bans with the
provenance ``imported``; what it drops is counted by reason, and each dropped line is kept with
its reason for ``--rejected``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, summarize_address_range
from pathlib import Path
from typing import Any

from .errors import InputError
from .models import Ban, BanOrigin, Event, EventKind, Offender, OffenderStatus, Offense
from .net import IPNetwork, parse_address, parse_network
from .policy import Allowlist, PrefixGuard, Retention, suppression, with_entries
from .store import Store
from .timeutil import clamp_time

IMPORT_DEVICE = "import"  # offenses from an imported list: (import, <file name>, ip, created)
MALFORMED = "malformed"

BOM = "\ufeff"
COMMENT_MARKS = ("#", ";")
MAX_LINE = 1000  # characters kept of a line shown back (a reason, the rejected file)


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One line that is not blank or only a comment."""

    number: int  # 1-based, counting every line of the file
    text: str  # the line as written, without its line end (cut at MAX_LINE)
    entry: str  # the entry: the first token, or the range
    networks: tuple[IPNetwork, ...]  # its CIDR blocks (a range: the fewest that cover it)
    is_range: bool
    error: str | None = None  # why it is not an address, network or range; no networks then

    @property
    def addresses(self) -> int:
        """How many addresses the entry covers."""
        return sum(n.num_addresses for n in self.networks)


def read_lines(path: Path) -> list[str]:
    """A list file's lines: UTF-8 (a byte order mark dropped); undecodable bytes become U+FFFD,
    so the line holding them is reported malformed instead of failing the whole file."""
    try:
        return path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: {exc.strerror or exc}") from None


def _content(line: str) -> str:
    """The line without its comment."""
    for mark in COMMENT_MARKS:
        line = line.partition(mark)[0]
    return line.strip()


def _entry_text(content: str) -> str:
    """The entry of a line: its first token, or a range written with blanks around ``-``."""
    tokens = content.replace(",", " ").replace("\t", " ").split()
    if len(tokens) >= 3 and tokens[1] == "-":
        return f"{tokens[0]}-{tokens[2]}"
    if len(tokens) >= 2 and tokens[0].endswith("-"):  # "a- b"
        return tokens[0] + tokens[1]
    if len(tokens) >= 2 and tokens[1].startswith("-") and len(tokens[1]) > 1:  # "a -b"
        return tokens[0] + tokens[1]
    return tokens[0]


def parse_entry(text: str) -> tuple[list[IPNetwork], bool]:
    """An address, a network or a range ``a-b`` as CIDR blocks, and whether it was a range."""
    if "-" not in text:
        return [parse_network(text)], False
    first_text, _, last_text = text.partition("-")
    first, last = parse_address(first_text.strip()), parse_address(last_text.strip())
    if first.version != last.version or int(first) > int(last):
        raise InputError(f"{text!r} is not a range (first > last, or mixed families)")
    pair: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address]
    pair = (first, last)  # type: ignore[assignment]
    return list(summarize_address_range(*pair)), True


def entries(lines: Iterable[str]) -> Iterator[ListEntry]:
    """The entries of a list, line by line, malformed ones included (with ``error`` set)."""
    for number, raw in enumerate(lines, start=1):
        line = raw.removeprefix(BOM) if number == 1 else raw
        content = _content(line)
        if not content:
            continue
        text = line.rstrip()[:MAX_LINE]
        entry = _entry_text(content)
        try:
            networks, is_range = parse_entry(entry)
        except InputError as exc:
            yield ListEntry(number, text, entry[:MAX_LINE], (), "-" in entry, str(exc))
            continue
        yield ListEntry(number, text, entry, tuple(networks), is_range)


# -- import ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Dropped:
    """A line (or one block of a range line) that was not imported."""

    number: int
    text: str  # the line as written; for a block of a range, the block
    reason: str  # the kind, as counted: malformed, broader than /16, never-block…
    detail: str  # the full words: "never-block: private (RFC 1918)"

    def rejected_line(self) -> str:
        """Its line of a ``--rejected`` file: the text, then the reason as a comment, so the file
        can be fixed and imported again as it is."""
        return f"{self.text} # line {self.number}: {self.detail}"


@dataclass
class ImportReport:
    lines: int = 0  # lines that are not blank or comments
    addresses: int = 0  # new offenders (would be, with dry_run)
    networks: int = 0  # bans written or replaced
    already: int = 0  # addresses already in the store, left as they are
    dry_run: bool = False
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first line dropped
    rejected: list[Dropped] = field(default_factory=list)

    def drop(self, item: Dropped) -> None:
        self.dropped[item.reason] += 1
        self.examples.setdefault(item.reason, item.text)
        self.rejected.append(item)

    @property
    def accepted(self) -> int:
        """Entries the store holds after the import (new, replaced or already known)."""
        return self.addresses + self.networks + self.already

    def record(self, source: str) -> dict[str, Any]:
        """The stable JSON shape of `banfeed import --format json` (documented in docs/cli.md)."""
        return {
            "file": source,
            "dry_run": self.dry_run,
            "lines": self.lines,
            "addresses": self.addresses,
            "networks": self.networks,
            "already_known": self.already,
            "dropped": [
                {"reason": reason, "lines": count, "first_example": self.examples[reason]}
                for reason, count in self.dropped.most_common()
            ],
        }


def refusal(network: IPNetwork, guard: PrefixGuard, allow: Allowlist) -> tuple[str, str] | None:
    """Why an imported network must not be published: ``(kind, words)``, or ``None``."""
    if network.prefixlen < guard.limit(network):
        words = f"broader than /{guard.limit(network)}"
        return words, f"{words} ([safety] max_prefix_v{network.version})"
    found = suppression(network.network_address, allow)
    if found is None and network.prefixlen < network.max_prefixlen:
        found = suppression(network.broadcast_address, allow)
    return None if found is None else (found[0].value, found[1])


def _range_refusal(entry: ListEntry, guard: PrefixGuard) -> tuple[str, str] | None:
    """The breadth guard of ``ban`` for a range as a whole: no more addresses than a network of
    the limit holds, so a wide range is not imported as its edges."""
    first = entry.networks[0]
    limit = guard.limit(first)
    if entry.addresses > 2 ** (first.max_prefixlen - limit):
        words = f"broader than /{limit}"
        detail = f"{words} ([safety] max_prefix_v{first.version})"
        return words, f"{detail}: the range covers {entry.addresses} addresses"
    return None


def import_list(
    store: Store,
    lines: Iterable[str],
    *,
    source: str,
    ttl: int | None,
    retention: Retention,
    note: str | None,
    actor: str,
    guard: PrefixGuard,
    allowlist: Allowlist,
    now: int,
    dry_run: bool = False,
    progress: Iterator[None] | None = None,
) -> ImportReport:
    """Bring an existing list in, in one transaction with one ``imported`` event (nothing
    written with ``dry_run``). Never-block, protected, allowlisted, over-broad and malformed
    lines are dropped, counted and kept in the report with their reason."""
    report = ImportReport(dry_run=dry_run)
    addresses: dict[str, Offense] = {}
    networks: dict[str, IPNetwork] = {}
    with store.read() as tx:
        allow = with_entries(allowlist, tx.allow_entries(now))
    for entry in entries(_ticking(lines, progress)):
        report.lines += 1
        if entry.error is not None:
            report.drop(Dropped(entry.number, entry.text, MALFORMED, entry.error))
            continue
        whole = _range_refusal(entry, guard) if entry.is_range else None
        if whole is not None:
            report.drop(Dropped(entry.number, entry.text, *whole))
            continue
        for network in entry.networks:
            refused = refusal(network, guard, allow)
            if refused is not None:
                text = str(network) if entry.is_range else entry.text
                report.drop(Dropped(entry.number, text, *refused))
            elif network.prefixlen == network.max_prefixlen:
                ip = network.network_address
                addresses[str(ip)] = Offense(IMPORT_DEVICE, source, ip, now, None, "imported")
            else:
                networks[str(network)] = network
    expires = None if ttl is None else clamp_time(now + ttl)
    with store.read() if dry_run else store.write() as tx:
        known = tx.load_offenders(addresses)
        report.already = len(known)
        new = [(o, text) for text, o in addresses.items() if text not in known]
        report.addresses, report.networks = len(new), len(networks)
        if dry_run:
            return report
        until = expires if ttl is not None else retention.active_until(now, 1, ("imported",))
        origin = (f"{IMPORT_DEVICE}/{source}",)
        offenders = [
            Offender(
                o.ip,
                now,
                now,
                1,
                ("imported",),
                (IMPORT_DEVICE,),
                origin,
                until,
                OffenderStatus.LISTED,
                note,
            )
            for o, _ in new
        ]
        tx.insert_offenses(new, seen=now)
        tx.insert_offenders(offenders, now, [text for _, text in new])
        for network in networks.values():
            tx.save_ban(Ban(network, now, expires, BanOrigin.IMPORTED, actor, note))
        detail = f"imported {len(new)} addresses and {len(networks)} networks from {source}"
        detail += f"; dropped {len(report.rejected)}" if report.rejected else ""
        detail = f"{detail} — {note}" if note else detail
        tx.insert_events([Event(now, EventKind.IMPORTED, None, actor, detail)])
        tx.bump_version()
    return report


def _ticking(lines: Iterable[str], progress: Iterator[None] | None) -> Iterator[str]:
    for line in lines:
        if progress is not None:
            next(progress, None)
        yield line
