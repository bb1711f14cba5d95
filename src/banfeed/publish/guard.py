"""Decide: publish a build, or hold the feed at its last published version.

Every guard is here, so the server, ``export``, ``collect`` and the push-feed sync are guarded
alike:

- **Mass drop.** A feed losing entries is normal: offenders expire, operators unban. A feed
  losing more than ``max_drop`` of its lines at once for no reason the store records is what a
  wiped or corrupted store, a bad restore or a bug looks like, and publishing it would unblock
  every attacker at once. Each lost line is classified: *explained* (expired, unbanned,
  filtered out, over the cap), *allowlisted* (an allowlist or protect range now covers it), or
  *unexplained* (gone from the store, or still active). Allowlisted losses count against
  ``max_drop`` too: `allow add 0.0.0.0/0 --force` must not empty a feed unseen.
- **Consumer limit.** Never more lines than the feed's ``limit`` (a FortiGate drops the newest
  lines over its limit, silently); a sharded feed never more than ``limit`` a shard.

The store lookups that classify losses are made by the caller (:class:`LossFacts`), so this
module is pure and tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from ipaddress import IPv4Network, IPv6Network, ip_network

from ..models import Ban, Event, Offender, OffenderStatus
from ..net import IPNetwork
from ..policy import is_active, suppression
from .build import FeedBuild
from .lines import Line, Lines


class Loss(StrEnum):
    EXPLAINED = "explained"
    ALLOWLISTED = "allowlisted"
    UNEXPLAINED = "unexplained"


@dataclass(frozen=True)
class LossFacts:
    """What the store says about the addresses and networks of lost lines."""

    offenders: dict[str, Offender] = field(default_factory=dict)  # by address text, any state
    inside: dict[str, list[Offender]] = field(default_factory=dict)  # lost network -> offenders
    bans: dict[str, Ban] = field(default_factory=dict)  # ban rows by network text, expired too
    unbans: list[Event] = field(default_factory=list)  # unbanned events since the old version

    @cached_property
    def unban_targets(self) -> tuple[frozenset[tuple[int, int, int]], dict[int, list[int]]]:
        """The networks ``unbans`` name as ``(version, prefix length, high bits)``, and their
        prefix lengths per family, ascending."""
        networks = [ip_network(e.ip, strict=False) for e in self.unbans if e.ip]
        targets = frozenset(
            (n.version, n.prefixlen, int(n.network_address) >> (n.max_prefixlen - n.prefixlen))
            for n in networks
        )
        lengths = {v: sorted({n.prefixlen for n in networks if n.version == v}) for v in (4, 6)}
        return targets, lengths


def classify(line: Line, build: FeedBuild, facts: LossFacts) -> Loss:
    """Why a published line would disappear."""
    now = build.built
    if isinstance(line, IPv4Network | IPv6Network):
        network: IPNetwork = line
        if build.allowlist.overlapping(network):
            return Loss.ALLOWLISTED
        if _unbanned(network, facts):
            return Loss.EXPLAINED
        ban = facts.bans.get(str(network))
        if ban is not None and ban.expires is not None and ban.expires <= now:
            return Loss.EXPLAINED
        members = facts.inside.get(str(network), [])
        if members and not any(_still_publishable(o, build) for o in members):
            return Loss.EXPLAINED  # the escalation or block shrank as its offenders went
        return Loss.UNEXPLAINED
    if suppression(line, build.allowlist) is not None:
        return Loss.ALLOWLISTED
    if _unbanned(line, facts):
        return Loss.EXPLAINED
    ban = facts.bans.get(str(ip_network(line)))
    if ban is not None and ban.expires is not None and ban.expires <= now:
        return Loss.EXPLAINED
    offender = facts.offenders.get(str(line))
    if offender is None:
        return Loss.UNEXPLAINED  # deleted behind our back
    if offender.status == OffenderStatus.UNBANNED or not is_active(offender, now):
        return Loss.EXPLAINED
    if build.spec.excludes(offender, now) is not None or build.overflow:
        return Loss.EXPLAINED  # filtered out, or over the cap
    return Loss.UNEXPLAINED  # nothing says why it should go


def _still_publishable(offender: Offender, build: FeedBuild) -> bool:
    return is_active(offender, build.built) and build.spec.excludes(offender, build.built) is None


def _unbanned(line: Line, facts: LossFacts) -> bool:
    """Is the line inside the target of an unban? One set probe per prefix length the targets
    use, so a loss of 100,000 lines after an unban of as many stays linear."""
    targets, lengths = facts.unban_targets
    if isinstance(line, IPv4Network | IPv6Network):
        version, prefixlen, value = line.version, line.prefixlen, int(line.network_address)
    else:
        version, prefixlen, value = line.version, line.max_prefixlen, int(line)
    bits = 32 if version == 4 else 128
    for length in lengths[version]:
        if length > prefixlen:
            break
        if (version, length, value >> (bits - length)) in targets:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Decision:
    publish: bool
    reason: str  # why held, or why published
    before: int = 0
    lost: int = 0
    unexplained: int = 0
    allowlisted: int = 0


def needs_facts(old: Lines, lost: Lines, max_drop: float) -> bool:
    """Only a loss above ``max_drop`` needs explaining (and store lookups)."""
    return len(old) > 0 and len(lost) > max_drop * len(old)


def decide(
    build: FeedBuild,
    old: Lines | None,
    lost: Lines,
    facts: LossFacts | None,
    max_drop: float,
) -> Decision:
    """Publish ``build`` over the last published lines ``old`` (None: nothing published yet)?"""
    spec = build.spec
    if len(build.entries) > spec.capacity:  # a bug upstream: never hand it on
        return Decision(False, f"{len(build.entries)} lines exceed limit ({spec.capacity})")
    if len(build.shards) != (spec.shards if spec.shards > 1 else 0):
        return Decision(False, f"{len(build.shards)} shards built, {spec.shards} configured")
    oversized = [k for k, shard in enumerate(build.shards, 1) if len(shard) > spec.max_entries]
    if oversized:
        return Decision(
            False, f"shards {oversized} exceed the limit of a shard ({spec.max_entries})"
        )
    if old is None:
        return Decision(True, "first version")
    before = len(old)
    if facts is None or not needs_facts(old, lost, max_drop):
        return Decision(True, "update", before, len(lost))
    counts = {kind: 0 for kind in Loss}
    for line in lost:
        counts[classify(line, build, facts)] += 1
    held = counts[Loss.UNEXPLAINED] + counts[Loss.ALLOWLISTED]
    if held <= max_drop * before:
        return Decision(True, "update", before, len(lost), counts[Loss.UNEXPLAINED])
    parts = []
    if counts[Loss.UNEXPLAINED]:
        parts.append(f"{counts[Loss.UNEXPLAINED]} with no expiry or unban recorded")
    if counts[Loss.ALLOWLISTED]:
        parts.append(f"{counts[Loss.ALLOWLISTED]} removed by allowlist or protect ranges")
    reason = (
        f"{held} of {before} published entries would disappear ({'; '.join(parts)}), more "
        f"than max_drop {max_drop:.0%}; serving the last good version — check the store and "
        "the allowlist, then `banfeed feeds approve`"
    )
    return Decision(
        False, reason, before, len(lost), counts[Loss.UNEXPLAINED], counts[Loss.ALLOWLISTED]
    )
