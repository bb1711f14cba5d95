"""Engines and transactions: the only module that knows SQLite from PostgreSQL.

SQLite runs in WAL mode (readers never block the writer) with ``BEGIN IMMEDIATE`` for write
transactions, so two writers (``banfeed run`` and a cron ``collect``) queue on the busy timeout
instead of failing half-way. Every SQLAlchemy error leaving this module is a ``StoreError``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from ..errors import ConflictError, SchemaError, StoreError
from ._common import bulk_insert
from .tx import Tx

__all__ = ["Store", "bulk_insert", "open_store"]

SQLITE_BUSY_TIMEOUT_MS = 30_000
# The newest migration: what every command but `db upgrade` requires. A test checks that it is
# the head of store/migrations, so adding a migration without changing it fails.
SCHEMA_HEAD = "0007"


class Store:
    """A database holding banfeed's state, reached through short transactions."""

    def __init__(self, url: str, *, create: bool = False) -> None:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise StoreError(f"store URL {url!r} is not valid: {exc}") from None
        self.dialect = parsed.get_backend_name()
        self.display_url = parsed.render_as_string(hide_password=True)
        self.path = Path(parsed.database) if self.dialect == "sqlite" and parsed.database else None
        if self.dialect == "sqlite":
            self.engine = self._sqlite_engine(parsed.database or "", create)
        elif self.dialect == "postgresql":
            self.engine = create_engine(
                parsed.set(drivername="postgresql+psycopg"), pool_pre_ping=True
            )
        else:
            raise StoreError(f"store URL {self.display_url}: unsupported database {self.dialect}")

    @staticmethod
    def _sqlite_engine(database: str, create: bool) -> Engine:
        if not database or database == ":memory:":
            raise StoreError("an in-memory SQLite store keeps nothing: give a file path")
        folder = Path(database).parent
        if not folder.is_dir():
            raise StoreError(
                f"store {database}: folder {folder} does not exist — create it or fix [store] url"
            )
        # Open existing stores read-write without creating: a missing file is an error (503 for
        # feeds), not a silently empty store. No pool: each transaction opens the file anew, so
        # a store restored or moved on disk is seen at once.
        mode = "rwc" if create else "rw"
        engine = create_engine(
            f"sqlite:///file:{quote(database)}?mode={mode}&uri=true", poolclass=NullPool
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take transaction control from the driver so BEGIN IMMEDIATE can be issued.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            # 64 MiB of page cache: a large ingest updates indexes in random order, and the
            # default 2 MiB makes every insert a disk read.
            cursor.execute("PRAGMA cache_size=-65536")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            write = connection.info.get("banfeed_write", False)
            connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine

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
                yield connection
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

    def _error(self, exc: SQLAlchemyError) -> StoreError:
        if isinstance(exc, IntegrityError) or _pg_retryable(exc):
            return ConflictError(f"store {self.display_url}: conflict: {_first_line(exc)}")
        if self.path is not None and not self.path.exists():
            return SchemaError(
                f"store {self.display_url}: no such file — run `banfeed init` or "
                "`banfeed db upgrade` to create it, or fix [store] url"
            )
        return StoreError(f"store {self.display_url}: {_first_line(exc)}")

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
            raise StoreError(
                f"store {self.display_url}: upgrade failed: {_first_line(exc)}"
            ) from exc
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


def open_store(url: str, *, create: bool = False) -> Store:
    """Open a store; with ``create`` bring its schema up to date, else insist it is."""
    store = Store(url, create=create)
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


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
