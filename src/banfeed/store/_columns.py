"""The narrow offender rows feed builds read: columns, not records (``publish/active.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import BigInteger, Connection, cast, delete, func, literal, select

from ..models import OffenderStatus
from ._common import active, driver_rows
from .schema import active_snapshots, offenders

FOREVER = 2**63 - 1  # ``active_until`` of an offender without expiry, as the columns hold it

# (sort_key, last_offense, offense_count, active_until or FOREVER, origin, listed): ``origin`` is
# the JSON texts of sources, devices and VDOMs joined by a newline (JSON escapes newlines), one
# string a row that a fleet repeats, decoded once per distinct value.
OffenderColumns = tuple[bytes, int, int, int, str, Any]
_NARROW = (
    offenders.c.sort_key,
    offenders.c.last_offense,
    offenders.c.offense_count,
    func.coalesce(offenders.c.active_until, cast(literal(FOREVER), BigInteger)),
    offenders.c.sources + "\n" + offenders.c.devices + "\n" + offenders.c.vdoms,
    offenders.c.status == OffenderStatus.LISTED.value,
)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """An active set a full read found (``ActiveSet.to_bytes``), and when."""

    version: int
    rows: int
    created: int
    body: bytes | None  # None when read without it


class ColumnQueries:
    conn: Connection

    def latest_snapshot(self, *, with_body: bool = True) -> Snapshot | None:
        """The saved active set; without its body (tens of MB for a million offenders) to see
        whether it is worth reading."""
        columns = [active_snapshots.c.version, active_snapshots.c.rows, active_snapshots.c.created]
        if with_body:
            columns.append(active_snapshots.c.body)
        query = select(*columns).order_by(active_snapshots.c.id.desc()).limit(1)
        row = self.conn.execute(query).first()
        if row is None:
            return None
        return Snapshot(row[0], row[1], row[2], bytes(row[3]) if with_body else None)

    def save_snapshot(self, snapshot: Snapshot) -> None:
        """Keep ``snapshot`` as the only one (older ones are replaced)."""
        self.conn.execute(delete(active_snapshots))
        self.conn.execute(
            active_snapshots.insert().values(
                version=snapshot.version,
                rows=snapshot.rows,
                created=snapshot.created,
                body=snapshot.body,
            )
        )

    def offender_columns(
        self, *, active_at: int | None = None, changed_after: int | None = None
    ) -> Iterator[list[OffenderColumns]]:
        """Narrow rows in chunks, by address (IPv4 first): with ``active_at``, the offenders
        listed and active then (a full read); with ``changed_after``, every row a write stamped
        with a later store version, in any state (what keeps an in-memory active set in step).
        The driver's tuples as they come: no record, no SQLAlchemy Row per offender."""
        query = select(*_NARROW)
        if active_at is not None:
            query = query.where(active(active_at))
        if changed_after is None:
            yield from driver_rows(self.conn, query.order_by(offenders.c.sort_key))
            return
        # Few rows, found by the index on ``changed``; ordered here, since ORDER BY would make
        # the database walk the sort-key index over every row instead.
        found = [
            row
            for part in driver_rows(self.conn, query.where(offenders.c.changed > changed_after))
            for row in part
        ]
        found.sort(key=lambda row: bytes(row[0]))
        yield found
