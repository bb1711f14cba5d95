"""What operators do by hand: ban, unban (one target or a hundred thousand), allowlist, prune
history, release or pin a feed (importing an old list is ``importing``).

Each action is one transaction that also writes an audit event with the operator's name, and
bumps the store version so every feed reflects it at once. Everything is checked first: an
address in a never-block, protected or allowlisted range cannot be banned, a network broader
than the prefix guard cannot be banned.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
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
)
from .net import IPNetwork, carve, parse_network
from .policy import Allowlist, PrefixGuard, holes, suppression_reason, with_entries
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
class UnbanReport:
    """What an unban did: per target, whether an offender was marked and which bans went."""

    offenders: list[str] = field(default_factory=list)  # addresses marked unbanned
    bans: list[str] = field(default_factory=list)  # manual or imported bans removed
    by_target: dict[str, tuple[bool, list[str]]] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)  # targets the store holds nothing for
    kept: int = 0  # --origin import: imported offenders a device has reported too, not unbanned

    def record(self) -> dict[str, Any]:
        """The stable JSON shape of `banfeed unban --format json` (documented in docs/cli.md)."""
        return {
            "targets": len(self.by_target) + len(self.missing),
            "offenders_unbanned": len(self.offenders),
            "bans_removed": len(self.bans),
            "not_found": self.missing,
            "kept_reported_by_devices": self.kept,
            "offenders": self.offenders,
            "bans": self.bans,
        }


def parse_targets(texts: Iterable[tuple[str, str]]) -> list[IPNetwork]:
    """Unban targets ``(where, text)`` as networks, refusing every malformed one at once: an
    unban of a list is all or nothing."""
    parsed, bad = [], []
    for where, text in texts:
        try:
            parsed.append(parse_network(text.strip()))
        except InputError as exc:
            bad.append(f"{where}: {exc}")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise InputError(
            "nothing was unbanned; fix or remove these targets: " + "; ".join(bad[:5]) + more
        )
    return parsed


def unban(
    store: Store,
    targets: Iterable[IPNetwork],
    *,
    actor: str,
    note: str | None,
    now: int,
    origin: BanOrigin | None = None,
) -> UnbanReport:
    """Stop publishing addresses (or banned networks), all in one transaction with one
    ``unbanned`` event per target: marks each address's offender ``unbanned`` and removes the
    bans equal to or inside each target. With ``origin``, the targets are every ban of that
    origin instead, and for ``imported`` every offender only an import reported. A later
    offense lists an address again (a new fact). Set-based: a hundred thousand targets are a
    few dozen statements, not one round trip each."""
    report = UnbanReport()
    with store.write() as tx:
        if origin is not None:
            _unban_origin(tx, report, origin, actor, note, now)
        else:
            _unban_targets(tx, report, targets, actor, note, now)
        if not report.offenders and not report.bans and origin is None:
            missing = ", ".join(report.missing[:5])
            more = f" (and {len(report.missing) - 5} more)" if len(report.missing) > 5 else ""
            raise InputError(f"{missing}{more}: neither an offender nor a ban in the store")
        if report.offenders or report.bans:
            tx.bump_version()
    return report


def _unban_targets(
    tx: Tx,
    report: UnbanReport,
    targets: Iterable[IPNetwork],
    actor: str,
    note: str | None,
    now: int,
) -> None:
    unique = list(dict.fromkeys(targets))
    hosts = [str(n.network_address) for n in unique if n.prefixlen == n.max_prefixlen]
    marked = set(tx.unban_offenders(hosts, now))
    removed = tx.delete_bans_of(unique)
    events = []
    for network in unique:
        text = _subject(network)
        was_marked, bans = text in marked, removed.get(str(network), [])
        if not was_marked and not bans:
            report.missing.append(text)
            continue
        report.by_target[text] = (was_marked, bans)
        report.offenders += [text] if was_marked else []
        report.bans += bans
        detail = "unbanned" + (f"; bans removed: {', '.join(bans)}" if bans else "")
        events.append(Event(now, EventKind.UNBANNED, text, actor, _with_note(detail, note)))
    tx.insert_events(events)


def _unban_origin(
    tx: Tx, report: UnbanReport, origin: BanOrigin, actor: str, note: str | None, now: int
) -> None:
    detail = _with_note(f"unbanned (every {origin.value} entry)", note)
    report.bans = tx.delete_bans_of_origin(origin)
    if origin is BanOrigin.IMPORTED:
        report.offenders, report.kept = tx.unban_offenders_only_of(IMPORT_DEVICE, now)
    events = [Event(now, EventKind.UNBANNED, ip, actor, detail) for ip in report.offenders]
    for ban in report.bans:
        subject = _subject(parse_network(ban))
        report.by_target[subject] = (False, [ban])
        events.append(Event(now, EventKind.UNBANNED, subject, actor, f"{detail}; ban removed"))
    report.by_target.update((ip, (True, [])) for ip in report.offenders)
    tx.insert_events(events)


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
    return (
        str(network.network_address) if network.prefixlen == network.max_prefixlen else str(network)
    )


def _with_note(detail: str, note: str | None) -> str:
    return f"{detail} — {note}" if note else detail


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


class Approval(StrEnum):
    APPROVED = "approved"  # the hold is released now
    ALREADY = "already"  # released before, not published yet: nothing recorded again
    NOT_HELD = "not_held"


def approve_feed(
    store: Store, feed: str, *, actor: str, now: int, note: str | None = None
) -> Approval:
    """Release the mass-drop guard's hold on ``feed``. Approving a hold already released (the
    next build publishes it) records nothing again."""
    with store.write() as tx:
        state = tx.feed_states().get(feed)
        if state is None or state.held_since is None:
            return Approval.NOT_HELD
        if state.hold_approved:
            return Approval.ALREADY
        detail = _with_note(f"released the hold on {feed}", note)
        _change_feed_state(
            tx, state, EventKind.FEED_APPROVED, detail, actor, now, approved=now, approved_by=actor
        )
    return Approval.APPROVED


def pin_feed(
    store: Store, feed: str, number: int, *, actor: str, now: int, note: str | None = None
) -> FeedVersion:
    """Serve version ``number`` of ``feed`` (a rollback) until :func:`release_feed`."""
    with store.write() as tx:
        version = tx.feed_version(feed, number)
        if version is None or version.body is None:
            raise InputError(
                f"feed {feed} has no version {number} with its bytes kept — "
                "see `banfeed feeds history`"
            )
        state = tx.feed_states().get(feed) or FeedState(feed)
        detail = _with_note(f"pinned {feed} to version {number}", note)
        _change_feed_state(
            tx, state, EventKind.FEED_PINNED, detail, actor, now, pinned=number, pinned_by=actor
        )
    return version


def release_feed(store: Store, feed: str, *, actor: str, now: int, note: str | None = None) -> bool:
    """Stop serving a pinned version: publish the current build again. False if not pinned."""
    with store.write() as tx:
        state = tx.feed_states().get(feed)
        if state is None or state.pinned is None:
            return False
        detail = _with_note(f"released the pin on {feed}", note)
        _change_feed_state(
            tx, state, EventKind.FEED_RELEASED, detail, actor, now, pinned=None, pinned_by=None
        )
    return True
