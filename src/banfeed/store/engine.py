"""Engines and transactions: the only module that knows SQLite from PostgreSQL.

SQLite runs in WAL mode (readers never block the writer) with ``BEGIN IMMEDIATE`` for write
transactions, so two writers (``banfeed run`` and a cron ``collect``) queue on the busy timeout
instead of failing half-way. A read-only store (``read_only=True``: ``list``, ``show``…) opens
the file with ``mode=ro``, so a user who may read the store but not write it can still use
them. Every SQLAlchemy error leaving this module is a ``StoreError`` whose message says what to
do: a missing driver, a permission, a damaged file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Connection, Engine, Table, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from ..errors import ConflictError, SchemaError, StoreBusyError, StoreError
from ._common import bulk_insert
from .tx import Tx

__all__ = ["Store", "bulk_insert", "open_store"]

# How long a SQLite write waits for another process's write lock before StoreBusyError (which
# the collector retries: see Collector._write). Read at each connection.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A new SQLite store (and its -wal and -shm files, which SQLite creates with the store's mode):
# readable by its owner's group, for read-only commands run by operators; nothing for others.
# It holds dashboard password hashes and device status. A stricter umask narrows it further.
STORE_FILE_MODE = 0o640
# The newest migration: what every command but `db upgrade` requires. A test checks that it is
# the head of store/migrations, so adding a migration without changing it fails.
SCHEMA_HEAD = "0008"


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
            self.engine = self._sqlite_engine(parsed.database or "", create, self.read_only)
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

    @staticmethod
    def _sqlite_engine(database: str, create: bool, read_only: bool) -> Engine:
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
        mode = "rwc" if create else "ro" if read_only else "rw"
        if create:
            _create_private(Path(database))
        engine = create_engine(
            f"sqlite:///file:{quote(database)}?mode={mode}&uri=true", poolclass=NullPool
        )

        if read_only:
            event.listen(engine, "do_connect", _immutable_when_unlockable)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
            # Take transaction control from the driver so BEGIN IMMEDIATE can be issued.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            if not read_only:  # WAL is a property of the file: the writers set it
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
                unlocked = self.path if connection.info.get(_UNLOCKED) else None
                before = _file_state(unlocked)
                yield connection
                if unlocked is not None and _file_state(unlocked) != before:
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
            return ConflictError(f"{where}conflict: {_first_line(exc)}")
        if self.path is not None:
            problem = _sqlite_problem(self.path, exc, write=not self.read_only)
            if problem is not None:
                kind, message = problem
                return kind(f"{where}{message}")
        return StoreError(f"{where}{_first_line(exc)}")

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


def _create_private(path: Path) -> None:
    """Create an empty store file (a valid empty SQLite database) with STORE_FILE_MODE, before
    SQLite would create it with 0644. An existing file keeps the mode its owner gave it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STORE_FILE_MODE))
    except OSError:
        pass  # exists, or cannot be created: SQLite's open says which, in _sqlite_problem's words


def _pg_retryable(exc: SQLAlchemyError) -> bool:
    # serialization_failure and deadlock_detected: PostgreSQL asks for a retry
    return getattr(getattr(exc, "orig", None), "sqlstate", None) in ("40001", "40P01")


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


# -- SQLite's failures, said as what to do ------------------------------------------------------

_UNLOCKED = "banfeed_unlocked"  # connection info: opened immutable, read without locks


def _immutable_when_unlockable(
    _dialect: Any, record: ConnectionPoolEntry, cargs: list[Any], _cparams: dict[str, Any]
) -> None:
    """A reader who may not write the store's folder cannot create the ``-shm`` lock file a
    WAL store needs, and SQLite then refuses even ``mode=ro``. With no ``-wal`` file (every
    writer closed, all is in the main file) the file is read as ``immutable``: without locks,
    and ``raw_read`` checks that no writer changed the file during the read."""
    database = cargs[0].removeprefix("file:").partition("?")[0]
    path = Path(unquote(database))
    wal = path.with_name(path.name + "-wal")
    if path.exists() and not wal.exists() and not os.access(path.parent, os.W_OK):
        cargs[0] = cargs[0].replace("mode=ro", "mode=ro&immutable=1", 1)
        record.info[_UNLOCKED] = True


def _file_state(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


_DAMAGED = ("SQLITE_NOTADB", "SQLITE_CORRUPT")
_BUSY = ("SQLITE_BUSY", "SQLITE_LOCKED")
_DENIED = ("SQLITE_READONLY", "SQLITE_CANTOPEN", "SQLITE_PERM", "SQLITE_AUTH")


def _sqlite_problem(
    path: Path, exc: SQLAlchemyError, *, write: bool
) -> tuple[type[StoreError], str] | None:
    """What a SQLite failure means for the operator, or None when it is nothing of ours."""
    name = str(getattr(getattr(exc, "orig", None), "sqlite_errorname", ""))
    folder = path.parent
    if name.startswith(_DAMAGED):
        return StoreError, (
            f"the file is damaged ({_first_line(exc)}) — stop banfeed, keep a copy of it, "
            f"then try `banfeed db backup NEW.db` to save what can still be read, restore your "
            f"latest backup, or salvage it with `sqlite3 {path} .recover | sqlite3 NEW.db`, "
            "and point [store] url at the result"
        )
    if name.startswith(_BUSY):
        return StoreBusyError, (
            f"busy: another process (a `banfeed collect`, `import` or `db backup`?) has held "
            f"the store's write lock for over {SQLITE_BUSY_TIMEOUT_MS / 1000:g} s — nothing was "
            "written; run the command again when it is done"
        )
    # A full disk is SQLITE_FULL when a write fails, SQLITE_IOERR when the -shm index cannot
    # grow (a full tmpfs): an I/O error with (almost) no free space left is the same thing.
    if name.startswith("SQLITE_FULL") or (name.startswith("SQLITE_IOERR") and _full(folder)):
        return StoreError, (
            f"the disk holding {folder} is full ({_free(folder)} free) — nothing of this "
            "transaction was written and the store is intact; free space and run it again"
        )
    if _read_only_mount(folder) and (write or not path.exists()):
        return StoreError, (
            f"the file system holding {folder} is mounted read-only — nothing was written and "
            "the store is intact; remount it read-write (or move [store] url) and run it again"
        )
    if not path.exists():
        if not os.access(folder, os.W_OK):
            return StoreError, (
                f"permission denied: cannot create {path} — this user cannot write {folder}; "
                "run banfeed as the user that owns it, or fix [store] url"
            )
        return SchemaError, (
            "no such file — run `banfeed init` or `banfeed db upgrade` to create it, "
            "or fix [store] url"
        )
    if not name.startswith(_DENIED):
        return None
    if not os.access(path, os.R_OK):
        return StoreError, (
            f"permission denied: this user cannot read {path} — run banfeed as its owner or "
            "give this user read access"
        )
    if write and not (os.access(path, os.W_OK) and os.access(folder, os.W_OK)):
        return StoreError, (
            f"permission denied: this user cannot write {path} or create files in {folder} "
            "(SQLite needs both) — run this command as the store's owner; `list`, `show`, "
            "`feeds` and the other read-only commands need read access only"
        )
    return None


def _read_only_mount(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _full(folder: Path) -> bool:
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 1024 * 1024


def _free(folder: Path) -> str:
    try:
        st = os.statvfs(folder)
    except OSError:
        return "unknown space"
    return f"{st.f_bavail * st.f_frsize / 1024 / 1024:.1f} MiB"
