"""Retention, escalation of repeat offenders, and what is publishable at ``now`` (pure)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from .models import Offender
from .net import IPAddress, NetworkSet, never_block_reason

UNCAPPED_TTL = 10**12  # ~31,700 years: the ceiling when max_ttl is "forever"; fits BigInteger


@dataclass(frozen=True, slots=True)
class Retention:
    """``active_until = last_offense + min(base_ttl × factor^(n−1), max_ttl)``; None = forever."""

    base_ttl: int | None
    factor: float = 2.0
    max_ttl: int | None = None

    def ttl(self, offense_count: int) -> int | None:
        if self.base_ttl is None:
            return None
        try:
            ttl = self.base_ttl * self.factor ** max(0, offense_count - 1)
        except OverflowError:  # factor ** n beyond a float: larger than any cap
            ttl = math.inf
        cap = self.max_ttl if self.max_ttl is not None else UNCAPPED_TTL
        return int(min(ttl, cap))

    def active_until(self, last_offense: int, offense_count: int) -> int | None:
        ttl = self.ttl(offense_count)
        return None if ttl is None else last_offense + ttl


Allowlist = NetworkSet[str]
"""Allowlisted networks, each labelled with where it comes from (config or store entry)."""


def suppression_reason(ip: IPAddress, allowlist: Allowlist) -> str | None:
    """Why ``ip`` must not be published (never-block range or allowlist), or ``None``."""
    special = never_block_reason(ip)
    if special is not None:
        return f"never-block: {special}"
    hit = allowlist.match(ip)
    if hit is not None:
        network, origin = hit
        return f"allowlisted: {network} ({origin})"
    return None


def is_active(offender: Offender, now: int) -> bool:
    if offender.status != "listed":
        return False
    return offender.active_until is None or now < offender.active_until


def state(offender: Offender, now: int, allowlist: Allowlist) -> str:
    """``unbanned``, ``suppressed``, ``active`` or ``expired``: derived, never stored stale."""
    if offender.status == "unbanned":
        return "unbanned"
    if suppression_reason(offender.ip, allowlist) is not None:
        return "suppressed"
    return "active" if is_active(offender, now) else "expired"
