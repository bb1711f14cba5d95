"""The durable store: the one storage surface of banfeed.

``Store`` opens SQLite or PostgreSQL; ``store.read()`` and ``store.write()`` yield a ``Tx``
whose typed methods take and return records of ``banfeed.models``. Nothing outside this package
imports SQLAlchemy (tests/test_architecture.py enforces it); nothing outside ``engine`` knows
which database it is.
"""

from ._columns import FOREVER, OffenderColumns, Snapshot
from ._filters import OffenderWhere
from .engine import Store, open_store
from .tx import Tx

__all__ = ["FOREVER", "OffenderColumns", "OffenderWhere", "Snapshot", "Store", "Tx", "open_store"]
