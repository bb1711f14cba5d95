"""Offenders and their offenses: reads and writes inside one transaction (see ``Tx``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, delete, func, select, update

from ..models import Offender, OffenderStatus, Offense, Written
from ..net import IPNetwork, parse_address, sort_key
from ._common import (
    BIG_CHUNK,
    BY_IP,
    BY_IP_LOCKED,
    OFFENDER_COLUMNS,
    active,
    bulk_insert,
    chunks,
    first_offender_tuple,
    offender_from_row,
    offender_tuple,
)
from .schema import events, offenders, offenses

OFFENSE_COLUMNS = ("device", "vdom", "ip", "created", "expires", "source", "seen")


def _row_sort_key(row: tuple[Any, ...]) -> bytes:
    return bytes(row[1])  # OFFENDER_COLUMNS[1] is sort_key


class OffenderQueries:
    conn: Connection
    bump_version: Callable[[], int]  # ControlQueries'; declared here for the writes' stamp

    def load_offenders(self, ips: Iterable[str], *, lock: bool = False) -> dict[str, Offender]:
        """Offenders by address; with ``lock``, row-locked until the transaction ends (PostgreSQL:
        two replicas updating one offender serialise instead of losing an offense count)."""
        found: dict[str, Offender] = {}
        if lock:
            # The version row first, then offender rows: every writer locks in that order.
            self._stamp()
        query = BY_IP_LOCKED if lock else BY_IP
        # Sorted: replicas lock rows in one order, so they cannot deadlock each other.
        for chunk in chunks(sorted(set(ips)), BIG_CHUNK):
            for row in self.conn.execute(query, {"ips": chunk}):
                found[row.ip] = offender_from_row(row)
        return found

    def has_offenders(self) -> bool:
        return self.conn.execute(select(offenders.c.ip).limit(1)).first() is not None

    def get_offender(self, ip: str) -> Offender | None:
        row = self.conn.execute(select(offenders).where(offenders.c.ip == ip)).first()
        return None if row is None else offender_from_row(row)

    def insert_offenders(
        self, items: Iterable[Offender], updated: int, texts: Iterable[str] | None = None
    ) -> None:
        """Insert new offenders (``texts``: their addresses as text, if the caller has them).

        A list is put in index order first, so a large insert appends to the B-trees instead of
        scattering pages; any other iterable is streamed in the order given, a bounded number of
        rows at a time (a caller with a million sorts them itself and builds them as they go).
        """
        changed = self._stamp()
        names: Iterable[str | None] = itertools.repeat(None) if texts is None else texts
        rows: Iterable[tuple[Any, ...]] = (
            offender_tuple(o, updated, changed, text)
            for o, text in zip(items, names, strict=texts is not None)
        )
        if isinstance(items, list):
            rows = sorted(rows, key=_row_sort_key)
        bulk_insert(self.conn, offenders, OFFENDER_COLUMNS, rows)

    def insert_first_offenders(
        self, firsts: Iterable[tuple[Offense, str, int | None]], updated: int
    ) -> None:
        """Insert the offenders of addresses new to the store with one offense each, given as
        ``(offense, address text, active_until)``: first and last offense its ``created``, one
        offense, its source, device and VDOM. Each row is built as it is written, in the order
        given (a first ingest of a million sorts them by address itself)."""
        changed = self._stamp()
        rows = (first_offender_tuple(o, ip, until, updated, changed) for o, ip, until in firsts)
        bulk_insert(self.conn, offenders, OFFENDER_COLUMNS, rows)

    def update_offenders(self, items: Sequence[Offender], updated: int) -> None:
        """Rewrite the summary of existing offenders (every column but the address)."""
        if not items:
            return
        changed = self._stamp()
        columns = [c for c in OFFENDER_COLUMNS if c not in ("ip", "sort_key", "family")]
        statement = (
            update(offenders)
            .where(offenders.c.ip == bindparam("_ip"))
            .values({c: bindparam(c) for c in columns})
        )
        params = []
        for offender in items:
            values = offender_tuple(offender, updated, changed)
            row = dict(zip(OFFENDER_COLUMNS, values, strict=True))
            params.append({**{c: row[c] for c in columns}, "_ip": row["ip"]})
        self.conn.execute(statement, params)

    def iter_offenders(
        self, *, active_at: int | None = None, family: int | None = None
    ) -> Iterator[Offender]:
        """Offenders in numeric address order; with ``active_at``, only those listed and active."""
        for row in self._offender_rows(active_at, family):
            yield offender_from_row(row)

    def iter_offenders_written(self, *, active_at: int) -> Iterator[Written]:
        """:meth:`iter_offenders` of the active ones, each with when its row was last written
        (``updated``): what a STIX indicator's ``modified`` follows."""
        for row in self._offender_rows(active_at, None):
            yield offender_from_row(row), row.updated

    def _offender_rows(self, active_at: int | None, family: int | None) -> Iterator[Row[Any]]:
        query = select(offenders).order_by(offenders.c.sort_key)
        if active_at is not None:
            query = query.where(active(active_at))
        if family is not None:
            query = query.where(offenders.c.family == family)
        return iter(self.conn.execution_options(yield_per=5000).execute(query))

    def _stamp(self) -> int:
        """The store version this transaction's writes carry (claimed once per transaction)."""
        return self.bump_version()

    def count_offenders(self, *, active_at: int | None = None) -> int:
        query = select(func.count()).select_from(offenders)
        if active_at is not None:
            query = query.where(active(active_at))
        return int(self.conn.execute(query).scalar_one())

    def known_offenses(
        self, device: str, vdoms: Iterable[str], min_created: int
    ) -> set[tuple[str, str, int]]:
        """``(vdom, ip, created)`` of the device's offenses since ``min_created``.

        Bounded by what the device lists now (its oldest listed entry), not by the whole history;
        the unique index ``(device, vdom, created, ip)`` answers it.
        """
        query = select(offenses.c.vdom, offenses.c.ip, offenses.c.created).where(
            offenses.c.device == device,
            offenses.c.vdom.in_(sorted(set(vdoms))),
            offenses.c.created >= min_created,
        )
        return {(r.vdom, r.ip, r.created) for r in self.conn.execute(query)}

    def insert_offenses(self, items: Iterable[tuple[Offense, str]], seen: int) -> None:
        """Insert offenses, each given with its address text (computed once by the caller);
        streamed a bounded number of rows at a time."""
        rows = ((o.device, o.vdom, ip, o.created, o.expires, o.source, seen) for o, ip in items)
        bulk_insert(self.conn, offenses, OFFENSE_COLUMNS, rows)

    def offenses_of(self, ip: str) -> list[Offense]:
        query = (
            select(offenses).where(offenses.c.ip == ip).order_by(offenses.c.created, offenses.c.id)
        )
        return [
            Offense(r.device, r.vdom, parse_address(r.ip), r.created, r.expires, r.source)
            for r in self.conn.execute(query)
        ]

    def count_offenses(self) -> int:
        return int(self.conn.execute(select(func.count()).select_from(offenses)).scalar_one())

    def set_offender_status(self, ip: str, status: OffenderStatus, now: int) -> bool:
        query = (
            update(offenders)
            .where(offenders.c.ip == ip)
            .values(status=status.value, updated=now, changed=self._stamp())
        )
        return self.conn.execute(query).rowcount > 0

    def offenders_expired_between(self, start: int, end: int) -> list[tuple[str, int]]:
        """(ip, active_until) of listed offenders whose active_until falls in (start, end]."""
        query = (
            select(offenders.c.ip, offenders.c.active_until)
            .where(offenders.c.active_until > start, offenders.c.active_until <= end)
            .order_by(offenders.c.active_until)
        )
        return [(r.ip, r.active_until) for r in self.conn.execute(query)]

    def count_expired_between(self, start: int, end: int) -> int:
        query = (
            select(func.count())
            .select_from(offenders)
            .where(offenders.c.active_until > start, offenders.c.active_until <= end)
        )
        return int(self.conn.execute(query).scalar_one())

    def prune_history(self, before: int) -> tuple[int, int]:
        """Delete offenses and events older than ``before``; returns (offenses, events) deleted.

        Offender rows keep their summary (first/last offense, count), so history can be trimmed
        without changing what is published or how repeat offenders escalate.
        """
        # An offense a device may still list (no expiry, or not expired yet) is kept: deleting it
        # would make the next poll count it as new.
        old_offenses = delete(offenses).where(
            offenses.c.created < before,
            offenses.c.expires.is_not(None),
            offenses.c.expires < before,
        )
        gone_offenses = self.conn.execute(old_offenses).rowcount
        gone_events = self.conn.execute(delete(events).where(events.c.time < before)).rowcount
        return gone_offenses, gone_events

    def delete_expired_offenders(self, before: int) -> list[str]:
        """Remove offenders whose active_until passed before ``before`` and have no offense left."""
        candidates = (
            self.conn.execute(
                select(offenders.c.ip).where(
                    offenders.c.active_until.is_not(None), offenders.c.active_until < before
                )
            )
            .scalars()
            .all()
        )
        removable = []
        for chunk in chunks(list(candidates)):
            still = set(
                self.conn.execute(select(offenses.c.ip).where(offenses.c.ip.in_(chunk))).scalars()
            )
            removable += [ip for ip in chunk if ip not in still]
        for chunk in chunks(removable):
            self.conn.execute(delete(offenders).where(offenders.c.ip.in_(chunk)))
        return removable

    def offenders_within(self, networks: Sequence[IPNetwork]) -> list[Offender]:
        """Every offender (any state) whose address lies in one of ``networks``."""
        found: list[Offender] = []
        for network in networks:
            low, high = sort_key(network.network_address), sort_key(network.broadcast_address)
            query = select(offenders).where(
                offenders.c.sort_key >= low, offenders.c.sort_key <= high
            )
            found += [offender_from_row(row) for row in self.conn.execute(query)]
        return found
