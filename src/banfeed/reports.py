"""Report functions: what the CLI renders (and the HTTP API will serve), as plain records.

Each function makes its reads in one transaction and returns dataclasses; rendering (tables,
JSON) is the caller's. Feed reports read the *published* versions, never a fresh build, except
where they say what the current build would do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from . import compose
from .compose import Runtime
from .errors import InputError
from .models import (
    Ban,
    BanOrigin,
    Consumer,
    Event,
    EventKind,
    FeedState,
    FeedVersion,
    Offender,
    OffenderState,
    OffenderStatus,
    Offense,
)
from .net import IPAddress, IPNetwork
from .policy import Allowlist, Retention, holes, state, ttl_record, with_entries
from .publish.render import decompress, offender_record
from .store import OffenderWhere, Tx
from .timeutil import iso

# Builds (numpy) load where a report needs one: `list` reads rows only.
if TYPE_CHECKING:
    from .publish import FeedBuild, Served, Verdict, Why


@dataclass(frozen=True, slots=True)
class FeedVerdict:
    """Is an address in a feed as served, and why."""

    feed: str
    listed: bool
    why: Why
    reason: str
    version: int | None  # the served version the verdict is about
    shard: int | None = None  # a sharded feed: the shard of that version that lists it

    def record(self) -> dict[str, Any]:
        return {
            "listed": self.listed,
            "why": self.why.value,
            "reason": self.reason,
            "version": self.version,
            "shard": self.shard,
        }


def verdict(build: FeedBuild, shown: Served | None, ip: IPAddress, current: Verdict) -> FeedVerdict:
    """``current`` (from the build) turned into a verdict about what is *served*: ``listed`` is
    decided by the served lines. When the served version differs from the build (held, pinned,
    or not republished yet because no server runs), the reason names both."""
    name = build.spec.name
    if shown is None:  # the next publish takes the build (a first version is never held)
        return FeedVerdict(
            name, current.listed, current.why, f"{current.reason} (not published yet)", None
        )
    number = shown.version.number
    served_listed = shown.lines().line_for(ip) is not None
    if shown.pinned or shown.held or served_listed != current.listed:
        how = "pinned" if shown.pinned else "held" if shown.held else "published"
        words = "lists" if served_listed else "does not list"
        reason = f"{how} at version {number}, which {words} it; the current build: {current.reason}"
        return FeedVerdict(name, served_listed, current.why, reason, number)
    return FeedVerdict(name, current.listed, current.why, current.reason, number)


@dataclass(frozen=True)
class OffenderDetail:
    ip: IPAddress
    offender: Offender | None
    offenses: list[Offense]
    events: list[Event]
    allowlist: Allowlist
    now: int
    feeds: list[FeedVerdict] = field(default_factory=list)
    retention: Retention | None = None  # the current [retention]: explains the TTL

    def record(self) -> dict[str, Any]:
        """The stable JSON shape of `banfeed show` (documented in docs/cli.md)."""
        record: dict[str, Any] = {"ip": str(self.ip)}
        if self.offender is not None:
            record = offender_record(self.offender, self.now, self.allowlist) | ttl_record(self)
        by_origin: dict[str, dict[str, Any]] = {}
        for o in self.offenses:
            item = by_origin.setdefault(
                f"{o.device}/{o.vdom}",
                {"device": o.device, "vdom": o.vdom, "offenses": 0, "causes": {}},
            )
            item["offenses"] += 1
            item["causes"][o.source] = item["causes"].get(o.source, 0) + 1
        return record | {
            "by_origin": list(by_origin.values()),
            "offenses": [
                {
                    "device": o.device,
                    "vdom": o.vdom,
                    "created": iso(o.created),
                    "expires": iso(o.expires),
                    "source": o.source,
                }
                for o in self.offenses
            ],
            "events": [
                {"time": iso(e.time), "kind": e.kind.value, "actor": e.actor, "detail": e.detail}
                for e in self.events
            ],
            "feeds": {v.feed: v.record() for v in self.feeds},
        }


def offender_detail(rt: Runtime, ip: IPAddress) -> OffenderDetail:
    """One address: its offender row, history, and each feed's verdict as served."""
    from .publish import explain, served
    from .publish.shards import listing

    publisher = rt.publisher()
    verdicts = []
    with rt.store.read() as tx:
        builds = publisher.build(tx)
        offender = tx.get_offender(str(ip))
        offenses = tx.offenses_of(str(ip))
        events = tx.events_of(str(ip))
        states = tx.feed_states()
        for name, build in builds.items():
            shown = served(tx, name, states.get(name))
            found = verdict(build, shown, ip, explain(build, ip, offender, events))
            if found.listed and shown is not None and build.spec.shards > 1:  # which shard
                found = dataclasses.replace(found, shard=listing(tx, shown, build.spec.shards, ip))
            verdicts.append(found)
    allow = next(iter(builds.values())).allowlist if builds else publisher.policy.allowlist
    return OffenderDetail(ip, offender, offenses, events, allow, rt.now(), verdicts, rt.retention())


# Past this many never-block, protected and allowlisted networks, a search of suppressed
# offenders reads every listed row instead of an OR of that many ranges.
MAX_SQL_RANGES = 512


@dataclass(frozen=True)
class OffenderFilter:
    """What `list` selects. Each filter given must hold; a list filter holds for any of its
    values. ``states`` empty: every state."""

    states: frozenset[OffenderState] = frozenset({OffenderState.ACTIVE})
    within: IPNetwork | None = None  # the address is inside it
    causes: tuple[str, ...] = ()  # case-insensitive, like [[feeds]] causes
    devices: tuple[str, ...] = ()
    vdoms: tuple[str, ...] = ()  # "dmz" (any device) or "edge-1/dmz"
    since: int | None = None  # an offense at or after it (the last one)
    last_until: int | None = None  # the last offense at or before it
    first_since: int | None = None  # the first offense at or after it
    first_until: int | None = None  # the first offense at or before it

    def store_filters(self, now: int, allowlist: Allowlist | None = None) -> OffenderWhere:
        """What the store can narrow in SQL; the state is decided exactly afterwards. With the
        ``allowlist``, a search of suppressed offenders reads only the never-block, protected
        and allowlisted ranges (not every row of the store)."""
        states, active_at, expired_at = self.states, None, None
        status: OffenderStatus | None = None
        if states == {OffenderState.ACTIVE}:
            active_at = now
        elif states == {OffenderState.EXPIRED}:
            expired_at = now
        elif states == {OffenderState.UNBANNED}:
            status = OffenderStatus.UNBANNED
        elif states and OffenderState.UNBANNED not in states:
            status = OffenderStatus.LISTED
        ranges = holes(allowlist) if allowlist is not None else []
        suppressed = states == {OffenderState.SUPPRESSED} and len(ranges) <= MAX_SQL_RANGES
        return OffenderWhere(
            status=status, active_at=active_at, expired_at=expired_at, within=self.within,
            inside=ranges if suppressed else (), since=self.since, last_until=self.last_until,
            first_since=self.first_since, first_until=self.first_until, sources=self.causes,
            devices=self.devices, vdoms=self.vdoms,
        )  # fmt: skip


def listed_offenders(
    tx: Tx,
    now: int,
    allowlist: Allowlist,
    *,
    every: bool = False,
    where: OffenderFilter | None = None,
) -> Iterator[Offender]:
    """What `list` shows, streamed from the store in address order: active offenders, or
    ``every`` one (expired, suppressed and unbanned too), narrowed by ``where`` (in SQL where
    a column answers, so memory stays bounded)."""
    where = where or OffenderFilter()
    if every:
        where = dataclasses.replace(where, states=frozenset())
    for offender in tx.iter_offenders_matching(where.store_filters(now, allowlist)):
        if not where.states or state(offender, now, allowlist) in where.states:
            yield offender


def effective_allowlist(rt: Runtime, tx: Tx) -> Allowlist:
    """The configured allowlist and protect ranges plus the store's current allow entries."""
    return with_entries(compose.allowlist(rt.config), tx.allow_entries(rt.now()))


@dataclass(frozen=True)
class FeedOverview:
    name: str
    max_entries: int  # the feed's limit (each shard's)
    auth: str
    version: FeedVersion | None
    state: FeedState
    consumers: list[Consumer]
    shards: list[FeedOverview] = field(default_factory=list)  # NAME-k: each as a feed

    def record(self) -> dict[str, Any]:
        """The stable JSON shape of `banfeed feeds` (documented in docs/cli.md)."""
        v = self.version
        return {
            "feed": self.name,
            "version": v.number if v else None,
            "entries": v.entries if v else 0,
            "max_entries": self.max_entries,
            "matched": v.matched if v else 0,
            "overflow": v.overflow if v else 0,
            "etag": v.etag if v else None,
            "changed": iso(v.created) if v else None,
            "auth": self.auth,
            "held_since": iso(self.state.held_since),
            "hold_reason": self.state.hold_reason,
            "pinned": self.state.pinned,
            "pinned_by": self.state.pinned_by,
            "consumers": [
                {
                    "address": c.address,
                    "user_agent": c.user_agent,
                    "last_fetch": iso(c.last_fetch),
                    "status": c.status,
                    "etag": c.etag,
                    "current": v is not None
                    and c.etag is not None
                    and c.etag.startswith(v.etag[:-1]),
                    "requests": c.requests,
                }
                for c in self.consumers
            ],
            "shards": [shard.record() for shard in self.shards],
        }


def feed_overviews(rt: Runtime) -> list[FeedOverview]:
    """Each feed as served: its recorded version (no rebuild), hold or pin, and consumers."""
    from .publish import served, served_shards

    with rt.store.read() as tx:
        states = tx.feed_states()
        consumers = tx.feed_consumers()
        rows = []
        for feed in rt.config.feeds:
            state = states.get(feed.name) or FeedState(feed.name)
            shown = served(tx, feed.name, state)
            parts: list[Served | None] = [None] * feed.shards
            if shown is not None and feed.shards > 1:
                parts = served_shards(tx, shown, feed.shards)
            of = {n: [c for c in consumers if c.feed == n] for n in [feed.name, *feed.shard_names]}
            version = shown.version if shown else None
            overview = FeedOverview(
                feed.name, feed.limit, feed.auth.type, version, state, of[feed.name]
            )
            shards = [
                dataclasses.replace(
                    overview, name=name, version=part.version if part else None, consumers=of[name]
                )
                for name, part in zip(feed.shard_names, parts, strict=True)
                if feed.shards > 1
            ]
            rows.append(dataclasses.replace(overview, shards=shards))
    return rows


def feed_history(rt: Runtime, feed: str, limit: int) -> tuple[FeedState, list[FeedVersion]]:
    rt.config.feed(feed)
    with rt.store.read() as tx:
        return tx.feed_states().get(feed) or FeedState(feed), tx.feed_versions(feed, limit)


@dataclass(frozen=True)
class FeedDiff:
    feed: str
    old: int
    new: int
    added: list[str]
    removed: list[str]


def feed_diff(rt: Runtime, feed: str, old: int | None, new: int | None) -> FeedDiff:
    """Lines added and removed between two versions (default: the served one and the one
    before it)."""
    from .publish import served

    rt.config.feed(feed)
    with rt.store.read() as tx:
        if new is None:
            shown = served(tx, feed)
            if shown is None:
                raise InputError(f"feed {feed} has no published version yet")
            new = shown.version.number
        if old is None:
            old = new - 1
        bodies = {}
        for number in (old, new):
            version = tx.feed_version(feed, number)
            if version is None or version.body is None:
                raise InputError(
                    f"feed {feed}: version {number} is not kept (see `banfeed feeds history`)"
                )
            bodies[number] = decompress(version.body).decode("ascii").splitlines()
    before, after = bodies[old], bodies[new]
    known, kept = set(before), set(after)
    added = [line for line in after if line not in known]  # feed order: numeric
    removed = [line for line in before if line not in kept]
    return FeedDiff(feed, old, new, added, removed)


# -- the day-2 read models: bans and the audit log ------------------------------------------


def ban_record(ban: Ban, now: int) -> dict[str, Any]:
    """The stable JSON shape of one ban in `banfeed bans --format json` (docs/cli.md)."""
    expired = ban.expires is not None and ban.expires <= now
    return {
        "network": str(ban.network),
        "origin": ban.provenance.value,
        "state": "expired" if expired else "active",
        "created": iso(ban.created),
        "expires": iso(ban.expires),
        "actor": ban.actor,
        "note": ban.note,
    }


def list_bans(
    tx: Tx,
    now: int,
    *,
    origin: BanOrigin | None = None,
    which: str = "active",
    overlapping: IPNetwork | None = None,
) -> list[Ban]:
    """Manual and imported bans in numeric order: ``which`` is ``active``, ``expired`` or
    ``all``; ``overlapping``: bans inside the network or containing it."""
    return tx.bans_matching(
        origin=origin,
        active_at=now if which == "active" else None,
        expired_at=now if which == "expired" else None,
        overlapping=overlapping,
    )


def event_record(event: Event) -> dict[str, Any]:
    """The stable JSON shape of one event in `banfeed events --format json` (docs/cli.md)."""
    return {
        "time": iso(event.time),
        "kind": event.kind.value,
        "ip": event.ip,
        "actor": event.actor,
        "detail": event.detail,
    }


def audit_events(
    tx: Tx,
    *,
    actor: str | None = None,
    kinds: Sequence[EventKind] = (),
    since: int | None = None,
    about: IPNetwork | None = None,
    limit: int = 100,
) -> list[Event]:
    """The audit log, oldest first: the newest ``limit`` events (0: every one) that pass the
    filters; ``about`` an address or network (its events, and those of networks holding it)."""
    found = tx.events_matching(actor=actor, kinds=kinds, since=since, about=about, limit=limit)
    return found[::-1]
