"""Feed state, published versions and consumers (see ``Tx``)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Row, and_, delete, func, select, update

from ..models import Consumer, FeedState, FeedVersion
from ._common import update_or_insert
from .schema import feed_consumers, feed_state, feed_versions

_VERSION_META = [c for c in feed_versions.c if c.name not in ("id", "body")]


def _version(row: Row[Any], with_body: bool) -> FeedVersion:
    return FeedVersion(
        feed=row.feed,
        number=row.number,
        created=row.created,
        etag=row.etag,
        entries=row.entries,
        added=row.added,
        removed=row.removed,
        matched=row.matched,
        overflow=row.overflow,
        reason=row.reason,
        approver=row.approver,
        store_version=row.store_version,
        body=row.body if with_body else None,
    )


class FeedQueries:
    conn: Connection

    # -- state: holds, approvals, pins --------------------------------------------------------

    def feed_states(self) -> dict[str, FeedState]:
        rows = self.conn.execute(select(feed_state))
        return {r.feed: FeedState(**r._asdict()) for r in rows}

    def save_feed_state(self, state: FeedState) -> None:
        values = dataclasses.asdict(state)
        update_or_insert(self.conn, feed_state, feed_state.c.feed == state.feed, values, {})

    # -- versions -----------------------------------------------------------------------------

    def latest_version(self, feed: str, *, with_body: bool = True) -> FeedVersion | None:
        columns = [*_VERSION_META, feed_versions.c.body] if with_body else _VERSION_META
        query = (
            select(*columns)
            .where(feed_versions.c.feed == feed)
            .order_by(feed_versions.c.number.desc())
            .limit(1)
        )
        row = self.conn.execute(query).first()
        return None if row is None else _version(row, with_body)

    def feed_version(self, feed: str, number: int) -> FeedVersion | None:
        query = select(feed_versions).where(
            feed_versions.c.feed == feed, feed_versions.c.number == number
        )
        row = self.conn.execute(query).first()
        return None if row is None else _version(row, True)

    def feed_versions(self, feed: str, limit: int = 50) -> list[FeedVersion]:
        """The newest ``limit`` versions of a feed, newest first, without their bodies."""
        query = (
            select(*_VERSION_META)
            .where(feed_versions.c.feed == feed)
            .order_by(feed_versions.c.number.desc())
            .limit(limit)
        )
        return [_version(row, False) for row in self.conn.execute(query)]

    def insert_feed_version(self, version: FeedVersion) -> None:
        """Record a version; two publishers racing for one number conflict (unique key)."""
        self.conn.execute(feed_versions.insert().values(dataclasses.asdict(version)))

    def prune_feed_versions(
        self, feed: str, keep: int, keep_bodies: int, pinned: int | None
    ) -> int:
        """Keep the newest ``keep`` versions (and a pinned one), bodies of the newest
        ``keep_bodies``; returns how many versions were deleted."""
        newest = self.conn.execute(
            select(func.max(feed_versions.c.number)).where(feed_versions.c.feed == feed)
        ).scalar_one()
        if newest is None:
            return 0
        mine = feed_versions.c.feed == feed
        not_pinned = feed_versions.c.number != (pinned if pinned is not None else -1)
        gone = self.conn.execute(
            delete(feed_versions).where(mine, not_pinned, feed_versions.c.number <= newest - keep)
        ).rowcount
        self.conn.execute(
            update(feed_versions)
            .where(
                mine,
                not_pinned,
                feed_versions.c.number <= newest - keep_bodies,
                feed_versions.c.body.is_not(None),
            )
            .values(body=None)
        )
        return int(gone)

    # -- consumers ----------------------------------------------------------------------------

    def feed_consumers(self) -> list[Consumer]:
        query = select(feed_consumers).order_by(feed_consumers.c.feed, feed_consumers.c.last_fetch)
        return [Consumer(**r._asdict()) for r in self.conn.execute(query)]

    def record_fetches(
        self, fetches: Iterable[Consumer], *, now: int, keep: int, max_age: int
    ) -> int:
        """Merge in-memory fetch records (one per feed, address, user agent) into the store;
        ``requests`` of each record is the count since the last flush. Consumers not seen for
        ``max_age`` seconds are deleted first; a feed keeps at most ``keep`` consumers: a new
        one beyond that is not recorded (those already known keep being updated). Returns how
        many records were not kept."""
        self.conn.execute(delete(feed_consumers).where(feed_consumers.c.last_fetch < now - max_age))
        per_feed = select(feed_consumers.c.feed, func.count()).group_by(feed_consumers.c.feed)
        counts: dict[str, int] = {feed: int(n) for feed, n in self.conn.execute(per_feed)}
        kept_out = 0
        for fetch in fetches:
            key = and_(
                feed_consumers.c.feed == fetch.feed,
                feed_consumers.c.address == fetch.address,
                feed_consumers.c.user_agent == fetch.user_agent,
            )
            changed = self.conn.execute(
                update(feed_consumers)
                .where(key)
                .values(
                    last_fetch=fetch.last_fetch,
                    etag=fetch.etag,
                    status=fetch.status,
                    requests=feed_consumers.c.requests + fetch.requests,
                )
            ).rowcount
            if changed:
                continue
            if counts.get(fetch.feed, 0) >= keep:
                kept_out += 1
                continue
            self.conn.execute(feed_consumers.insert().values(dataclasses.asdict(fetch)))
            counts[fetch.feed] = counts.get(fetch.feed, 0) + 1
        return kept_out

    def latest_numbers(self) -> dict[str, int]:
        """The newest version number of every feed that has one (one small query)."""
        query = select(feed_versions.c.feed, func.max(feed_versions.c.number)).group_by(
            feed_versions.c.feed
        )
        return {feed: int(number) for feed, number in self.conn.execute(query)}
