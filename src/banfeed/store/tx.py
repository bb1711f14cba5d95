"""``Tx``: one transaction's typed view of the store — the only way code outside ``store/``
reads or writes. Its methods take and return records (``banfeed.models``); SQL, rows and
connections stay inside this package."""

from __future__ import annotations

from sqlalchemy import Connection

from ._abuse import AbuseQueries
from ._columns import ColumnQueries
from ._control import ControlQueries
from ._feeds import FeedQueries
from ._filters import FilterQueries
from ._offenders import OffenderQueries
from ._search import SearchQueries
from ._stats import StatsQueries
from ._tokens import TokenQueries
from ._users import UserQueries


class Tx(
    OffenderQueries,
    ColumnQueries,
    ControlQueries,
    FeedQueries,
    FilterQueries,
    SearchQueries,
    StatsQueries,
    TokenQueries,
    UserQueries,
    AbuseQueries,
):
    """Everything inside one ``with store.read()`` / ``with store.write()`` block commits
    together or not at all (a read is one consistent snapshot on both databases)."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.claimed = None
