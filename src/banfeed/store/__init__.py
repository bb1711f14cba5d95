"""The durable store: SQLAlchemy Core tables, engines for SQLite and PostgreSQL, queries.

Nothing here knows HTTP or policy; nothing outside ``engine`` knows which database it is.
"""

from .engine import Store, open_store

__all__ = ["Store", "open_store"]
