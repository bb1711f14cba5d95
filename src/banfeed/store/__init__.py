"""The durable store: the one storage surface of banfeed.

``Store`` opens SQLite or PostgreSQL; ``store.read()`` and ``store.write()`` yield a ``Tx``
whose typed methods take and return records of ``banfeed.models``. Nothing outside this package
imports SQLAlchemy (tests/test_architecture.py enforces it); nothing outside ``engine`` knows
which database it is.
"""

from ._offenders import OffenderColumns
from .engine import Store, open_store
from .tx import Tx

__all__ = ["OffenderColumns", "Store", "Tx", "open_store"]
