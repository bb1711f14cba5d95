"""Retention, escalation of repeat offenders, and what is publishable at ``now`` (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import ip_network

from .errors import InputError
from .models import AllowEntry, Offender
from .net import (
    NEVER_BLOCK,
    IPAddress,
    IPNetwork,
    NetworkSet,
    never_block_reason,
    split_to_prefix,
)

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
"""Networks never published besides never-block, each labelled with where it comes from.

A label starting with ``PROTECTED`` marks the operator's own ranges (``[safety] protect``);
anything else is an allowlist entry (config or store)."""

PROTECTED = "protected|"


def build_allowlist(
    config_networks: Iterable[IPNetwork],
    protect: Iterable[IPNetwork] = (),
    stored: Iterable[AllowEntry] = (),
) -> Allowlist:
    allow = Allowlist((n, "config [allowlist]") for n in config_networks)
    for network in protect:
        allow.add(network, PROTECTED + "config [safety] protect")
    for entry in stored:
        allow.add(
            entry.network,
            f"allow entry by {entry.actor}" + (f": {entry.note}" if entry.note else ""),
        )
    return allow


def with_entries(base: Allowlist, stored: Iterable[AllowEntry]) -> Allowlist:
    """``base`` plus the store's allow entries (a new set; ``base`` is shared and unchanged)."""
    stored = list(stored)
    if not stored:
        return base
    merged = Allowlist(iter(base))
    for network, label in build_allowlist((), (), stored):
        merged.add(network, label)
    return merged


def suppression_reason(ip: IPAddress, allowlist: Allowlist) -> str | None:
    """Why ``ip`` must not be published (never-block, protected, allowlisted), or ``None``."""
    special = never_block_reason(ip)
    if special is not None:
        return f"never-block: {special}"
    hit = allowlist.match(ip)
    if hit is not None:
        network, origin = hit
        if origin.startswith(PROTECTED):
            return f"protected: {network} ({origin.removeprefix(PROTECTED)})"
        return f"allowlisted: {network} ({origin})"
    return None


def holes(allowlist: Allowlist) -> list[IPNetwork]:
    """Every network a published network must not overlap: never-block, protect, allowlist."""
    return [n for n, _ in NEVER_BLOCK] + [n for n, _ in allowlist]


@dataclass(frozen=True, slots=True)
class PrefixGuard:
    """No published network broader than these prefix lengths."""

    max_prefix_v4: int = 16
    max_prefix_v6: int = 48

    def limit(self, network: IPNetwork) -> int:
        return self.max_prefix_v4 if network.version == 4 else self.max_prefix_v6

    def check_ban(self, network: IPNetwork) -> None:
        """Refuse a manual ban broader than the guard, with the fix."""
        limit = self.limit(network)
        if network.prefixlen < limit:
            raise InputError(
                f"{network} is broader than /{limit} ([safety] max_prefix_v{network.version}); "
                f"ban smaller networks, or raise the limit if you really mean it"
            )

    def split(self, networks: Iterable[IPNetwork]) -> list[IPNetwork]:
        return [part for n in networks for part in split_to_prefix(n, self.limit(n))]


@dataclass(frozen=True, slots=True)
class Escalation:
    """Publish a prefix instead of its addresses once enough distinct offenders share it."""

    min_offenders: int = 8
    prefix_v4: int = 24
    prefix_v6: int = 64

    def prefixes(self, addresses: Iterable[IPAddress]) -> list[IPNetwork]:
        counts: dict[IPNetwork, int] = {}
        for address in addresses:
            length = self.prefix_v4 if address.version == 4 else self.prefix_v6
            prefix = ip_network((address, length), strict=False)
            counts[prefix] = counts.get(prefix, 0) + 1
        return sorted(
            (p for p, n in counts.items() if n >= self.min_offenders),
            key=lambda p: (p.version, int(p.network_address)),
        )


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
