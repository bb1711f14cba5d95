"""What operators do by hand: ban, unban, allowlist, import an old list, prune history.

Each action is one transaction that also writes an audit event with the operator's name, and
bumps the store version so every feed reflects it at once. Everything is checked first: an
address in a never-block, protected or allowlisted range cannot be banned, a network broader
than the prefix guard cannot be banned, and an import reports every line it drops and why.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, summarize_address_range
from typing import Any

from .errors import InputError
from .models import (
    AllowEntry,
    Ban,
    BanOrigin,
    Event,
    EventKind,
    FeedState,
    FeedVersion,
    Offender,
    OffenderStatus,
    Offense,
)
from .net import IPNetwork, carve, parse_address, parse_network
from .policy import (
    Allowlist,
    PrefixGuard,
    Retention,
    holes,
    suppression,
    suppression_reason,
    with_entries,
)
from .store import Store, Tx
from .timeutil import clamp_time, iso

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
    force: bool = False,
) -> Ban:
    network = parse_network(target.strip())
    forced = _guarded(guard, network, "ban", force)
    with store.write() as tx:
        allow = with_entries(allowlist, tx.allow_entries(now))
        _check_publishable(network, allow)
        expires = None if ttl is None else clamp_time(now + ttl)
        entry = Ban(network, now, expires, BanOrigin.MANUAL, actor, note)
        tx.save_ban(entry)
        detail = f"banned {network} until {'unbanned' if ttl is None else iso(expires)}{forced}"
        tx.insert_events(
            [Event(now, EventKind.BANNED, _subject(network), actor, _with_note(detail, note))]
        )
        tx.bump_version()
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
    with store.write() as tx:
        marked = network.num_addresses == 1 and tx.set_offender_status(
            text, OffenderStatus.UNBANNED, now
        )
        removed = tx.delete_bans_within(network)
        if not marked and not removed:
            raise InputError(f"{text}: neither an offender nor a ban in the store")
        detail = "unbanned" + (f"; bans removed: {', '.join(removed)}" if removed else "")
        tx.insert_events([Event(now, EventKind.UNBANNED, text, actor, _with_note(detail, note))])
        tx.bump_version()
    return UnbanResult(text, marked, removed)


def allow_add(
    store: Store,
    target: str,
    *,
    expires: int | None,
    note: str | None,
    actor: str,
    now: int,
    guard: PrefixGuard,
    force: bool = False,
) -> AllowEntry:
    """Never publish ``target``. Broader than the prefix guard only with ``force`` (recorded):
    ``0.0.0.0/0`` would empty every IPv4 feed. A large drop it causes is still held by the
    mass-drop guard until approved."""
    network = parse_network(target.strip())
    forced = _guarded(guard, network, "allowlist", force)
    expires = None if expires is None else clamp_time(expires)
    entry = AllowEntry(network, now, expires, actor, note)
    with store.write() as tx:
        tx.save_allow_entry(entry)
        until = "" if expires is None else f" until {iso(expires)}"
        detail = f"allowlisted{until}{forced}"
        tx.insert_events(
            [
                Event(
                    now,
                    EventKind.ALLOWLIST_ADDED,
                    _subject(network),
                    actor,
                    _with_note(detail, note),
                )
            ]
        )
        tx.bump_version()
    return entry


def allow_remove(store: Store, target: str, *, actor: str, now: int) -> None:
    network = parse_network(target.strip())
    with store.write() as tx:
        if not tx.delete_allow_entry(str(network)):
            raise InputError(f"{network} is not in the store's allowlist (config entries stay)")
        tx.insert_events(
            [Event(now, EventKind.ALLOWLIST_REMOVED, _subject(network), actor, "removed")]
        )
        tx.bump_version()


def _guarded(guard: PrefixGuard, network: IPNetwork, action: str, force: bool) -> str:
    """Apply the prefix guard to an operator's ban or allow entry (one rule for both); returns
    what the audit event says when ``force`` took it past the guard."""
    if not force:
        guard.check(network, action=action)
        return ""
    return f" (--force: broader than /{guard.limit(network)})" if guard.broader(network) else ""


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
    with store.read() as tx:
        allow = with_entries(allowlist, tx.allow_entries(now))
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
    expires = None if ttl is None else clamp_time(now + ttl)
    with store.write() as tx:
        known = tx.load_offenders(addresses)
        report.already = len(known)
        new = [(o, text) for text, o in addresses.items() if text not in known]
        until = expires if ttl is not None else retention.active_until(now, 1)
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
        tx.insert_events([Event(now, EventKind.IMPORTED, None, actor, _with_note(detail, note))])
        tx.bump_version()
    report.addresses, report.networks = len(new), len(networks)
    return report


def _import_refusal(network: IPNetwork, guard: PrefixGuard, allow: Allowlist) -> str | None:
    if network.prefixlen < guard.limit(network):
        return f"broader than /{guard.limit(network)}"
    found = suppression(network.network_address, allow)
    if found is None and network.num_addresses > 1:
        found = suppression(network.broadcast_address, allow)
    return None if found is None else found[0].value  # never-block / protected / allowlisted


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
    with store.write() as tx:
        last = int(tx.get_meta("last_prune") or 0)
        expired = tx.offenders_expired_between(last, now)  # not a scan of every offender
        tx.insert_events(
            [Event(until, EventKind.EXPIRED, ip, actor, "retention ended") for ip, until in expired]
        )
        offenses = events = offenders = 0
        if keep_history is not None:
            before = now - keep_history
            offenses, events = tx.prune_history(before)
            offenders = len(tx.delete_expired_offenders(before))
        tx.set_meta("last_prune", str(now))
        if offenders:
            tx.bump_version()
    return PruneReport(len(expired), offenses, events, offenders)


def _change_feed_state(
    tx: Tx, state: FeedState, kind: EventKind, detail: str, actor: str, now: int, **changes: Any
) -> None:
    """An operator's change of a feed's state, with its event; servers publish at once."""
    tx.save_feed_state(dataclasses.replace(state, **changes))
    tx.insert_events([Event(now, kind, None, actor, detail)])
    tx.bump_version()


def approve_feed(store: Store, feed: str, *, actor: str, now: int) -> bool:
    """Release the mass-drop guard's hold on ``feed``; False if it was not held."""
    with store.write() as tx:
        state = tx.feed_states().get(feed)
        if state is None or state.held_since is None:
            return False
        detail = f"released the hold on {feed}"
        _change_feed_state(
            tx, state, EventKind.FEED_APPROVED, detail, actor, now, approved=now, approved_by=actor
        )
    return True


def pin_feed(store: Store, feed: str, number: int, *, actor: str, now: int) -> FeedVersion:
    """Serve version ``number`` of ``feed`` (a rollback) until :func:`release_feed`."""
    with store.write() as tx:
        version = tx.feed_version(feed, number)
        if version is None or version.body is None:
            raise InputError(
                f"feed {feed} has no version {number} with its bytes kept — "
                "see `banfeed feeds history`"
            )
        state = tx.feed_states().get(feed) or FeedState(feed)
        detail = f"pinned {feed} to version {number}"
        _change_feed_state(
            tx, state, EventKind.FEED_PINNED, detail, actor, now, pinned=number, pinned_by=actor
        )
    return version


def release_feed(store: Store, feed: str, *, actor: str, now: int) -> bool:
    """Stop serving a pinned version: publish the current build again. False if not pinned."""
    with store.write() as tx:
        state = tx.feed_states().get(feed)
        if state is None or state.pinned is None:
            return False
        detail = f"released the pin on {feed}"
        _change_feed_state(
            tx, state, EventKind.FEED_RELEASED, detail, actor, now, pinned=None, pinned_by=None
        )
    return True
