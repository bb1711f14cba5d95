"""What the server serves: each feed's recorded version, kept in memory with its bytes.

:meth:`FeedCache.refresh` (a worker thread, every second) does two things. It *publishes* when
the feeds can have changed — the store version moved, or the clock passed the earliest expiry
of the last build — through the :class:`~banfeed.publish.Publisher` (build → guards → a new
version recorded). Then it *reads* what is served — the newest version of each feed, or a pinned
one — and keeps those bytes. Requests only read memory. A sharded feed's shards (``NAME-1`` …)
are loaded with it, from the same version and the same transaction, and replace it in one
assignment: a shard is never served from another version than its siblings and the whole feed.

Serving needs no write: if publishing fails (a read-only store, a lost connection), the error
is logged and reported, the recorded versions keep being served, and the next refresh tries
again. Only when the store cannot even be read does every feed answer 503 (a FortiGate keeps its
last good list on an error, but empties its feed on an empty 200).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from .. import metrics
from ..errors import StoreError
from ..models import FeedState
from ..policy import with_entries
from ..publish import Publisher, Served, served
from ..publish.publisher import served_shards
from ..publish.render import (
    OFFENDER_RENDERERS,
    TEXT_MEDIA_TYPE,
    compress,
    etag_of,
    rendered_pieces,
)
from ..publish.shards import names as shard_names
from ..publish.stix import DEFAULT_IDENTITY, STIX_FORMAT, STIX_MEDIA_TYPE, stix_body
from ..store import Store
from ..timeutil import Clock, http_date

log = logging.getLogger(__name__)

__all__ = ["FeedCache", "Rendered", "etag_of"]


@dataclass(frozen=True, slots=True)
class Rendered:
    """One feed in one format: the bytes a consumer gets and their validators."""

    body: bytes
    gzipped: bytes
    etag: str  # strong: the hash of body, so it changes exactly when the bytes change
    last_modified: str  # HTTP date
    media_type: str


@dataclass
class FeedEntry:
    served: Served
    text: Rendered
    others: dict[str, tuple[int, Rendered]] = field(default_factory=dict)  # fmt -> (store v, …)


class FeedCache:
    def __init__(
        self,
        store: Store,
        publisher: Publisher,
        clock: Clock,
        *,
        publish: bool = True,
        stix_identity: str = DEFAULT_IDENTITY,  # [server] stix_identity
    ) -> None:
        self.store = store
        self.stix_identity = stix_identity
        self.publisher = publisher
        self.names = [spec.name for spec in publisher.specs]
        # Each shard's name, and the feed it is a shard of (its auth and allow_from apply).
        self.shards = {s.name: shard_names(s.name, s.shards) for s in publisher.specs}
        self.owners = {shard: feed for feed, names in self.shards.items() for shard in names}
        self.clock = clock
        self.publishing = publish
        self.entries: dict[str, FeedEntry] = {}  # what is served
        self.healthy = False  # the store could be read at the last refresh
        self.last_ok: float | None = None
        self.last_error: str | None = None  # why the store could not be read
        self.publish_error: str | None = None  # why the last publish failed (still serving)
        self.last_cycle: int | None = None
        self.store_version: int | None = None
        self._published: tuple[int, int | None] | None = None  # store version, valid_until
        self._lock = threading.Lock()  # one refresh at a time; readers need no lock

    # -- reading (event loop) -----------------------------------------------------------------

    def owner(self, name: str) -> str:
        """The feed ``name`` is served for: its own, or the feed it is a shard of."""
        return self.owners.get(name, name)

    def get(self, name: str, fmt: str) -> Rendered | None:
        """The current bytes of a feed's plain text (CSV/JSON: see :meth:`render`), or None
        when nothing is recorded for it yet or the store cannot be read."""
        entry = self.entries.get(name)
        if entry is None or not self.healthy:
            return None
        if fmt == "txt":
            return entry.text
        cached = entry.others.get(fmt)
        return cached[1] if cached and cached[0] == self.store_version else None

    # -- refreshing (worker thread) -------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> list[str]:
        """Publish if the feeds can have changed, then load what is served; return the feeds
        whose served version changed. Never raises StoreError."""
        with self._lock:
            try:
                changed = self._refresh(force)
            except StoreError as exc:
                if self.healthy or self.last_error != str(exc):
                    log.error("feeds unavailable (answering 503): %s", exc)
                self.healthy, self.last_error = False, str(exc)
                metrics.STORE_UP.set(0)
                return []
            if not self.healthy and self.last_error:
                log.warning("store reachable again; serving feeds")
            self.healthy, self.last_error, self.last_ok = True, None, self.clock()
            metrics.STORE_UP.set(1)
            return changed

    def _refresh(self, force: bool) -> list[str]:
        now = int(self.clock())
        with self.store.read() as tx:
            version = tx.store_version()
            last_cycle = tx.get_meta("last_cycle")
            self.last_cycle = int(last_cycle) if last_cycle else None
        self.store_version = version
        if self.publishing and (force or self._stale(version, now)):
            self._publish(version)
        return self._load_served()

    def _stale(self, version: int, now: int) -> bool:
        if self._published is None or self._published[0] != version:
            return True
        valid_until = self._published[1]
        return valid_until is not None and now >= valid_until

    def _publish(self, version: int) -> None:
        began = time.perf_counter()
        try:
            results = self.publisher.publish()
        except StoreError as exc:
            # Keep serving what is recorded; try again next refresh (nothing marked as done).
            if self.publish_error != str(exc):
                log.error("could not publish feeds (serving the recorded versions): %s", exc)
            self.publish_error = str(exc)
            return
        if self.publish_error is not None:
            log.warning("publishing feeds again")
        self.publish_error = None
        moments = [r.build.valid_until for r in results if r.build.valid_until is not None]
        built = results[0].build.version if results else version
        self._published = (built, min(moments, default=None))
        for result in results:
            if result.build.overflow:
                log.warning(
                    "feed %s: %d of %d offenders left out (limit %d); "
                    "the most recent and most repeated are published",
                    result.feed,
                    result.build.overflow,
                    len(result.build.matched),
                    result.build.spec.capacity,
                )
        log.info(
            "built feeds %s in %.2fs",
            ", ".join(f"{r.feed} ({r.outcome})" for r in results),
            time.perf_counter() - began,
        )

    def _load_served(self) -> list[str]:
        changed = []
        with self.store.read() as tx:
            states = tx.feed_states()
            numbers = tx.latest_numbers()
            fresh: dict[str, FeedEntry] = {}
            for name in self.names:
                state = states.get(name) or FeedState(name)
                number = state.pinned if state.pinned is not None else numbers.get(name)
                entry = self.entries.get(name)
                if entry is not None and entry.served.version.number == number:
                    for shown_name in (name, *self.shards[name]):  # the same version
                        kept = self.entries.get(shown_name)
                        if kept is not None and kept.served.state != state:
                            kept = FeedEntry(Served(kept.served.version, state), kept.text)
                        if kept is not None:
                            fresh[shown_name] = kept
                    continue
                shown = served(tx, name, state) if number is not None else None
                if shown is None:
                    continue
                fresh[name] = FeedEntry(shown, _text(shown))
                changed.append(name)
                parts = served_shards(tx, shown, len(self.shards[name]))
                for shard, part in zip(self.shards[name], parts, strict=True):
                    if part is None:  # 503 for it: never a shard of another version
                        log.warning(
                            "feed %s: version %d has no shard %s (published before the feed "
                            "had as many shards): answering 503 for it",
                            name,
                            shown.version.number,
                            shard,
                        )
                        continue
                    fresh[shard] = FeedEntry(part, _text(part))
                    changed.append(shard)
        self.entries = fresh  # one assignment: readers see old or new, shards included
        for name, entry in fresh.items():
            version = entry.served.version
            metrics.FEED_ENTRIES.labels(name).set(version.entries)
            metrics.FEED_OVERFLOW.labels(name).set(version.overflow)
            metrics.FEED_HELD.labels(name).set(1 if entry.served.held else 0)
        return changed

    def render(self, name: str, fmt: str) -> Rendered | None:
        """CSV, JSON or STIX of the served version: the active offenders its lines cover,
        rendered once per store version (offender details change without the plain feed
        changing). STIX without the stix2 library raises StixUnavailable."""
        entry = self.entries.get(name)
        if entry is None or not self.healthy:
            return None
        version = self.store_version or 0
        cached = entry.others.get(fmt)
        if cached is not None and cached[0] == version:
            return cached[1]
        stix = fmt == STIX_FORMAT
        media_type = STIX_MEDIA_TYPE if stix else OFFENDER_RENDERERS[fmt][1]
        now = int(self.clock())
        try:
            with self.store.read() as tx:  # the offenders stream from this transaction
                allow = with_entries(self.publisher.policy.allowlist, tx.allow_entries(now))
                if stix:  # the same offenders (and when each was written), and the bans
                    written = self.publisher.covered_written(tx, entry.served)
                    bans = tx.active_bans(now)
                    body = stix_body(entry.served, written, bans, self.stix_identity)
                else:
                    offenders = self.publisher.covered_offenders(tx, entry.served)
                    body = b"".join(rendered_pieces(fmt, offenders, now, allow))
        except StoreError as exc:
            log.error("feed %s.%s unavailable: %s", name, fmt, exc)
            return None
        # Dated by their rendering, so If-Modified-Since never wrongly says 304.
        rendered = _rendered(body, None, etag_of(body), now, media_type)
        entry.others[fmt] = (version, rendered)
        return rendered


def _text(shown: Served) -> Rendered:
    body = shown.body()
    return _rendered(
        body, shown.version.body, shown.version.etag, shown.version.created, TEXT_MEDIA_TYPE
    )


def _rendered(
    body: bytes, gzipped: bytes | None, etag: str, changed: int, media_type: str
) -> Rendered:
    return Rendered(
        body,
        gzipped if gzipped is not None else compress(body),
        etag,
        http_date(changed),
        media_type,
    )
