"""Build: what each feed would publish from one snapshot of the store, with provenance.

``build_feeds`` is the one function that decides feed lines. It takes :class:`FeedInputs` (read
in one transaction, shared by every feed: one scan of the active offenders serves them all) and
returns a :class:`FeedBuild` per feed: the lines, and what they came from (offenders, bans,
escalated prefixes, aggregated blocks), so ``explain`` is a lookup in it, never a second
implementation.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network

from ..models import AllowEntry, Ban, Family, Offender
from ..net import IPAddress, IPNetwork, NetworkSet, aggregate, carve, sort_key
from ..policy import Allowlist, Escalation, PrefixGuard, holes, suppression, with_entries
from ..timeutil import iso

Line = IPAddress | IPNetwork


class Filter(StrEnum):
    """A feed filter that can leave an offender (or a ban) out."""

    FAMILY = "family"
    CAUSES = "causes"
    DEVICES = "devices"
    VDOMS = "vdoms"
    MIN_OFFENSES = "min_offenses"
    SEEN_WITHIN = "seen_within"


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """What a feed selects and how much of it it may publish; built from ``[[feeds]]``."""

    name: str
    family: Family = Family.ANY
    causes: frozenset[str] = frozenset()  # lower-cased
    devices: frozenset[str] = frozenset()
    vdoms: frozenset[str] = frozenset()  # "vdom" or "device/vdom"
    min_offenses: int = 1
    seen_within: int | None = None
    max_entries: int = 131072
    aggregate: bool = False

    def excludes(self, offender: Offender, now: int) -> tuple[Filter, str] | None:
        """Which filter of this feed leaves ``offender`` out, and how, or ``None``."""
        if not self.family.admits(offender.ip.version):
            return Filter.FAMILY, f"family is {self.family}"
        if self.causes and not self.causes.intersection(s.lower() for s in offender.sources):
            return Filter.CAUSES, f"causes {sorted(self.causes)} not among {list(offender.sources)}"
        if self.devices and not self.devices.intersection(offender.devices):
            return Filter.DEVICES, (
                f"devices {sorted(self.devices)} not among {list(offender.devices)}"
            )
        if self.vdoms and not any(
            v in self.vdoms or v.partition("/")[2] in self.vdoms for v in offender.vdoms
        ):
            return Filter.VDOMS, f"vdoms {sorted(self.vdoms)} not among {list(offender.vdoms)}"
        if offender.offense_count < self.min_offenses:
            return Filter.MIN_OFFENSES, f"fewer than {self.min_offenses} offenses"
        if self.seen_within is not None and offender.last_offense + self.seen_within <= now:
            return Filter.SEEN_WITHIN, (
                f"last offense {iso(offender.last_offense)} is older than seen_within"
            )
        return None

    def excludes_ban(self, ban: Ban) -> tuple[Filter, str] | None:
        """Which filter leaves a manual or imported ban out: only family, and device-based
        filters (a ban was reported by no device) unless ``causes`` names its provenance."""
        if not self.family.admits(ban.network.version):
            return Filter.FAMILY, f"family is {self.family}"
        if self.causes and str(ban.provenance) not in self.causes:
            return Filter.CAUSES, (
                f"causes {sorted(self.causes)} do not include {str(ban.provenance)!r}"
            )
        if self.devices or self.vdoms:
            filt = Filter.DEVICES if self.devices else Filter.VDOMS
            return filt, "the feed takes offenders of given devices or VDOMs only"
        return None


@dataclass(frozen=True, slots=True)
class FeedPolicy:
    """What every feed applies besides its own filters (from config; store entries added)."""

    allowlist: Allowlist  # config allowlist and protect; the store's entries are added per build
    guard: PrefixGuard = PrefixGuard()
    escalation: Escalation | None = None
    max_drop: float = 0.5  # the mass-drop guard's threshold (1.0: never hold)


@dataclass(frozen=True, slots=True)
class FeedInputs:
    """One consistent snapshot of what feeds are made of (``publisher.read_inputs``)."""

    version: int  # the store version it was read at
    now: int
    offenders: list[Offender]  # listed and active at ``now``, numeric order
    bans: list[Ban]  # active at ``now``
    allow_entries: list[AllowEntry]  # the store's allowlist, active at ``now``


@dataclass(frozen=True, slots=True)
class Escalated:
    prefix: IPNetwork
    offenders: int  # active offenders of this feed inside it


@dataclass(frozen=True)
class FeedBuild:
    """One feed computed at one moment: its lines, and what each line came from."""

    spec: FeedSpec
    inputs: FeedInputs
    allowlist: Allowlist  # the effective allowlist: config, protect and the store's entries
    matched: list[Offender]  # every offender the feed's filters select (before the cap)
    offenders: list[Offender]  # published offenders, numeric order
    bans: list[Ban]  # bans the feed's filters select
    escalated: list[Escalated]  # prefixes published instead of their offenders
    networks: list[IPNetwork]  # bans and escalated prefixes, carved and split by the guard
    entries: list[Line]  # the lines of the plain feed, numeric order, disjoint
    overflow: int  # matching offenders (or, rarely, ban networks) left out by max_entries
    valid_until: int | None  # the feed changes by itself then (an expiry), store or not
    _coverage: list[Coverage] = field(default_factory=list, repr=False)

    @property
    def version(self) -> int:
        return self.inputs.version

    @property
    def built(self) -> int:
        return self.inputs.now

    def lines(self) -> list[str]:
        return [str(entry) for entry in self.entries]

    def covering(self, ip: IPAddress) -> Line | None:
        """The line of this build that covers ``ip``, or ``None``."""
        if not self._coverage:
            self._coverage.append(Coverage(self.entries))
        return self._coverage[0].line_for(ip)


class Coverage:
    """Which of a feed's lines covers an address: the lines sorted by their first address,
    and a binary search (feed lines are disjoint)."""

    def __init__(self, lines: Sequence[Line]) -> None:
        ordered = sorted(lines, key=line_key)
        self._lines = ordered
        self._starts = [interval(line)[:2] for line in ordered]
        self._ends = [interval(line)[2] for line in ordered]

    def line_for(self, ip: IPAddress) -> Line | None:
        at = bisect.bisect_right(self._starts, (ip.version, int(ip))) - 1
        if at >= 0 and self._starts[at][0] == ip.version and int(ip) <= self._ends[at]:
            return self._lines[at]
        return None


def interval(line: Line) -> tuple[int, int, int]:
    """``(family, first address, last address)`` of a feed line, as integers."""
    if isinstance(line, IPv4Network | IPv6Network):
        return line.version, int(line.network_address), int(line.broadcast_address)
    return line.version, int(line), int(line)


def build_feeds(
    specs: Sequence[FeedSpec], policy: FeedPolicy, inputs: FeedInputs
) -> dict[str, FeedBuild]:
    """Every feed from one snapshot: suppression is judged once per offender for all feeds."""
    allow = with_entries(policy.allowlist, inputs.allow_entries)
    publishable = [o for o in inputs.offenders if suppression(o.ip, allow) is None]
    return {spec.name: _build(spec, policy, inputs, allow, publishable) for spec in specs}


def _build(
    spec: FeedSpec,
    policy: FeedPolicy,
    inputs: FeedInputs,
    allow: Allowlist,
    publishable: list[Offender],
) -> FeedBuild:
    """Offenders (addresses) and bans (networks) are combined; escalated prefixes replace
    their offenders; every network has the never-block, protected and allowlisted ranges carved
    out exactly, and none is broader than the prefix guard. Over ``max_entries``: first merge
    into CIDR blocks where that loses nothing; if still over, keep the bans, then the most
    recent, then most repeated, offenders, and count how many were left out."""
    now = inputs.now
    matched = [o for o in publishable if spec.excludes(o, now) is None]
    bans = [b for b in inputs.bans if spec.excludes_ban(b) is None]
    escalated = _escalate(policy.escalation, matched)
    networks = policy.guard.split(
        carve([b.network for b in bans] + [e.prefix for e in escalated], holes(allow))
    )
    published = matched
    entries = _entries(published, networks, spec.aggregate, policy.guard)
    if len(entries) > spec.max_entries:
        entries = _entries(published, networks, True, policy.guard)
    dropped_networks = 0
    if len(entries) > spec.max_entries:
        room = max(0, spec.max_entries - len(networks))
        ranked = sorted(matched, key=lambda o: (o.last_offense, o.offense_count), reverse=True)
        published = sorted(ranked[:room], key=lambda o: sort_key(o.ip))
        entries = _entries(published, networks, True, policy.guard)
        if len(entries) > spec.max_entries:  # bans alone exceed the cap: say so, never silently
            dropped_networks = len(entries) - spec.max_entries
            entries = entries[: spec.max_entries]
    return FeedBuild(
        spec=spec,
        inputs=inputs,
        allowlist=allow,
        matched=matched,
        offenders=published,
        bans=bans,
        escalated=escalated,
        networks=networks,
        entries=entries,
        overflow=len(matched) - len(published) + dropped_networks,
        valid_until=_valid_until(matched, bans, inputs.allow_entries, spec),
    )


def _escalate(escalation: Escalation | None, matched: list[Offender]) -> list[Escalated]:
    if escalation is None:
        return []
    prefixes = escalation.prefixes(o.ip for o in matched)
    if not prefixes:
        return []
    inside = NetworkSet((p, p) for p in prefixes)
    counts: dict[IPNetwork, int] = dict.fromkeys(prefixes, 0)
    for offender in matched:
        hit = inside.match(offender.ip)
        if hit is not None:
            counts[hit[1]] += 1
    return [Escalated(p, counts[p]) for p in prefixes]


def _entries(
    offenders: list[Offender], networks: list[IPNetwork], merge: bool, guard: PrefixGuard
) -> list[Line]:
    if merge:
        merged = guard.split(aggregate([*(o.ip for o in offenders), *networks]))
        return [n.network_address if n.num_addresses == 1 else n for n in merged]
    covered = NetworkSet((n, True) for n in networks)
    lines: list[Line] = [o.ip for o in offenders if covered.match(o.ip) is None]
    if not networks:
        return lines  # offenders come in numeric order already
    lines += [n.network_address if n.num_addresses == 1 else n for n in networks]
    return sorted(lines, key=line_key)


def line_key(line: Line) -> tuple[int, int, int]:
    """Numeric order of feed lines: IPv4 first, then by address, then by prefix length."""
    if isinstance(line, IPv4Network | IPv6Network):
        return (line.version, int(line.network_address), line.prefixlen)
    return (line.version, int(line), line.max_prefixlen)


def _valid_until(
    offenders: list[Offender], bans: list[Ban], allows: list[AllowEntry], spec: FeedSpec
) -> int | None:
    moments = [o.active_until for o in offenders if o.active_until is not None]
    if spec.seen_within is not None:
        moments += [o.last_offense + spec.seen_within for o in offenders]
    moments += [b.expires for b in bans if b.expires is not None]
    moments += [e.expires for e in allows if e.expires is not None]
    return min(moments, default=None)
