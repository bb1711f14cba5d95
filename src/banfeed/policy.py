"""Retention, escalation of repeat offenders, and what is publishable at ``now`` (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_network

from .errors import InputError
from .models import AllowEntry, Offender, OffenderState, OffenderStatus
from .net import (
    NEVER_BLOCK,
    IPAddress,
    IPNetwork,
    NetworkSet,
    never_block_reason,
    split_to_prefix,
)
from .timeutil import MAX_TIME, MIN_TIME

# A TTL is a finite duration, but factor^(n−1) outgrows any float: no TTL needs to be longer
# than the whole showable range, since any expiry it gives lies past MAX_TIME and is capped.
_LONGEST_TTL = MAX_TIME - MIN_TIME
_TTLS_CACHED = 4096  # distinct offense counts remembered per Retention; counts repeat a lot


@dataclass(frozen=True, slots=True)
class Retention:
    """``active_until = min(last_offense + min(base_ttl × factor^(n−1), max_ttl), MAX_TIME)``.

    ``None`` (``FOREVER``) is forever and stays ``None``: a ``base_ttl`` of forever gives no TTL
    and no expiry; a ``max_ttl`` of forever leaves the escalation unbounded, and a computed
    expiry past year 9999 is ``MAX_TIME`` (9999-12-31T23:59:59Z), the latest a store's times can
    be shown as. This is the one place the rule lives: the collector and ``control`` call
    :meth:`active_until`; nothing else adds a TTL to a time.
    """

    base_ttl: int | None
    factor: float = 2.0
    max_ttl: int | None = None
    # offense count -> ttl. A million-entry ingest asks for the expiry of each new offender, so
    # the formula (a float power) is worked out once per count. Mutating a dict leaves the
    # frozen value intact; it is excluded from ==, hash and repr.
    _ttls: dict[int, int | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def ttl(self, offense_count: int) -> int | None:
        """``base_ttl × factor^(n−1)``, capped by ``max_ttl``; ``None`` when ``base_ttl`` is
        forever. Always an int, never more than ``MAX_TIME - MIN_TIME`` seconds."""
        if self.base_ttl is None:
            return None
        try:
            # float() so an int factor cannot build a million-digit power for a huge count
            ttl = self.base_ttl * float(self.factor) ** max(0, offense_count - 1)
        except OverflowError:  # factor ** n beyond a float: longer than any cap
            ttl = math.inf
        if self.max_ttl is not None:
            ttl = min(ttl, self.max_ttl)
        return int(min(ttl, _LONGEST_TTL))

    def active_until(self, last_offense: int, offense_count: int) -> int | None:
        """When an offender with ``offense_count`` offenses, the last at ``last_offense``, stops
        being active: ``None`` for forever, otherwise never later than ``MAX_TIME``."""
        try:  # a subscript, not .get(): this is the hot path of a large ingest
            ttl = self._ttls[offense_count]
        except KeyError:
            ttl = self.ttl(offense_count)
            if len(self._ttls) < _TTLS_CACHED:
                self._ttls[offense_count] = ttl
        if ttl is None:
            return None
        until = last_offense + ttl
        return until if until < MAX_TIME else MAX_TIME


class AllowKind(StrEnum):
    """Where a never-publish range comes from."""

    PROTECTED = "protected"  # [safety] protect: the operator's own ranges
    CONFIG = "config"  # [allowlist] networks
    STORE = "store"  # `banfeed allow add`


@dataclass(frozen=True, slots=True)
class AllowLabel:
    kind: AllowKind
    origin: str  # human words: "config [allowlist]", "allow entry by alice: partner"

    def reason(self, network: IPNetwork) -> str:
        word = "protected" if self.kind is AllowKind.PROTECTED else "allowlisted"
        return f"{word}: {network} ({self.origin})"


Allowlist = NetworkSet[AllowLabel]
"""Networks never published besides never-block, each labelled with where it comes from."""


def build_allowlist(
    config_networks: Iterable[IPNetwork],
    protect: Iterable[IPNetwork] = (),
    stored: Iterable[AllowEntry] = (),
) -> Allowlist:
    allow = Allowlist(
        (n, AllowLabel(AllowKind.CONFIG, "config [allowlist]")) for n in config_networks
    )
    for network in protect:
        allow.add(network, AllowLabel(AllowKind.PROTECTED, "config [safety] protect"))
    for entry in stored:
        origin = f"allow entry by {entry.actor}" + (f": {entry.note}" if entry.note else "")
        allow.add(entry.network, AllowLabel(AllowKind.STORE, origin))
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


class Suppression(StrEnum):
    NEVER_BLOCK = "never-block"
    PROTECTED = "protected"
    ALLOWLISTED = "allowlisted"


def suppression(ip: IPAddress, allowlist: Allowlist) -> tuple[Suppression, str] | None:
    """Why ``ip`` must not be published (never-block, protected, allowlisted), or ``None``."""
    special = never_block_reason(ip)
    if special is not None:
        return Suppression.NEVER_BLOCK, f"never-block: {special}"
    hit = allowlist.match(ip)
    if hit is not None:
        network, label = hit
        kind = (
            Suppression.PROTECTED if label.kind is AllowKind.PROTECTED else Suppression.ALLOWLISTED
        )
        return kind, label.reason(network)
    return None


def suppression_reason(ip: IPAddress, allowlist: Allowlist) -> str | None:
    """The words of :func:`suppression`, or ``None``."""
    found = suppression(ip, allowlist)
    return None if found is None else found[1]


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

    def broader(self, network: IPNetwork) -> bool:
        return network.prefixlen < self.limit(network)

    def check(self, network: IPNetwork, *, action: str) -> None:
        """Refuse a ban or an allow entry broader than the guard, with the fix. One rule for
        both: an allow entry of 0.0.0.0/0 empties every IPv4 feed as surely as a /0 ban blocks
        the world."""
        if self.broader(network):
            limit = self.limit(network)
            raise InputError(
                f"{network} is broader than /{limit} ([safety] max_prefix_v{network.version}); "
                f"{action} smaller networks, or pass --force if you really mean it"
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
    """The one active predicate (the store's SQL form is ``store._common.active``)."""
    if offender.status != OffenderStatus.LISTED:
        return False
    return offender.active_until is None or now < offender.active_until


def state(offender: Offender, now: int, allowlist: Allowlist) -> OffenderState:
    """``unbanned``, ``suppressed``, ``active`` or ``expired``: derived, never stored stale."""
    if offender.status == OffenderStatus.UNBANNED:
        return OffenderState.UNBANNED
    if suppression_reason(offender.ip, allowlist) is not None:
        return OffenderState.SUPPRESSED
    return OffenderState.ACTIVE if is_active(offender, now) else OffenderState.EXPIRED


BACKOFF_BASE = 60  # seconds after the first failure that backs a device off; doubles each time
BACKOFF_MAX = 3600


def backoff_seconds(failures: int) -> int:
    """The one back-off formula: ``60 s × 2^(n−1)``, at most an hour (polls after 401/429,
    pushes after any failure)."""
    return int(min(BACKOFF_BASE * 2 ** min(max(failures, 1) - 1, 16), BACKOFF_MAX))
