"""Retention, escalation of repeat offenders, and what is publishable at ``now`` (pure)."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import ip_network
from typing import Any, Protocol

from .errors import InputError
from .models import AllowEntry, Offender, OffenderState, OffenderStatus, Offense
from .net import (
    NEVER_BLOCK,
    IPAddress,
    IPNetwork,
    NetworkSet,
    never_block_reason,
    split_to_prefix,
)
from .timeutil import MAX_TIME, MIN_TIME, format_duration, iso

# A TTL is a finite duration, but factor^(n−1) outgrows any float: no TTL needs to be longer
# than the whole showable range, since any expiry it gives lies past MAX_TIME and is capped.
_LONGEST_TTL = MAX_TIME - MIN_TIME
_TTLS_CACHED = 4096  # distinct counts, (base, step) pairs remembered per Retention: they repeat


@dataclass(frozen=True, slots=True)
class TTLJudgement:
    """An offender's TTL and why: the answer of :meth:`Retention.judge` (``show`` renders it)."""

    cause: str | None  # the [retention.causes] entry the base TTL came from; None: base_ttl
    base_ttl: int | None  # None: forever
    step: int  # escalation step: 0 for a first offense, n−1 for the nth without decay
    multiplier: float  # factor ** step
    decayed: int  # steps dropped by decay_after over the offender's quiet spells
    capped: bool  # max_ttl shortened the escalated TTL
    ttl: int | None  # None: forever
    active_until: int | None  # None: forever

    @property
    def base_from(self) -> str:
        return "base_ttl" if self.cause is None else f"[retention.causes] {self.cause}"

    def reason(self) -> str:
        """One line for people: ``1d from [retention.causes] DoS × 4 (step 2) … = 4d``."""
        words = f"{format_duration(self.base_ttl)} from {self.base_from}"
        if self.base_ttl is not None:
            words += f" × {self.multiplier:g} (escalation step {self.step}"
            words += f", {self.decayed} dropped by decay)" if self.decayed else ")"
            words += ", capped by max_ttl" if self.capped else ""
        return f"{words} = {format_duration(self.ttl)}, until {iso(self.active_until) or 'forever'}"

    def record(self) -> dict[str, Any]:
        return {
            "cause": self.cause,
            "base_ttl": format_duration(self.base_ttl),
            "base_from": self.base_from,
            "step": self.step,
            "multiplier": self.multiplier if math.isfinite(self.multiplier) else None,
            "decayed_steps": self.decayed,
            "capped": self.capped,
            "ttl": format_duration(self.ttl),
            "active_until": iso(self.active_until),
            "reason": self.reason(),
        }


@dataclass(frozen=True, slots=True, repr=False)
class Retention:
    """``active_until = min(last + min(base × factor^step, max_ttl), MAX_TIME)``, where

    * ``base`` is the longest base TTL among the offender's causes: a cause's own entry of
      ``causes`` (matched case-insensitively), else ``base_ttl``;
    * ``step`` is ``n−1`` for ``n`` offenses; with ``decay_after``, it is walked along the
      offense times instead: a first offense is step 0, each later one is
      ``max(0, previous step − ⌊quiet / decay_after⌋) + 1``, ``quiet`` being the time since the
      offense before it. Offenses counted but not in the times given (pruned history) are
      taken to have had no quiet spell.

    ``None`` (``FOREVER``) is forever and stays ``None``: a base of forever gives no TTL and
    no expiry; a ``max_ttl`` of forever leaves the escalation unbounded, and a computed expiry
    past year 9999 is ``MAX_TIME`` (9999-12-31T23:59:59Z), the latest a store's times can be
    shown as. This is the one place the rule lives: :meth:`judge` (``active_until`` and
    ``ttl`` are its answer's fields); nothing else adds a TTL to a time.
    """

    base_ttl: int | None
    factor: float = 2.0
    max_ttl: int | None = None
    causes: Mapping[str, int | None] = field(default_factory=dict, hash=False)
    decay_after: int | None = None  # None: no decay
    # casefolded cause -> (the cause as configured, its base TTL)
    _by_cause: dict[str, tuple[str, int | None]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    # (base, step) -> (ttl, capped, multiplier). A million-entry ingest asks for the expiry of
    # each new offender, so the formula (a float power) is worked out once per pair. Mutating a
    # dict leaves the frozen value intact; it is excluded from ==, hash and repr.
    _ttls: dict[tuple[int, int], tuple[int, bool, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _plain: dict[int, int | None] = field(  # offense count -> ttl, no cause nor decay
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        self._by_cause.update((c.casefold(), (c, ttl)) for c, ttl in self.causes.items())

    def judge(
        self,
        last_offense: int,
        offense_count: int,
        causes: Iterable[str] = (),
        times: Sequence[int] = (),
    ) -> TTLJudgement:
        """The TTL of an offender with ``offense_count`` offenses of ``causes``, the last at
        ``last_offense``, and why. ``times``: its known offense times (only decay reads them)."""
        cause, base = self.base(causes)
        step = self.step(offense_count, times)
        decayed = max(0, offense_count - 1) - step
        if base is None:
            return TTLJudgement(cause, None, step, 1.0, decayed, False, None, None)
        try:  # a subscript, not .get(): this is the hot path of a large ingest
            ttl, capped, multiplier = self._ttls[base, step]
        except KeyError:
            ttl, capped, multiplier = self._escalated(base, step)
            if len(self._ttls) < _TTLS_CACHED:
                self._ttls[base, step] = ttl, capped, multiplier
        until = last_offense + ttl
        return TTLJudgement(
            cause, base, step, multiplier, decayed, capped, ttl, min(until, MAX_TIME)
        )

    def active_until(
        self,
        last_offense: int,
        offense_count: int,
        causes: Iterable[str] = (),
        times: Sequence[int] = (),
    ) -> int | None:
        """When the offender stops being active: ``None`` for forever, otherwise never later
        than ``MAX_TIME`` — :meth:`judge`'s answer, without building its explanation."""
        if causes or (times and self.decay_after is not None):
            return self.judge(last_offense, offense_count, causes, times).active_until
        # No cause, no decay: the TTL depends on the count only. A million-entry ingest asks
        # this for each new offender, so judge's TTL is remembered per count.
        try:  # a subscript, not .get(): this is the hot path of a large ingest
            ttl = self._plain[offense_count]
        except KeyError:
            ttl = self.judge(MIN_TIME, offense_count).ttl
            if len(self._plain) < _TTLS_CACHED:
                self._plain[offense_count] = ttl
        if ttl is None:
            return None
        until = last_offense + ttl
        return until if until < MAX_TIME else MAX_TIME

    def __repr__(self) -> str:  # the causes and decay only when set
        words = f"base_ttl={self.base_ttl}, factor={self.factor}, max_ttl={self.max_ttl}"
        words += f", causes={dict(self.causes)}" if self.causes else ""
        words += f", decay_after={self.decay_after}" if self.decay_after is not None else ""
        return f"Retention({words})"

    def ttl(self, offense_count: int, causes: Iterable[str] = ()) -> int | None:
        """The TTL of the ``offense_count``-th offense, no decay: ``None`` for forever. Always
        an int, never more than ``MAX_TIME - MIN_TIME`` seconds."""
        return self.judge(MIN_TIME, offense_count, causes).ttl

    def base(self, causes: Iterable[str]) -> tuple[str | None, int | None]:
        """The longest base TTL among ``causes`` (forever is longest) and the configured cause
        it comes from, ``None`` for ``base_ttl``: a cause without an entry, or no cause, takes
        ``base_ttl``. On a tie a cause's own entry is named, the one that sorts first."""
        found: list[tuple[str, int | None]] = []
        plain = False
        for cause in causes:
            entry = self._by_cause.get(cause.casefold())
            if entry is None:
                plain = True
            else:
                found.append(entry)
        if plain or not found:
            found.append(("", self.base_ttl))  # "": base_ttl, after every name on a tie
        longest = max(found, key=lambda e: (math.inf if e[1] is None else e[1], e[0] != ""))
        ties = [c for c, ttl in found if ttl == longest[1] and c]
        return (min(ties, key=str.casefold) if ties else None), longest[1]

    def step(self, offense_count: int, times: Sequence[int] = ()) -> int:
        """The escalation step of the last of ``offense_count`` offenses (see the class)."""
        plain = max(0, offense_count - 1)
        if self.decay_after is None or len(times) < 2 or offense_count < 2:
            return plain  # no quiet spell between two known offenses to decay by
        known = sorted(times)[-offense_count:]
        step = offense_count - len(known) - 1  # the pruned offenses before; −1: none
        previous: int | None = None
        for time in known:
            if step < 0:
                step = 0
            else:
                quiet = 0 if previous is None else time - previous
                step = max(0, step - quiet // self.decay_after) + 1
            previous = time
        return max(step, 0)

    def _escalated(self, base: int, step: int) -> tuple[int, bool, float]:
        """(ttl, capped by max_ttl, multiplier) of ``base`` at ``step``."""
        try:
            # float() so an int factor cannot build a million-digit power for a huge step
            multiplier = float(self.factor) ** step
        except OverflowError:  # factor ** n beyond a float: longer than any cap
            multiplier = math.inf
        ttl = base * multiplier
        capped = self.max_ttl is not None and ttl > self.max_ttl
        if self.max_ttl is not None:
            ttl = min(ttl, self.max_ttl)
        return int(min(ttl, _LONGEST_TTL)), capped, multiplier


class TTLSubject(Protocol):
    """What :func:`ttl_record` reads: an offender, its stored offenses, the current rule."""

    @property
    def retention(self) -> Retention | None: ...
    @property
    def offender(self) -> Offender | None: ...
    @property
    def offenses(self) -> Sequence[Offense]: ...


def ttl_record(subject: TTLSubject) -> dict[str, Any]:
    """``{"ttl": …}`` for `show`: the TTL the current configuration computes from the stored
    offenses, and whether it is the stored ``active_until`` (``"stored"``: computed at the last
    offense, under the configuration then). Empty without an offender or a retention."""
    if subject.retention is None or subject.offender is None:
        return {}
    o, times = subject.offender, [offense.created for offense in subject.offenses]
    judged = subject.retention.judge(o.last_offense, o.offense_count, o.sources, times)
    stored = judged.active_until == o.active_until
    stale = "" if stored else "; not the stored active_until, computed by the rule then"
    return {"ttl": judged.record() | {"reason": judged.reason() + stale, "stored": stored}}


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
