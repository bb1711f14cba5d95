"""Who fetched each feed: the last fetch of each consumer, kept in memory, then in the store.

Only authorised fetches are recorded (a refusal is counted in ``banfeed_feed_refusals_total``
instead), so a client cannot grow the store by sending new user agents to a protected feed.
An open feed is fetched by anyone: the store keeps at most ``MAX_CONSUMERS`` consumers per
feed and forgets those not seen for ``CONSUMER_MAX_AGE``; memory between two flushes is bounded
the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .. import metrics
from ..models import Consumer
from ..store import Tx

MAX_CONSUMERS = 1000  # distinct (address, user agent) kept per feed; new ones past it are not
CONSUMER_MAX_AGE = 30 * 86400  # a consumer not seen for this long is forgotten
MAX_AGENT = 200  # characters of a user agent kept (the column's width)


@dataclass
class Fetches:
    """The last fetch of each consumer (feed, address, user agent), flushed to the store."""

    pending: dict[tuple[str, str, str], dict[str, Any]] = field(default_factory=dict)
    per_feed: dict[str, int] = field(default_factory=dict)

    def record(
        self, feed: str, address: str, agent: str, etag: str | None, status: int, now: int
    ) -> None:
        key = (feed, address, agent[:MAX_AGENT])
        row = self.pending.get(key)
        if row is None:
            if self.per_feed.get(feed, 0) >= MAX_CONSUMERS:
                metrics.FEED_CONSUMERS_UNRECORDED.inc()
                return
            self.per_feed[feed] = self.per_feed.get(feed, 0) + 1
            row = self.pending[key] = {
                "feed": feed,
                "address": address,
                "user_agent": agent[:MAX_AGENT],
                "first_fetch": now,
                "requests": 0,
            }
        row.update(last_fetch=now, etag=etag, status=status)
        row["requests"] += 1

    def take(self) -> list[Consumer]:
        taken, self.pending, self.per_feed = list(self.pending.values()), {}, {}
        return [Consumer(**row) for row in taken]

    @staticmethod
    def write(tx: Tx, fetches: list[Consumer], now: int) -> None:
        """Merge ``fetches`` into the store, within the bounds above."""
        kept_out = tx.record_fetches(fetches, now=now, keep=MAX_CONSUMERS, max_age=CONSUMER_MAX_AGE)
        metrics.FEED_CONSUMERS_UNRECORDED.inc(kept_out)
