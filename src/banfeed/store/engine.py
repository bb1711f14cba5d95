"""Engines and transactions: the only module that knows SQLite from PostgreSQL.

SQLite runs in WAL mode (readers never block the writer) with ``BEGIN IMMEDIATE`` for write
transactions, so two writers (``banfeed run`` and a cron ``collect``) queue on the busy timeout
instead of failing half-way. A read-only store (``read_only=True``: ``list``, ``show``…) opens
the file with ``mode=ro``, so a user who may read the store but not write it can still use
them. Every SQLAlchemy error leaving this module is a ``StoreError`` whose message says what to
do: a missing driver, a permission, a damaged file.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, create_engine, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError

from ..errors import ConflictError, SchemaError, StoreError
from ._common import bulk_insert
from ._sqlite import (
    SQLITE_BUSY_TIMEOUT_MS,
    STORE_FILE_MODE,
    UNLOCKED,
    file_state,
    first_line,
    sqlite_engine,
    sqlite_problem,
)
from .tx import Tx

__all__ = ["SQLITE_BUSY_TIMEOUT_MS", "STORE_FILE_MODE", "Store", "bulk_insert", "open_store"]

# The newest migration: what every command but `db upgrade` requires. A test checks that it is
# the head of store/migrations, so adding a migration without changing it fails.
SCHEMA_HEAD = "0011"


class Store:
    """A database holding banfeed's state, reached through short transactions."""

    def __init__(self, url: str, *, create: bool = False, read_only: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"store URL {url!r} is not valid: {exc}") from None
        self.dialect = parsed.get_backend_name()
        self.display_url = parsed.render_as_string(hide_password=True)
        self.path = Path(parsed.database) if self.dialect == "sqlite" and parsed.database else None
        self.read_only = read_only and not create
        if self.dialect == "sqlite":
            self.engine = sqlite_engine(parsed.database or "", create, self.read_only)
        elif self.dialect == "postgresql":
            try:
                self.engine = create_engine(
                    parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True
                )
            except ImportError:
                raise StoreError(
                    f"store {self.display_url}: the PostgreSQL driver (psycopg) is not "
                    "installed — pip install 'banfeed[postgresql]'"
                ) from None
        else:
            raise StoreError(f"store URL {self.display_url}: unsupported database {self.dialect}")

    @contextmanager
    def read(self) -> Iterator[Tx]:
        """A read transaction (a consistent snapshot on both databases)."""
        with self.raw_read() as connection:
            yield Tx(connection)

    @contextmanager
    def write(self) -> Iterator[Tx]:
        """One write transaction: everything inside commits together or not at all."""
        with self.raw_write() as connection:
            yield Tx(connection)

    @contextmanager
    def raw_read(self) -> Iterator[Connection]:
        """A connection in a read transaction: for modules of ``store/`` only."""
        try:
            with self.engine.connect() as connection, connection.begin():
                unlocked = self.path if connection.info.get(UNLOCKED) else None
                before = file_state(unlocked)
                yield connection
                if unlocked is not None and file_state(unlocked) != before:
                    # Read without locks (see _immutable_when_unlockable) and a writer
                    # checkpointed into the file meanwhile: what was read may be mixed.
                    raise StoreError(
                        f"store {self.display_url} changed while it was read without locks "
                        f"(this user cannot write its folder {unlocked.parent}) — run the "
                        "command again"
                    )
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    @contextmanager
    def raw_write(self) -> Iterator[Connection]:
        """A connection in a write transaction: for modules of ``store/`` only."""
        try:
            with self.engine.connect() as connection:
                connection.info["banfeed_write"] = True
                try:
                    with connection.begin():
                        yield connection
                finally:
                    connection.info["banfeed_write"] = False
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def _error(self, exc: SQLAlchemyError, doing: str = "") -> StoreError:
        where = f"store {self.display_url}: {doing}"
        if isinstance(exc, IntegrityError) or _pg_retryable(exc):
            return ConflictError(f"{where}conflict: {first_line(exc)}")
        if self.path is not None:
            problem = sqlite_problem(self.path, exc, write=not self.read_only)
            if problem is not None:
                kind, message = problem
                return kind(f"{where}{message}")
        return StoreError(f"{where}{first_line(exc)}")

    def reset_sequences(self, conn: Connection, tables: Sequence[Table]) -> None:
        """After rows were inserted with explicit ids: PostgreSQL's sequences must move past
        them (SQLite's rowids do by themselves)."""
        if self.dialect != "postgresql":
            return
        for table in tables:
            conn.exec_driver_sql(
                f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                f"coalesce((SELECT max(id) FROM {table.name}), 0) + 1, false)"
            )

    # -- schema -------------------------------------------------------------------------------

    # Alembic is imported where it is used: no command but the schema checks needs it, and it
    # costs a sixth of a second at start-up.
    def _alembic(self, connection: Connection) -> Any:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(resources.files("banfeed.store") / "migrations"))
        cfg.attributes["connection"] = connection
        return cfg

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        with self.engine.connect() as connection:
            return ScriptDirectory.from_config(self._alembic(connection)).get_current_head()

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def upgrade(self) -> tuple[str | None, str | None]:
        """Apply every pending migration; returns (revision before, revision after)."""
        from alembic import command

        before = self.current_revision()
        try:
            with self.engine.begin() as connection:
                command.upgrade(self._alembic(connection), "head")
        except SQLAlchemyError as exc:
            raise self._error(exc, "upgrade failed: ") from exc
        return before, self.current_revision()

    def schema_revision(self) -> str | None:
        """The revision in ``alembic_version``, read without Alembic (which costs a sixth of a
        second to import and parses every migration script): None when there is none."""
        try:
            with self.engine.connect() as connection:
                if not inspect(connection).has_table("alembic_version"):
                    return None
                rows = connection.execute(text("SELECT version_num FROM alembic_version"))
                return next((str(row[0]) for row in rows), None)
        except SQLAlchemyError as exc:
            raise self._error(exc) from exc

    def require_schema(self) -> None:
        current, head = self.schema_revision(), SCHEMA_HEAD
        if current is None:
            raise SchemaError(
                f"store {self.display_url} has no banfeed schema — run `banfeed init` "
                "or `banfeed db upgrade`"
            )
        if current != head:
            raise SchemaError(
                f"store {self.display_url} is at schema {current}, this banfeed needs {head} — "
                "run `banfeed db upgrade`"
            )

    def close(self) -> None:
        self.engine.dispose()


def open_store(url: str, *, create: bool = False, read_only: bool = False) -> Store:
    """Open a store; with ``create`` bring its schema up to date, else insist it is.
    ``read_only``: for commands that only read (SQLite opens the file ``mode=ro``)."""
    store = Store(url, create=create, read_only=read_only)
    try:
        if create:
            store.upgrade()
        else:
            store.require_schema()
    except BaseException:
        store.close()
        raise
    return store


def _pg_retryable(exc: SQLAlchemyError) -> bool:
    # serialization_failure and deadlock_detected: PostgreSQL asks for a retry
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("40001", "40P01")
