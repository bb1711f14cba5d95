"""Rendered feeds, kept in memory and rebuilt only when they can have changed.

A feed can change for two reasons only: the store changed (its version counter moved) or time
passed an offender's ``active_until`` (the build's ``valid_until``). :meth:`FeedCache.refresh`
checks both — one small query — and rebuilds just the feeds concerned, in a worker thread, so
requests never wait on the database: they read the current :class:`Rendered` bytes.

When the store cannot be read, the cache says so (``healthy`` false) and the server answers 503:
a FortiGate keeps its last good list on an error, but empties its feed on an empty 200.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

from sqlalchemy import Connection

from .. import metrics
from ..errors import StoreError
from ..feeds import RENDERERS, FeedBuild, FeedPolicy, FeedSpec, build_feed
from ..store import Store
from ..store import queries as q
from ..timeutil import Clock
from .guard import Verdict, judge, judge_without_history

log = logging.getLogger(__name__)


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
    build: FeedBuild
    changed: int
    rendered: dict[str, Rendered] = field(default_factory=dict)


def etag_of(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def http_date(epoch: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch, UTC), usegmt=True)


class FeedCache:
    def __init__(
        self, store: Store, specs: Sequence[FeedSpec], policy: FeedPolicy, clock: Clock
    ) -> None:
        self.store = store
        self.specs = {spec.name: spec for spec in specs}
        self.policy = policy
        self.clock = clock
        self.entries: dict[str, FeedEntry] = {}  # what is served (the last good while held)
        self.checked: dict[str, tuple[int, int | None]] = {}  # last build: version, valid_until
        self.holds: dict[str, tuple[int, str]] = {}  # feed -> (held since, reason)
        self.max_drop = policy.max_drop
        self.healthy = False
        self.last_ok: float | None = None
        self.last_error: str | None = None
        self.last_cycle: int | None = None
        self._lock = threading.Lock()  # one refresh at a time; readers need no lock

    # -- reading (event loop) -----------------------------------------------------------------

    def get(self, name: str, fmt: str) -> Rendered | None:
        """The current bytes of a feed, or None when it has not been built (or store is down)."""
        entry = self.entries.get(name)
        if entry is None or not self.healthy:
            return None
        return entry.rendered.get(fmt)

    # -- refreshing (worker thread) -------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> list[str]:
        """Rebuild the feeds that may have changed; return their names. Never raises StoreError."""
        with self._lock:
            try:
                rebuilt = self._refresh(force)
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
            return rebuilt

    def _refresh(self, force: bool) -> list[str]:
        now = int(self.clock())
        with self.store.read() as conn:
            version = q.store_version(conn)
            last_cycle = q.get_meta(conn, "last_cycle")
            self.last_cycle = int(last_cycle) if last_cycle else None
            stale = [name for name in self.specs if force or self._stale(name, version, now)]
            if not stale:
                return []
            began = time.perf_counter()
            states = q.feed_states(conn)
            builds = {name: build_feed(conn, self.specs[name], self.policy, now) for name in stale}
            verdicts = {name: self._judge(conn, name, builds[name], states, now) for name in stale}
        fresh: dict[str, FeedEntry] = {}
        changes: list[dict[str, object]] = []
        for name, build in builds.items():
            self.checked[name] = (build.version, build.valid_until)
            state = states.get(name)
            verdict = verdicts[name]
            if verdict is not None and verdict.hold:
                changes += self._hold(name, verdict, state, now)
                continue
            if name in self.holds:
                changes.append({"feed": name, "held_since": None, "hold_reason": None})
                del self.holds[name]
                log.warning("feed %s: hold released; publishing the current build", name)
            metrics.FEED_HELD.labels(name).set(0)
            body = RENDERERS["txt"][0](build, now, build.allowlist)
            etag = etag_of(body)
            changed = now if state is None or state["etag"] != etag else int(state["changed"])
            if state is None or state["etag"] != etag:
                changes.append(
                    {
                        "feed": name,
                        "etag": etag,
                        "entries": len(build.entries),
                        "matched": build.matched,
                        "overflow": build.overflow,
                        "changed": changed,
                    }
                )
            entry = FeedEntry(build, changed)
            entry.rendered["txt"] = _rendered(body, etag, changed, RENDERERS["txt"][1])
            fresh[name] = entry
            metrics.FEED_ENTRIES.labels(name).set(len(build.entries))
            metrics.FEED_OVERFLOW.labels(name).set(build.overflow)
            if build.overflow:
                log.warning(
                    "feed %s: %d of %d offenders left out (max_entries %d); "
                    "the most recent and most repeated are published",
                    name,
                    build.overflow,
                    build.matched,
                    build.spec.max_entries,
                )
        if changes:
            with self.store.write() as conn:
                for values in changes:
                    q.save_feed_state(conn, values)
        self.entries = {**self.entries, **fresh}  # one assignment: readers see old or new
        log.info("rebuilt feeds %s in %.2fs", ", ".join(stale), time.perf_counter() - began)
        return stale

    def _stale(self, name: str, version: int, now: int) -> bool:
        checked = self.checked.get(name)
        if checked is None or checked[0] != version:
            return True
        valid_until = checked[1]
        return valid_until is not None and now >= valid_until

    def _judge(
        self,
        conn: Connection,
        name: str,
        build: FeedBuild,
        states: dict[str, dict[str, Any]],
        now: int,
    ) -> Verdict | None:
        """The mass-drop guard's verdict on a new build, or None when it does not apply."""
        state = states.get(name)
        approved = state.get("approved") if state else None
        held_since = state.get("held_since") if state else None
        if held_since is not None and approved is not None and approved >= held_since:
            return None  # an operator released the hold: take the build as it is
        old = self.entries.get(name)
        if old is not None:
            return judge(conn, old.build, build, self.max_drop, now)
        if state is not None and held_since is not None:
            return Verdict(True, 0, 0, int(state["entries"]))  # still held from before a restart
        if state is not None:
            return judge_without_history(conn, build, state, self.max_drop, now)
        return None

    def _hold(
        self, name: str, verdict: Verdict, state: dict[str, Any] | None, now: int
    ) -> list[dict[str, object]]:
        metrics.FEED_HELD.labels(name).set(1)
        if name in self.holds:
            return []
        reason = verdict.reason(self.max_drop)
        since = state["held_since"] if state and state.get("held_since") else now
        self.holds[name] = (since, reason)
        log.error("feed %s held: %s", name, reason)
        return [{"feed": name, "held_since": since, "hold_reason": reason}]

    def render(self, name: str, fmt: str) -> Rendered | None:
        """Render another format of the current build (CSV, JSON) once, on first request."""
        entry = self.entries.get(name)
        if entry is None or not self.healthy:
            return None
        if fmt not in entry.rendered:
            render, media_type = RENDERERS[fmt]
            body = render(entry.build, int(self.clock()), entry.build.allowlist)
            # Offender details (counts, times) change without the plain feed changing: these
            # formats are dated by their build, so If-Modified-Since never wrongly says 304.
            entry.rendered[fmt] = _rendered(body, etag_of(body), entry.build.built, media_type)
        return entry.rendered[fmt]


def _rendered(body: bytes, etag: str, changed: int, media_type: str) -> Rendered:
    # mtime=0: the same bytes compress to the same bytes on every replica.
    gzipped = gzip.compress(body, compresslevel=6, mtime=0)
    return Rendered(body, gzipped, etag, http_date(changed), media_type)
