"""Sharing one fleet between replicas: each (device, VDOM) is polled by one replica at a time.

Every replica heartbeats in the ``replicas`` table every second. Before each cycle a replica
takes, in one transaction, its fair share — ceil(targets / live replicas) — of the ``leases``
whose owner is itself, nobody, or a replica whose heartbeat is older than ``STALE`` seconds;
beyond its share it gives leases back, so a replica that joins gets devices at once. Claims are
conditional updates (``… WHERE owner = <the owner we saw>``): two replicas racing for one
lease cannot both win, on SQLite or PostgreSQL, without any database-specific lock.

So a replica that dies (SIGKILL, host lost) stops heartbeating, and within ``STALE`` seconds
its devices are free: the next cycle of any live replica takes them — well within one interval.
Offenses are keyed by ``(device, vdom, ip, created)``, so even an overlap during a hand-over
cannot store an offense twice.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import uuid
from collections.abc import Iterable

from sqlalchemy import Connection, and_, delete, insert, select, update

from ..errors import ConflictError
from ..timeutil import Clock
from .engine import Store
from .schema import leases, replicas

log = logging.getLogger(__name__)

STALE = 10  # seconds without a heartbeat after which a replica's leases are free
FORGET = 3600  # replicas silent this long are removed from the table

Key = tuple[str, str]  # (device, VDOM selector)


def replica_id() -> str:
    return f"{socket.gethostname()[:48]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Leases:
    def __init__(self, store: Store, clock: Clock, ident: str | None = None) -> None:
        self.store = store
        self.clock = clock
        self.id = ident or replica_id()
        self.owned: set[Key] = set()

    def heartbeat(self) -> None:
        now = int(self.clock())
        with self.store.raw_write() as conn:
            key = replicas.c.id == self.id
            if conn.execute(update(replicas).where(key).values(heartbeat=now)).rowcount == 0:
                conn.execute(insert(replicas).values(id=self.id, started=now, heartbeat=now))

    def leads(self) -> bool:
        """Whether this replica speaks for the fleet (alerts on feeds, consumers and what the
        FortiGates loaded, which every replica sees alike): the live replica that started first
        (ties: the smaller id). A newcomer never takes over; when the leader dies or leaves, the
        next one leads within ``STALE`` seconds. A replica not in the table yet leads alone."""
        now = int(self.clock())
        with self.store.raw_read() as conn:
            first = conn.execute(
                select(replicas.c.id)
                .where(replicas.c.heartbeat >= now - STALE)
                .order_by(replicas.c.started, replicas.c.id)
                .limit(1)
            ).scalar()
        return first is None or first == self.id

    def leave(self) -> None:
        """Give every lease back at once (clean shutdown): no one waits for STALE."""
        with self.store.raw_write() as conn:
            conn.execute(update(leases).where(leases.c.owner == self.id).values(owner=None))
            conn.execute(delete(replicas).where(replicas.c.id == self.id))
        self.owned = set()

    def assign(self, keys: Iterable[Key]) -> set[Key]:
        """Take this replica's fair share of ``keys`` (one transaction); return what it owns."""
        wanted = sorted(set(keys))
        now = int(self.clock())
        self.heartbeat()
        self._ensure_rows(wanted, now)
        try:
            with self.store.raw_write() as conn:
                self.owned = self._assign(conn, wanted, now)
        except ConflictError as exc:  # lost a race: keep what we had, try again next cycle
            log.info("lease assignment conflicted (%s); keeping %d leases", exc, len(self.owned))
        return set(self.owned)

    def _assign(self, conn: Connection, wanted: list[Key], now: int) -> set[Key]:
        live = set(
            conn.execute(select(replicas.c.id).where(replicas.c.heartbeat >= now - STALE)).scalars()
        )
        live.add(self.id)
        conn.execute(delete(replicas).where(replicas.c.heartbeat < now - FORGET))
        rows = {(r.device, r.vdom): r.owner for r in conn.execute(select(leases))}
        share = math.ceil(len(wanted) / len(live)) if wanted else 0
        mine = [k for k in wanted if rows.get(k) == self.id]
        for device, vdom in mine[share:]:  # over my share: give back for a newcomer
            self._set_owner(conn, device, vdom, self.id, None, now)
        mine = mine[:share]
        free = [k for k in wanted if rows.get(k) is None or rows[k] not in live]
        for device, vdom in free:
            if len(mine) >= share:
                break
            if self._set_owner(conn, device, vdom, rows.get((device, vdom)), self.id, now):
                mine.append((device, vdom))
        return set(mine)

    @staticmethod
    def _set_owner(
        conn: Connection, device: str, vdom: str, seen: str | None, owner: str | None, now: int
    ) -> bool:
        condition = leases.c.owner.is_(None) if seen is None else leases.c.owner == seen
        query = (
            update(leases)
            .where(and_(leases.c.device == device, leases.c.vdom == vdom, condition))
            .values(owner=owner, since=now)
        )
        return conn.execute(query).rowcount == 1

    def _ensure_rows(self, wanted: list[Key], now: int) -> None:
        with self.store.raw_read() as conn:
            existing = {
                (r.device, r.vdom) for r in conn.execute(select(leases.c.device, leases.c.vdom))
            }
        for device, vdom in wanted:
            if (device, vdom) in existing:
                continue
            try:
                with self.store.raw_write() as conn:
                    conn.execute(
                        insert(leases).values(device=device, vdom=vdom, owner=None, since=now)
                    )
            except ConflictError:
                pass  # another replica created it first: fine


def owners(store: Store) -> dict[Key, str | None]:
    with store.raw_read() as conn:
        return {(r.device, r.vdom): r.owner for r in conn.execute(select(leases))}
