"""Record: build every feed, let the guards decide, and keep each published version.

A version is the plain feed's bytes (stored compressed for the newest ones), with when it was
first published, its ETag, size, what it added and removed, why it was published and who
approved it. What consumers are served is always a recorded version — the newest, or a pinned
one after `feeds rollback` — so replicas serve identical bytes by construction, `export` and the
push-feed sync hand on the guarded feed, and a read-only store still serves what it recorded.
A sharded feed's shards are recorded with each of its versions, in the same transaction
(``shards``); the guards judge the whole feed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Collection, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from enum import StrEnum
from ipaddress import IPv4Network, IPv6Network, ip_network
from operator import itemgetter

from ..errors import ConflictError, StoreError
from ..models import EventKind, FeedState, FeedVersion, Offender, Written
from ..store import Snapshot, Store, Tx
from ..timeutil import Clock
from . import shards
from .build import FeedBuild, FeedInputs, FeedPolicy, FeedSpec, build_feeds
from .delta import delta, splice
from .delta import lost as lost_since
from .guard import Decision, LossFacts, decide, needs_facts
from .inputs import read_inputs
from .lines import Line, Lines, changes
from .render import compress, decompress, etag_of
from .shards import Kept, ShardText
from .shards import key as shard_key

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class History:
    """How many versions a feed keeps, and how many of the newest keep their bytes."""

    versions: int = 500
    bodies: int = 48


class Outcome(StrEnum):
    PUBLISHED = "published"  # a new version was recorded
    UNCHANGED = "unchanged"  # the build equals the served version
    HELD = "held"  # a guard refused it: the last good version is served
    PINNED = "pinned"  # an operator pinned an older version


@dataclass(frozen=True, slots=True)
class FeedResult:
    feed: str
    outcome: Outcome
    build: FeedBuild
    decision: Decision | None = None
    version: FeedVersion | None = None  # the version recorded now, if any
    parts: tuple[ShardText, ...] = ()  # a sharded feed's shards (build.shards) with their text
    shards: tuple[FeedVersion, ...] = ()  # the shards' rows recorded with ``version``


@dataclass(frozen=True, slots=True)
class Served:
    """What one feed's consumers get: a recorded version, and the feed's state."""

    version: FeedVersion
    state: FeedState

    @property
    def held(self) -> bool:
        return self.state.held_since is not None

    @property
    def pinned(self) -> bool:
        return self.state.pinned is not None

    def body(self) -> bytes:
        assert self.version.body is not None, "served versions keep their body"
        return decompress(self.version.body)

    def lines(self) -> Lines:
        return Lines.parse(self.body())


def served(tx: Tx, feed: str, state: FeedState | None = None) -> Served | None:
    """The version consumers of ``feed`` get now (pinned, else newest), or None."""
    state = state or tx.feed_states().get(feed) or FeedState(feed)
    if state.pinned is not None:
        version = tx.feed_version(feed, state.pinned)
    else:
        version = tx.latest_version(feed)
    if version is None or version.body is None:
        return None
    return Served(version, state)


def served_shards(tx: Tx, shown: Served, count: int) -> list[Served | None]:
    """Shards 1 … ``count`` of the version ``shown`` is (recorded with it, in one transaction):
    None for a shard that version has not (it was published before the feed had as many)."""
    found: list[Served | None] = []
    for number in range(1, count + 1):
        version = tx.feed_version(shard_key(shown.version.feed, number), shown.version.number)
        kept = version is not None and version.body is not None
        found.append(Served(version, shown.state) if kept and version else None)
    return found


class Publisher:
    """Build → decide → record, for every feed at once."""

    def __init__(
        self,
        store: Store,
        specs: Sequence[FeedSpec],
        policy: FeedPolicy,
        clock: Clock,
        history: History = History(),
    ) -> None:
        self.store = store
        self.specs = list(specs)
        self.policy = policy
        self.clock = clock
        self.history = history
        self.builds: dict[str, FeedBuild] = {}  # the last builds, for explain and reports
        self.etags: dict[str, str] = {}  # the ETag of each last build's plain text
        # The number, lines and text of the version this publisher recorded last, by feed: the
        # next publish compares with them (and splices the text) without decompressing and
        # parsing the stored body again.
        self._recorded: dict[str, tuple[int, Lines, bytes]] = {}
        self._shards: dict[str, tuple[int, list[Kept | None]]] = {}  # the same, for shards
        self._inputs: FeedInputs | None = None  # the last snapshot, kept in step by version

    def build(self, tx: Tx, feeds: Collection[str] | None = None) -> dict[str, FeedBuild]:
        """Every feed from the store's state now (no guard, nothing recorded)."""
        specs = [s for s in self.specs if feeds is None or s.name in feeds]
        builds = build_feeds(specs, self.policy, self.inputs(tx), self.builds)
        self.builds = builds
        return builds

    def inputs(self, tx: Tx) -> FeedInputs:
        """The snapshot to build from: the kept one brought up to the store's version."""
        now = int(self.clock())
        self._inputs = read_inputs(tx, now, self._inputs)
        return self._inputs

    def publish(self, feeds: Collection[str] | None = None) -> list[FeedResult]:
        """Build every feed, decide, and record new versions and holds in one transaction.
        Raises StoreError when the store cannot be read or written; nothing is then marked as
        done, so the next call tries again."""
        with self.store.read() as tx:
            builds = self.build(tx, feeds)
            states = tx.feed_states()
            results = [self._decide(tx, build, states) for build in builds.values()]
        results = _compressed(results)
        self._record(results, states)
        inputs = self._inputs
        if inputs is not None and inputs.whole:
            self._save_snapshot(inputs)
        return results

    def _save_snapshot(self, inputs: FeedInputs) -> None:
        """Keep what a full read found, so new processes (``export``, a restart, a replica)
        start from it and read only the rows stamped since. Best effort: a store that refuses
        the write (read-only, busy) costs the next process a full read, nothing else."""
        body = inputs.active.to_bytes()
        try:
            with self.store.write() as tx:
                saved = tx.latest_snapshot(with_body=False)
                if saved is None or saved.version <= inputs.version:  # equal: it was unusable
                    tx.save_snapshot(Snapshot(inputs.version, inputs.rows, inputs.read_at, body))
        except StoreError as exc:
            log.warning("could not save the active set for the next process: %s", exc)

    def _decide(self, tx: Tx, build: FeedBuild, states: dict[str, FeedState]) -> FeedResult:
        name = build.spec.name
        state = states.get(name) or FeedState(name)
        if state.pinned is not None:
            return FeedResult(name, Outcome.PINNED, build)
        last = tx.latest_version(name, with_body=False)
        previous = self._previous(tx, last)
        change = delta(previous[0], build.entries) if previous is not None else None
        if change is not None and previous is not None:
            if change.none:  # the same lines: the same bytes as the served version
                build.keep_text(previous[1])
            else:  # the old text with the changed lines cut out and put in
                spliced = splice(previous[1], previous[0], build.entries, change)
                if spliced is not None:
                    build.keep_text(spliced)
        body = build.text()
        etag = self.etags[name] = etag_of(body)
        parts = shards.texts(build, self._previous_shards(tx, last, len(build.shards)))
        if last is not None and last.etag == etag and all(p.same for p in parts):
            self._recorded[name] = (last.number, build.entries, body)  # the same bytes
            if parts:
                self._shards[name] = (last.number, shards.kept(parts))
            return FeedResult(name, Outcome.UNCHANGED, build)
        old = previous[0] if previous is not None else None
        gone = Lines()
        if old is not None and change is not None:
            gone = lost_since(old, build.entries, change)
        if state.hold_approved:
            decision = Decision(True, f"approved by {state.approved_by or 'an operator'}")
        else:
            facts = None
            if old and needs_facts(old, gone, self.policy.max_drop):
                facts = _loss_facts(tx, gone, since=last.created if last else 0)
            decision = decide(build, old, gone, facts, self.policy.max_drop)
        if not decision.publish:
            return FeedResult(name, Outcome.HELD, build, decision)
        added, removed = change.counts if change is not None else changes(Lines(), build.entries)
        version = FeedVersion(
            feed=name,
            number=(last.number if last else 0) + 1,
            created=build.built,
            etag=etag,
            entries=len(build.entries),
            added=added,
            removed=removed,
            matched=len(build.matched),
            overflow=build.overflow,
            reason=decision.reason,
            approver=state.approved_by if state.hold_approved else None,
            store_version=build.version,
            body=None,  # compressed for every feed at once (_compressed)
        )
        return FeedResult(name, Outcome.PUBLISHED, build, decision, version, tuple(parts))

    def _previous_shards(self, tx: Tx, last: FeedVersion | None, count: int) -> list[Kept | None]:
        """The shards of the newest version, as ``_previous`` finds the feed's own."""
        if last is None or not count:
            return []
        kept = self._shards.get(last.feed)
        if kept is not None and kept[0] == last.number:
            return kept[1]
        found: list[Kept | None] = []
        for number in range(1, count + 1):
            row = tx.feed_version(shard_key(last.feed, number), last.number)
            body = decompress(row.body) if row is not None and row.body is not None else None
            found.append(None if row is None or body is None else (row, Lines.parse(body), body))
        return found

    def _previous(self, tx: Tx, last: FeedVersion | None) -> tuple[Lines, bytes] | None:
        """The lines and text of the newest version: remembered if this publisher recorded
        it, else read from the store (another replica or process recorded it)."""
        if last is None:
            return None
        recorded = self._recorded.get(last.feed)
        if recorded is not None and recorded[0] == last.number:
            return recorded[1], recorded[2]
        stored = tx.feed_version(last.feed, last.number)
        if stored is None or stored.body is None:
            return None
        body = decompress(stored.body)
        return Lines.parse(body), body

    def _record(self, results: list[FeedResult], states: dict[str, FeedState]) -> None:
        changes: list[FeedState] = []
        versions: list[FeedVersion] = []
        for result in results:
            state = states.get(result.feed) or FeedState(result.feed)
            if result.outcome is Outcome.HELD and result.decision is not None:
                if state.held_since is None or state.hold_reason != result.decision.reason:
                    log.error("feed %s held: %s", result.feed, result.decision.reason)
                    since = state.held_since or result.build.built
                    changes.append(
                        dataclasses.replace(
                            state, held_since=since, hold_reason=result.decision.reason
                        )
                    )
            elif result.outcome in (Outcome.PUBLISHED, Outcome.UNCHANGED) and state.held_since:
                log.warning("feed %s: hold released; publishing the current build", result.feed)
                changes.append(
                    dataclasses.replace(
                        state, held_since=None, hold_reason=None, approved=None, approved_by=None
                    )
                )
            if result.version is not None:
                versions.append(result.version)
                versions.extend(result.shards)
        if not changes and not versions:
            return
        try:
            with self.store.write() as tx:
                for version in versions:
                    tx.insert_feed_version(version)
                    feed = version.feed.partition("#")[0]  # a shard is pruned like its feed
                    tx.prune_feed_versions(
                        version.feed,
                        self.history.versions,
                        self.history.bodies,
                        states.get(feed, FeedState(feed)).pinned,
                    )
                for state in changes:
                    tx.save_feed_state(state)
        except ConflictError as exc:
            # A replica recorded the same version number first (the unique key): fine, that
            # one is served. Anything else that conflicted is a write that did not happen.
            with self.store.read() as tx:
                missing = [
                    v.feed
                    for v in versions
                    if (tx.latest_version(v.feed, with_body=False) or v).number < v.number
                ]
            if missing:
                raise StoreError(
                    f"could not record versions of {', '.join(missing)}: {exc}"
                ) from exc
            log.info("feed versions recorded by another replica (%s)", exc)
            return
        for result in results:
            if result.version is not None:
                self._recorded[result.feed] = (
                    result.version.number,
                    result.build.entries,
                    result.build.text(),
                )
                if result.shards:
                    kept = zip(result.shards, result.parts, strict=True)
                    self._shards[result.feed] = (
                        result.version.number,
                        [(row, part.lines, part.text) for row, part in kept],
                    )
        for version in versions:
            log.info(
                "feed %s: version %d, %d entries (+%d −%d): %s",
                version.feed,
                version.number,
                version.entries,
                version.added,
                version.removed,
                version.reason,
            )

    def covered_offenders(self, tx: Tx, shown: Served) -> Iterator[Offender]:
        """The active offenders the served version's lines cover (what CSV and JSON list), in
        numeric order, a few thousand at a time: consume it inside ``tx``."""
        rows = tx.iter_offenders(active_at=int(self.clock()))
        return self._lines(shown).covered_stream(rows, _itself)

    def covered_written(self, tx: Tx, shown: Served) -> Iterator[Written]:
        """:meth:`covered_offenders`, each with when its row was last written (for STIX)."""
        rows = tx.iter_offenders_written(active_at=int(self.clock()))
        return self._lines(shown).covered_stream(rows, itemgetter(0))

    def _lines(self, shown: Served) -> Lines:
        """The served version's lines: this process's build of it when it has one."""
        build = self.builds.get(shown.version.feed)
        if build is not None and self.etags.get(shown.version.feed) == shown.version.etag:
            return build.entries
        return shown.lines()


def _itself(offender: Offender) -> Offender:
    return offender


def _compressed(results: list[FeedResult]) -> list[FeedResult]:
    """The results with the bytes of each new version (and of each changed shard) compressed,
    side by side: zlib lets go of the interpreter lock, so two changed feeds of a million lines
    take the time of one on two cores. A shard that did not change keeps its stored bytes."""
    todo = [i for i, r in enumerate(results) if r.version is not None]
    if not todo:
        return results
    texts = [results[i].build.text() for i in todo]
    texts += [p.text for i in todo for p in results[i].parts if not p.same]
    if len(texts) == 1:
        bodies = [compress(texts[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(len(texts), os.cpu_count() or 1)) as pool:
            bodies = list(pool.map(compress, texts))
    whole, changed = iter(bodies[: len(todo)]), iter(bodies[len(todo) :])
    done = list(results)
    for i in todo:
        version = results[i].version
        assert version is not None
        version = dataclasses.replace(version, body=next(whole))
        parts = list(results[i].parts)
        rows = shards.versions(version, parts, [None if p.same else next(changed) for p in parts])
        done[i] = dataclasses.replace(results[i], version=version, shards=tuple(rows))
    return done


def _loss_facts(tx: Tx, lost: Lines, since: int) -> LossFacts:
    items: list[Line] = list(lost)
    networks = [line for line in items if isinstance(line, IPv4Network | IPv6Network)]
    addresses = [line for line in items if not isinstance(line, IPv4Network | IPv6Network)]
    return LossFacts(
        offenders=tx.load_offenders(str(a) for a in addresses),
        inside={str(n): tx.offenders_within([n]) for n in networks},
        bans=tx.bans_by_network([str(ip_network(line)) for line in items]),
        unbans=tx.events_since(since - 1, [EventKind.UNBANNED]),
    )
