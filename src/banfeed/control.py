"""What operators do by hand: ban, unban, allowlist, import an old list, prune history.

Each action is one transaction that also writes an audit event with the operator's name, and
bumps the store version so every feed reflects it at once. Everything is checked first: an
address in a never-block, protected or allowlisted range cannot be banned, a network broader
than the prefix guard cannot be banned, and an import reports every line it drops and why.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, summarize_address_range

from .errors import InputError
from .models import AllowEntry, Ban, Event, Offender, Offense
from .net import IPNetwork, carve, parse_address, parse_network
from .policy import (
    Allowlist,
    PrefixGuard,
    Retention,
    holes,
    suppression_reason,
    with_entries,
)
from .store import Store
from .store import queries as q
from .timeutil import iso

IMPORT_DEVICE = "import"  # offenses from an imported list: (import, <file name>, ip, created)


def _check_publishable(network: IPNetwork, allowlist: Allowlist) -> None:
    """Refuse a ban of which nothing would be published (wholly never-block, protected or
    allowlisted), naming why — exactly, by carving, for IPv4 and IPv6 alike."""
    if not carve([network], holes(allowlist)):
        reason = suppression_reason(network.network_address, allowlist) or "excluded ranges"
        raise InputError(f"{network} is not publishable: {reason}")


def ban(
    store: Store,
    target: str,
    *,
    ttl: int | None,
    note: str | None,
    actor: str,
    guard: PrefixGuard,
    allowlist: Allowlist,
    now: int,
) -> Ban:
    network = parse_network(target.strip())
    guard.check_ban(network)
    with store.write() as conn:
        allow = with_entries(allowlist, q.allow_entries(conn, now))
        _check_publishable(network, allow)
        entry = Ban(network, now, None if ttl is None else now + ttl, "manual", actor, note)
        q.save_ban(conn, entry)
        detail = f"banned {network} until {'unbanned' if ttl is None else iso(now + ttl)}"
        q.insert_events(
            conn, [Event(now, "banned", _subject(network), actor, _with_note(detail, note))]
        )
        q.bump_version(conn)
    return entry


@dataclass
class UnbanResult:
    target: str
    offender: bool  # an offender row was marked unbanned
    bans: list[str]  # manual or imported bans removed


def unban(store: Store, target: str, *, actor: str, note: str | None, now: int) -> UnbanResult:
    """Stop publishing an address (or a banned network): marks the offender ``unbanned`` and
    removes bans equal to or inside it. A later offense lists it again (a new fact)."""
    network = parse_network(target.strip())
    text = str(network.network_address) if network.num_addresses == 1 else str(network)
    with store.write() as conn:
        marked = network.num_addresses == 1 and q.set_offender_status(conn, text, "unbanned", now)
        removed = q.delete_bans_within(conn, network)
        if not marked and not removed:
            raise InputError(f"{text}: neither an offender nor a ban in the store")
        detail = "unbanned" + (f"; bans removed: {', '.join(removed)}" if removed else "")
        q.insert_events(conn, [Event(now, "unbanned", text, actor, _with_note(detail, note))])
        q.bump_version(conn)
    return UnbanResult(text, marked, removed)


def allow_add(
    store: Store, target: str, *, expires: int | None, note: str | None, actor: str, now: int
) -> AllowEntry:
    network = parse_network(target.strip())
    entry = AllowEntry(network, now, expires, actor, note)
    with store.write() as conn:
        q.save_allow_entry(conn, entry)
        until = "" if expires is None else f" until {iso(expires)}"
        detail = _with_note(f"allowlisted{until}", note)
        q.insert_events(conn, [Event(now, "allowlist_added", _subject(network), actor, detail)])
        q.bump_version(conn)
    return entry


def allow_remove(store: Store, target: str, *, actor: str, now: int) -> None:
    network = parse_network(target.strip())
    with store.write() as conn:
        if not q.delete_allow_entry(conn, str(network)):
            raise InputError(f"{network} is not in the store's allowlist (config entries stay)")
        q.insert_events(
            conn, [Event(now, "allowlist_removed", _subject(network), actor, "removed")]
        )
        q.bump_version(conn)


def _subject(network: IPNetwork) -> str:
    """How an event names its subject: a host network is its address, so `show` finds it."""
    return str(network.network_address) if network.num_addresses == 1 else str(network)


def _with_note(detail: str, note: str | None) -> str:
    return f"{detail} — {note}" if note else detail


# -- import ----------------------------------------------------------------------------------


@dataclass
class ImportReport:
    lines: int = 0
    addresses: int = 0
    networks: int = 0
    already: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> first line dropped

    def drop(self, reason: str, line: str) -> None:
        self.dropped[reason] += 1
        self.examples.setdefault(reason, line)


def parse_list_line(line: str) -> list[IPNetwork]:
    """One line of an old list: an address, a CIDR network or a range ``a-b``."""
    text = line.strip()
    if "-" in text:
        first_text, _, last_text = text.partition("-")
        first, last = parse_address(first_text.strip()), parse_address(last_text.strip())
        if first.version != last.version or int(first) > int(last):
            raise InputError(f"{text!r} is not a range (first > last, or mixed families)")
        pair: tuple[IPv4Address, IPv4Address] | tuple[IPv6Address, IPv6Address]
        pair = (first, last)  # type: ignore[assignment]
        return list(summarize_address_range(*pair))
    return [parse_network(text)]


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
    progress: Iterator[None] | None = None,
) -> ImportReport:
    """Bring an existing list in: addresses become offenders (an offense from device
    ``import``), networks and ranges become bans with provenance ``imported``. Never-block,
    protected, allowlisted, over-broad and malformed lines are dropped and counted."""
    report = ImportReport()
    addresses: dict[str, Offense] = {}
    networks: dict[str, IPNetwork] = {}
    with store.read() as conn:
        allow = with_entries(allowlist, q.allow_entries(conn, now))
    for raw in lines:
        if progress is not None:
            next(progress, None)
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        report.lines += 1
        try:
            parsed = parse_list_line(line)
        except InputError:
            report.drop("malformed", line)
            continue
        for network in parsed:
            reason = _import_refusal(network, guard, allow)
            if reason is not None:
                report.drop(reason, line)
            elif network.num_addresses == 1:
                ip = network.network_address
                addresses[str(ip)] = Offense(IMPORT_DEVICE, source, ip, now, None, "imported")
            else:
                networks[str(network)] = network
    expires = None if ttl is None else now + ttl
    with store.write() as conn:
        known = q.load_offenders(conn, addresses)
        report.already = len(known)
        new = [(o, text) for text, o in addresses.items() if text not in known]
        until = expires if ttl is not None else retention.active_until(now, 1)
        origin = (f"{IMPORT_DEVICE}/{source}",)
        rows = [
            q.offender_tuple(
                Offender(
                    o.ip,
                    now,
                    now,
                    1,
                    ("imported",),
                    (IMPORT_DEVICE,),
                    origin,
                    until,
                    "listed",
                    note,
                ),
                now,
                text,
            )
            for o, text in new
        ]
        q.insert_offenses(conn, new, seen=now)
        q.insert_offenders(conn, rows)
        for network in networks.values():
            q.save_ban(conn, Ban(network, now, expires, "imported", actor, note))
        detail = f"imported {len(new)} addresses and {len(networks)} networks from {source}"
        q.insert_events(conn, [Event(now, "imported", None, actor, _with_note(detail, note))])
        q.bump_version(conn)
    report.addresses, report.networks = len(new), len(networks)
    return report


def _import_refusal(network: IPNetwork, guard: PrefixGuard, allow: Allowlist) -> str | None:
    if network.prefixlen < guard.limit(network):
        return f"broader than /{guard.limit(network)}"
    reason = suppression_reason(network.network_address, allow)
    if reason is None and network.num_addresses > 1:
        reason = suppression_reason(network.broadcast_address, allow)
    if reason is not None:
        return reason.split(":")[0]  # never-block / protected / allowlisted
    return None


# -- prune -----------------------------------------------------------------------------------


@dataclass
class PruneReport:
    expired_events: int
    offenses: int
    events: int
    offenders: int


def prune(store: Store, *, keep_history: int | None, actor: str, now: int) -> PruneReport:
    """Apply retention now: record an ``expired`` event for each offender whose active_until
    passed since the last prune; delete history (offenses, events, long-expired offenders)
    older than ``keep_history``."""
    with store.write() as conn:
        last = int(q.get_meta(conn, "last_prune") or 0)
        expired = q.offenders_expired_between(conn, last, now)  # not a scan of every offender
        q.insert_events(
            conn, [Event(until, "expired", ip, actor, "retention ended") for ip, until in expired]
        )
        offenses = events = offenders = 0
        if keep_history is not None:
            before = now - keep_history
            offenses, events = q.prune_history(conn, before)
            offenders = len(q.delete_expired_offenders(conn, before))
        q.set_meta(conn, "last_prune", str(now))
        if offenders:
            q.bump_version(conn)
    return PruneReport(len(expired), offenses, events, offenders)


def approve_feed(store: Store, feed: str, *, actor: str, now: int) -> bool:
    """Release the mass-drop guard's hold on ``feed``; False if it was not held."""
    with store.write() as conn:
        state = q.feed_states(conn).get(feed)
        if state is None or state["held_since"] is None:
            return False
        q.save_feed_state(conn, {"feed": feed, "approved": now})
        q.insert_events(
            conn, [Event(now, "feed_approved", None, actor, f"released the hold on {feed}")]
        )
        q.bump_version(conn)  # servers rebuild at once
    return True
