"""Counts over time of the dashboard's overview (see ``Tx``): offenses, first offenses and
expiries per time bucket, and the causes, devices and VDOMs of the offenses in a range.

Every count is one ``GROUP BY`` in the database, so a million offenders cost the database's scan,
never a million rows sent to Python. Buckets are ``[start + i * step, start + (i + 1) * step)``:
a time on a bucket's edge belongs to the bucket it starts. The bucket number is computed in a
subquery and grouped outside it, so PostgreSQL sees one expression (its ``GROUP BY`` would not
match a select list expression carrying bound parameters of its own).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, func, select

from ..models import OffenderStatus
from .schema import offenders, offenses


@dataclass(frozen=True, slots=True)
class OffenseCounts:
    """The offenses created in ``[start, start + step * len(per_bucket))``: how many in each
    bucket, and how many of them each cause, device and ``device/vdom`` has."""

    per_bucket: list[int]
    by_source: Counter[str] = field(default_factory=Counter)
    by_device: Counter[str] = field(default_factory=Counter)
    by_vdom: Counter[str] = field(default_factory=Counter)


def _per_bucket(
    conn: Connection, column: Any, start: int, step: int, count: int, *where: Any
) -> list[int]:
    end = start + step * count
    inner = (
        select(((column - start) // step).label("bucket"))
        .where(column >= start, column < end, *where)
        .subquery()
    )
    query = select(inner.c.bucket, func.count()).group_by(inner.c.bucket)
    found = [0] * count
    for bucket, n in conn.execute(query):
        found[int(bucket)] = int(n)
    return found


class StatsQueries:
    conn: Connection

    def offense_counts(self, start: int, step: int, count: int) -> OffenseCounts:
        """Offenses by the time the device quarantined the address (``created``), per bucket,
        cause, device and VDOM: one scan of the offenses in the range."""
        end = start + step * count
        col = offenses.c
        inner = (
            select(
                ((col.created - start) // step).label("bucket"),
                col.source,
                col.device,
                col.vdom,
            )
            .where(col.created >= start, col.created < end)
            .subquery()
        )
        keys = (inner.c.bucket, inner.c.source, inner.c.device, inner.c.vdom)
        query = select(*keys, func.count()).group_by(*keys)
        found = OffenseCounts([0] * count)
        for bucket, source, device, vdom, n in self.conn.execute(query):
            found.per_bucket[int(bucket)] += n
            found.by_source[source] += n
            found.by_device[device] += n
            found.by_vdom[f"{device}/{vdom}"] += n
        return found

    def first_offenses_per_bucket(self, start: int, step: int, count: int) -> list[int]:
        """New offenders: offenders whose first offense falls in each bucket."""
        return _per_bucket(self.conn, offenders.c.first_offense, start, step, count)

    def expiries_per_bucket(self, start: int, step: int, count: int, now: int) -> list[int]:
        """Listed offenders whose ``active_until`` fell in each bucket, up to ``now``: those that
        aged out of the feeds then (an offender that offended again since has a later one, and an
        unbanned one left the feeds by the operator's hand, not by age)."""
        return _per_bucket(
            self.conn,
            offenders.c.active_until,
            start,
            step,
            count,
            offenders.c.active_until <= now,
            offenders.c.status == OffenderStatus.LISTED.value,
        )
