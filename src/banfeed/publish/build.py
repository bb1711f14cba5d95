"""Build: what each feed would publish from one snapshot of the store, with provenance.

``build_feeds`` is the one function that decides feed lines. It takes :class:`FeedInputs` (one
snapshot, shared by every feed) and returns a :class:`FeedBuild` per feed: the lines, and what
they came from (offenders, bans, escalated prefixes, aggregated blocks), so ``explain`` is a
lookup in it, never a second implementation.

The offenders are columns (:class:`~banfeed.publish.active.ActiveSet`): filters are masks,
the never-block / protect / allowlist ranges are subtracted as intervals, aggregation and the
cap run on arrays (``banfeed.spans``). Bans and escalated prefixes are few and stay objects
until they are carved. Each vectorised step is property-tested against the ``ipaddress`` /
plain-Python reference (tests/test_spans.py, tests/test_columns.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network

import numpy as np

from .. import spans
from ..models import AllowEntry, Ban, Family, Offender
from ..net import IPAddress, IPNetwork
from ..policy import Allowlist, Escalation, PrefixGuard, holes, with_entries
from ..spans import Array
from ..timeutil import iso
from .active import FOREVER, ActiveSet, Columns, Combo, Member, Selection
from .lines import Family as LineFamily
from .lines import Line, Lines
from .shards import split


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
    max_entries: int = 131072  # ``limit``: what one consumer loads, per shard
    aggregate: bool = False
    shards: int = 1  # over 1: published as that many feeds of max_entries (publish/shards.py)

    @property
    def capacity(self) -> int:
        return self.max_entries * self.shards

    def excludes(self, offender: Offender | Member, now: int) -> tuple[Filter, str] | None:
        """Which filter of this feed leaves ``offender`` out, and how, or ``None``."""
        if not self.family.admits(offender.ip.version):
            return Filter.FAMILY, f"family is {self.family}"
        found = self.excludes_origin(offender.sources, offender.devices, offender.vdoms)
        if found is not None:
            return found
        if offender.offense_count < self.min_offenses:
            return Filter.MIN_OFFENSES, f"fewer than {self.min_offenses} offenses"
        if self.seen_within is not None and offender.last_offense + self.seen_within <= now:
            return Filter.SEEN_WITHIN, (
                f"last offense {iso(offender.last_offense)} is older than seen_within"
            )
        return None

    def excludes_origin(
        self, sources: tuple[str, ...], devices: tuple[str, ...], vdoms: tuple[str, ...]
    ) -> tuple[Filter, str] | None:
        """The filters on where offenses came from: causes, devices, VDOMs."""
        if self.causes and not self.causes.intersection(s.lower() for s in sources):
            return Filter.CAUSES, f"causes {sorted(self.causes)} not among {list(sources)}"
        if self.devices and not self.devices.intersection(devices):
            return Filter.DEVICES, f"devices {sorted(self.devices)} not among {list(devices)}"
        if self.vdoms and not any(
            v in self.vdoms or v.partition("/")[2] in self.vdoms for v in vdoms
        ):
            return Filter.VDOMS, f"vdoms {sorted(self.vdoms)} not among {list(vdoms)}"
        return None

    def selects(self, cols: Columns, combos: Sequence[Combo], now: int) -> Array:
        """``excludes`` over a family's columns at once: a bool mask of the offenders this
        feed's filters select (tests/test_columns.py checks it against ``excludes``)."""
        if not self.family.admits(cols.version):
            return np.zeros(len(cols), dtype=bool)
        mask = cols.count >= self.min_offenses
        if self.seen_within is not None:
            mask &= cols.last > now - self.seen_within
        if self.causes or self.devices or self.vdoms:
            origin = [self.excludes_origin(c.sources, c.devices, c.vdoms) is None for c in combos]
            mask &= np.asarray(origin, dtype=bool)[cols.combo] if origin else False
        return mask

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


@dataclass(frozen=True)
class FeedInputs:
    """One consistent snapshot of what feeds are made of (``Publisher.inputs``)."""

    version: int  # the store version it reflects
    now: int
    rows: int  # offender rows in the store then (any state): fewer later means rows were deleted
    read_at: int  # when the active set was last read whole (it is kept in step since)
    active: ActiveSet  # listed offenders active when read; builds mask out the expired since
    bans: list[Ban]  # active at ``now``
    allow_entries: list[AllowEntry]  # the store's allowlist, active at ``now``
    whole: bool = False  # the active set was read whole for it (not kept in step)
    derived_from: int | None = None  # the version of the inputs it was kept in step from


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
    matched: Selection  # every offender the feed's filters select (before the cap)
    offenders: Selection  # published offenders
    bans: list[Ban]  # bans the feed's filters select
    escalated: list[Escalated]  # prefixes published instead of their offenders
    networks: Lines  # bans and escalated prefixes, carved and split by the guard
    entries: Lines  # the lines of the plain feed, numeric order, disjoint
    overflow: int  # matching offenders (or, rarely, ban networks) left out by the capacity
    valid_until: int | None  # the feed changes by itself then (an expiry), store or not
    shards: tuple[Lines, ...] = ()  # spec.shards > 1: the entries split, worst offenders first
    _text: list[bytes] = field(default_factory=list, repr=False)

    @property
    def version(self) -> int:
        return self.inputs.version

    @property
    def built(self) -> int:
        return self.inputs.now

    def lines(self) -> list[str]:
        return [str(entry) for entry in self.entries]

    def text(self) -> bytes:
        """The plain feed (made once)."""
        if not self._text:
            self._text.append(self.entries.text())
        return self._text[0]

    def keep_text(self, text: bytes) -> None:
        """Take ``text`` as this build's plain feed, made another way (``delta.splice``, or
        the served version's bytes for the same lines): it must equal ``entries.text()``."""
        if not self._text:
            self._text.append(text)

    def covering(self, ip: IPAddress) -> Line | None:
        """The line of this build that covers ``ip``, or ``None``."""
        return self.entries.line_for(ip)

    def active(self, ip: IPAddress) -> Member | None:
        """The snapshot's active offender at ``ip`` (published or not), or ``None``."""
        return self.inputs.active.get(ip, self.built)


def build_feeds(
    specs: Sequence[FeedSpec],
    policy: FeedPolicy,
    inputs: FeedInputs,
    previous: dict[str, FeedBuild] | None = None,
) -> dict[str, FeedBuild]:
    """Every feed from one snapshot: what may be published is judged once for all feeds. With
    ``previous`` (the builds of the inputs these were kept in step from), a feed no changed row
    reaches keeps its lines and text (``_unchanged``)."""
    allow = with_entries(policy.allowlist, inputs.allow_entries)
    gaps = _holes(allow)
    publishable = {
        cols.version: (cols.until > inputs.now) & ~spans.contains(*gaps[cols.version], cols.addr)
        for cols in inputs.active.families
    }
    previous = previous or {}
    return {
        spec.name: _build(spec, policy, inputs, allow, gaps, publishable, previous.get(spec.name))
        for spec in specs
    }


def _holes(allow: Allowlist) -> dict[int, tuple[Array, Array]]:
    """Never-block, protect and allowlist ranges, merged, per family."""
    found: dict[int, tuple[list[int], list[int]]] = {4: ([], []), 6: ([], [])}
    for network in holes(allow):
        lo, hi = found[network.version]
        lo.append(int(network.network_address))
        hi.append(int(network.broadcast_address))
    return {v: spans.merge(spans.array(lo, v), spans.array(hi, v)) for v, (lo, hi) in found.items()}


def _build(
    spec: FeedSpec,
    policy: FeedPolicy,
    inputs: FeedInputs,
    allow: Allowlist,
    gaps: dict[int, tuple[Array, Array]],
    publishable: dict[int, Array],
    before: FeedBuild | None = None,
) -> FeedBuild:
    """Offenders (addresses) and bans (networks) are combined; escalated prefixes replace
    their offenders; every network has the never-block, protected and allowlisted ranges carved
    out exactly, and none is broader than the prefix guard. Over ``max_entries``: first merge
    into CIDR blocks where that loses nothing; if still over, keep the bans, then the most
    recent, then most repeated, offenders, and count how many were left out. A sharded feed
    may hold ``shards × max_entries``, split in that order (``shards.split``)."""
    now, active = inputs.now, inputs.active
    chosen = {
        cols.version: np.flatnonzero(
            publishable[cols.version] & spec.selects(cols, active.combos, now)
        )
        for cols in active.families
    }
    matched = Selection(active, chosen[4], chosen[6])
    if before is not None and _unchanged(before, spec, inputs, matched):
        return dataclasses.replace(before, inputs=inputs, matched=matched, offenders=matched)
    bans = [b for b in inputs.bans if spec.excludes_ban(b) is None]
    escalated = _escalate(policy.escalation, matched)
    networks = _networks([b.network for b in bans] + [e.prefix for e in escalated], gaps, policy)
    published, cap = matched, spec.capacity
    entries = _entries(published, networks, spec.aggregate, policy.guard)
    if len(entries) > cap:
        entries = _entries(published, networks, True, policy.guard)
    dropped_networks = 0
    if len(entries) > cap:
        published = matched.top(max(0, cap - len(networks)))
        entries = _entries(published, networks, True, policy.guard)
        if len(entries) > cap:  # bans alone exceed the cap: say so, never silently
            dropped_networks = len(entries) - cap
            entries = _first(entries, cap)
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
        shards=split(entries, networks, published, spec) if spec.shards > 1 else (),
    )


def _unchanged(before: FeedBuild, spec: FeedSpec, inputs: FeedInputs, matched: Selection) -> bool:
    """Whether ``before`` is what this feed builds now: built from the inputs these were kept
    in step from, with the same bans, allow entries and spec, no expiry reached since, nothing
    left out by the cap, and no changed row among the offenders it selected or selects now.
    (Rows never start to match by themselves: time only expires them or ages them out of
    ``seen_within``, and ``valid_until`` is the first moment either happens.)"""
    if inputs.derived_from != before.inputs.version or before.spec != spec or before.overflow:
        return False
    if before.valid_until is not None and inputs.now >= before.valid_until:
        return False
    if inputs.bans != before.inputs.bans or inputs.allow_entries != before.inputs.allow_entries:
        return False
    for version, changed in zip((4, 6), inputs.active.applied, strict=True):
        for selected in (before.matched, matched):
            found = selected.addresses(version)
            at = np.searchsorted(found, changed)
            inside = at < len(found)
            if (found[at[inside]] == changed[inside]).any():
                return False
    return True


def _escalate(escalation: Escalation | None, matched: Selection) -> list[Escalated]:
    """The prefixes with at least ``min_offenders`` selected offenders, with their counts."""
    if escalation is None:
        return []
    found: list[Escalated] = []
    for version, length in ((4, escalation.prefix_v4), (6, escalation.prefix_v6)):
        addresses = matched.addresses(version)
        if not len(addresses):
            continue
        shift = spans.BITS[version] - length
        prefixes, counts = np.unique((addresses >> shift) << shift, return_counts=True)
        for prefix, count in zip(prefixes.tolist(), counts.tolist(), strict=True):
            if count >= escalation.min_offenders:
                found.append(Escalated(_network(version, prefix, length), count))
    return found


def _network(version: int, start: int, length: int) -> IPNetwork:
    return (IPv4Network if version == 4 else IPv6Network)((start, length))


def _networks(
    items: list[IPNetwork], gaps: dict[int, tuple[Array, Array]], policy: FeedPolicy
) -> Lines:
    """Bans and escalated prefixes: merged, with the holes carved out, cut to the guard."""
    families = []
    for version in (4, 6):
        own = [n for n in items if n.version == version]
        lo = spans.array([int(n.network_address) for n in own], version)
        hi = spans.array([int(n.broadcast_address) for n in own], version)
        lo, hi = spans.subtract(*spans.merge(lo, hi), *gaps[version], version)
        families.append(_blocks(version, lo, hi, policy.guard))
    return Lines(*families)


def _blocks(version: int, lo: Array, hi: Array, guard: PrefixGuard) -> LineFamily:
    start, length = spans.cidrs(lo, hi, version)
    limit = guard.max_prefix_v4 if version == 4 else guard.max_prefix_v6
    return LineFamily(version, *spans.split_blocks(start, length, limit, version))


def _entries(offenders: Selection, networks: Lines, merge: bool, guard: PrefixGuard) -> Lines:
    families = []
    for nets in networks.families:
        version = nets.version
        addresses = offenders.addresses(version)
        if merge:
            lo = np.concatenate([addresses, nets.start])
            hi = np.concatenate([addresses, nets.ends()])
            families.append(_blocks(version, *spans.merge(lo, hi), guard))
            continue
        full = np.full(len(addresses), spans.BITS[version], dtype=np.int64)
        if not len(nets):  # offenders only: in address order already
            families.append(LineFamily(version, addresses, full))
            continue
        outside = ~spans.contains(*nets.merged(), addresses)
        start = np.concatenate([addresses[outside], nets.start])
        length = np.concatenate([full[outside], nets.length])
        order = np.argsort(start, kind="stable")  # lines are disjoint: starts are distinct
        families.append(LineFamily(version, start[order], length[order]))
    return Lines(*families)


def _first(lines: Lines, count: int) -> Lines:
    v4 = np.arange(len(lines.v4)) < count
    v6 = np.arange(len(lines.v6)) < count - len(lines.v4)
    return lines.take(v4, v6)


def _valid_until(
    matched: Selection, bans: list[Ban], allows: list[AllowEntry], spec: FeedSpec
) -> int | None:
    moments: list[int] = []
    for cols in matched.active.families:
        rows = matched.indices(cols.version)
        if not len(rows):
            continue
        until = cols.until[rows]
        if (until != FOREVER).any():
            moments.append(int(until.min()))
        if spec.seen_within is not None:
            moments.append(int(cols.last[rows].min()) + spec.seen_within)
    moments += [b.expires for b in bans if b.expires is not None]
    moments += [e.expires for e in allows if e.expires is not None]
    return min(moments, default=None)
