"""Reads of the dashboard and ``/api/v1``: offenders sorted and paged by keyset, and the counts
of the overview (see ``Tx``).

Paging is by keyset (the sort value and the address of the last row shown), never by a growing
OFFSET, so page 1,000 costs what page 1 does. The filters mean what they mean for `list`
(``_filters``): SQL narrows, the JSON lists are decided exactly row by row.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from ..models import Offender
from ._common import active, offender_from_row
from ._filters import ALL, OffenderWhere, narrowed
from .schema import offenders, offenses

# What offenders may be sorted by (each a NOT NULL column); the address breaks ties.
SORT_COLUMNS = ("ip", "last_offense", "first_offense", "offense_count")


def _column(name: str) -> Any:
    if name not in SORT_COLUMNS:
        raise ValueError(f"cannot sort by {name!r}")
    return offenders.c.sort_key if name == "ip" else offenders.c[name]


class SearchQueries:
    conn: Connection

    def iter_offenders_sorted(
        self,
        *,
        sort: str = "ip",
        descending: bool = False,
        after: tuple[int, bytes] | None = None,
        min_offenses: int = 1,
        where: OffenderWhere = ALL,
    ) -> Iterator[Offender]:
        """Offenders passing every filter of ``where``, ordered by ``sort`` (then the address), from
        just past ``after`` (the sort value and ``sort_key`` of the last row already shown; the
        value is ignored when sorting by address). Lazy: stop reading when the page is full."""
        column = _column(sort)
        key = offenders.c.sort_key
        order = [column.desc(), key.desc()] if descending else [column.asc(), key.asc()]
        query = select(offenders).order_by(*order[: 1 if sort == "ip" else 2])
        if after is not None:
            value, last = after

            def beyond(col: Any, v: Any) -> Any:
                return col < v if descending else col > v

            if sort == "ip":
                query = query.where(beyond(key, last))
            else:
                query = query.where(
                    or_(beyond(column, value), and_(column == value, beyond(key, last)))
                )
        if min_offenses > 1:
            query = query.where(offenders.c.offense_count >= min_offenses)
        query, checks = narrowed(query, where)
        # Rows come in batches of a page (50 shown + 1 to know there is a next): a bigger batch
        # builds rows no page shows (at 1,000,000 offenders, an eighth of a search's time).
        result = self.conn.execution_options(yield_per=64).execute(query)
        try:
            for row in result:
                offender = offender_from_row(row)
                if all(check(offender) for check in checks):
                    yield offender
        finally:
            result.close()

    def count_active_by_family(self, now: int) -> dict[int, int]:
        """Active offenders (listed, not expired) per address family: {4: n, 6: n}."""
        query = (
            select(offenders.c.family, func.count()).where(active(now)).group_by(offenders.c.family)
        )
        found = {4: 0, 6: 0}
        found.update({int(family): int(n) for family, n in self.conn.execute(query)})
        return found

    def count_offenses_seen_since(self, since: int) -> int:
        """Offenses banfeed first saw at or after ``since`` (new in the last hour, day…)."""
        query = select(func.count()).select_from(offenses).where(offenses.c.seen >= since)
        return int(self.conn.execute(query).scalar_one())
