"""Explain: is this address in this feed, and why — a lookup in a :class:`FeedBuild`.

``listed`` is decided by one thing only: whether a line of the feed covers the address. The
reason is then read from what the build recorded (the offender, a ban, an escalated prefix, an
aggregated block), or, for an address no line covers, from why the build left it out (never
published, filtered, capped) or why it was not an input at all (expired, unbanned, unknown).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from ..models import Event, EventKind, Offender, OffenderStatus
from ..net import IPAddress
from ..policy import is_active, suppression
from ..timeutil import iso
from .active import Member
from .build import FeedBuild


class Why(StrEnum):
    """The kind of a verdict's reason (stable: the JSON of `show` carries it)."""

    OFFENDER = "offender"  # listed: its own line
    AGGREGATED = "aggregated"  # listed: inside a merged block
    BAN = "ban"  # listed: covered by a manual or imported ban
    ESCALATED = "escalated"  # listed: covered by an escalated prefix
    NEVER_BLOCK = "never-block"
    PROTECTED = "protected"
    ALLOWLISTED = "allowlisted"
    FILTERED = "filtered"
    CAPPED = "capped"  # left out by the feed's limit
    EXPIRED = "expired"
    UNBANNED = "unbanned"
    UNKNOWN = "unknown"  # not in the store, no ban covers it


@dataclass(frozen=True, slots=True)
class Verdict:
    listed: bool
    why: Why
    reason: str
    line: str | None = None  # the feed line that covers the address


def explain(
    build: FeedBuild,
    ip: IPAddress,
    offender: Offender | None,
    events: list[Event] = (),  # type: ignore[assignment]
) -> Verdict:
    """Whether ``build`` publishes ``ip``, and why. ``offender`` is the store's row for ``ip``
    (any state) and ``events`` its audit events: they explain addresses that were no input."""
    line = build.covering(ip)
    if line is not None:
        return _listed(build, ip, str(line))
    found = suppression(ip, build.allowlist)
    if found is not None:
        kind, words = found
        return Verdict(False, Why(kind.value), f"suppressed — {words}")
    active = build.active(ip)
    if active is not None:
        excluded = build.spec.excludes(active, build.built)
        if excluded is not None:
            return Verdict(False, Why.FILTERED, f"filtered out: {excluded[1]}")
        return Verdict(False, Why.CAPPED, _capped(build, active))
    for ban in build.inputs.bans:
        if ban.network.version == ip.version and ip in ban.network:
            excluded_ban = build.spec.excludes_ban(ban)
            if excluded_ban is not None:
                return Verdict(
                    False, Why.FILTERED, f"ban {ban.network} filtered out: {excluded_ban[1]}"
                )
            return Verdict(False, Why.CAPPED, f"ban {ban.network} left out by the feed's limit")
    if offender is None:
        return Verdict(False, Why.UNKNOWN, "not in the store, and no ban covers it")
    if offender.status == OffenderStatus.UNBANNED:
        unbans = [e for e in events if e.kind == EventKind.UNBANNED]
        who = f" by {unbans[-1].actor} at {iso(unbans[-1].time)}" if unbans else ""
        return Verdict(False, Why.UNBANNED, f"unbanned{who}")
    if not is_active(offender, build.built):
        return Verdict(False, Why.EXPIRED, f"expired at {iso(offender.active_until)}")
    # Active in the store but not in this build's snapshot: it became active after the build.
    return Verdict(False, Why.UNKNOWN, "not in the snapshot this feed was built from")


def _listed(build: FeedBuild, ip: IPAddress, line: str) -> Verdict:
    published = build.offenders.get(ip)
    if published is not None:
        if line == str(ip):
            return Verdict(
                True, Why.OFFENDER, f"offender ({published.offense_count} offenses)", line
            )
        return Verdict(True, Why.AGGREGATED, f"offender, published within block {line}", line)
    for escalated in build.escalated:
        if escalated.prefix.version == ip.version and ip in escalated.prefix:
            return Verdict(
                True,
                Why.ESCALATED,
                f"covered by escalated prefix {escalated.prefix} "
                f"({escalated.offenders} active offenders of this feed)",
                line,
            )
    for ban in build.bans:
        if ban.network.version == ip.version and ip in ban.network:
            return Verdict(
                True, Why.BAN, f"covered by {ban.provenance} ban {ban.network} by {ban.actor}", line
            )
    return Verdict(True, Why.AGGREGATED, f"within block {line}", line)


def _capped(build: FeedBuild, offender: Member) -> str:
    ahead = build.matched.ahead(offender)
    spec = build.spec
    cap = f"{spec.capacity}" if spec.shards == 1 else f"{spec.max_entries} × {spec.shards} shards"
    return (
        f"left out by the feed's limit ({cap}): {ahead} offenders of this feed are ranked "
        "before it (more recent, or as recent and more repeated)"
    )
