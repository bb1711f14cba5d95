"""SQLite engines: the file opened per the store's mode, its pragmas, the pool, and SQLite's
failures said as what to do (``Store`` in ``engine`` is the rest)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.pool import ConnectionPoolEntry, NullPool, QueuePool

from ..errors import SchemaError, StoreBusyError, StoreError

# How long a SQLite write waits for another process's write lock before StoreBusyError (which
# the collector retries: see Collector._write). Read when a connection is opened.
SQLITE_BUSY_TIMEOUT_MS = 30_000
# A new SQLite store (and its -wal and -shm files, which SQLite creates with the store's mode):
# readable by its owner's group, for read-only commands run by operators; nothing for others.
# It holds dashboard password hashes and device status. A stricter umask narrows it further.
STORE_FILE_MODE = 0o640


def sqlite_engine(database: str, create: bool, read_only: bool) -> Engine:
    if not database or database == ":memory:":
        raise StoreError("an in-memory SQLite store keeps nothing: give a file path")
    folder = Path(database).parent
    if not folder.is_dir():
        raise StoreError(
            f"store {database}: folder {folder} does not exist — create it or fix [store] url"
        )
    # Open existing stores read-write without creating: a missing file is an error (503 for
    # feeds), not a silently empty store.
    mode = "rwc" if create else "ro" if read_only else "rw"
    path = Path(database)
    if create:
        _create_private(path)
    url = f"sqlite:///file:{quote(database)}?mode={mode}&uri=true"
    if read_only:  # short-lived commands; whether to read unlocked is decided at each open
        engine = create_engine(url, poolclass=NullPool)
        event.listen(engine, "do_connect", _immutable_when_unlockable)
    else:
        # Connections are kept for the next transaction (opening the file and its pragmas were
        # two fifths of a dashboard search's CPU), but only while the path still names the file
        # they opened: a store restored or moved on disk is opened anew at once.
        engine = create_engine(url, poolclass=QueuePool, pool_size=5, max_overflow=10)

        @event.listens_for(engine, "checkout")
        def _same_file(_dbapi: Any, record: ConnectionPoolEntry, _proxy: Any) -> None:
            if record.info.get(_OPENED) != _identity(path):
                raise DisconnectionError(f"{path} is not the file this connection opened")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
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
        record.info[_OPENED] = _identity(path)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        write = connection.info.get("banfeed_write", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    return engine


_OPENED = "banfeed_opened"  # pool record info: the file's identity when it was opened


def _identity(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _create_private(path: Path) -> None:
    """Create an empty store file (a valid empty SQLite database) with STORE_FILE_MODE, before
    SQLite would create it with 0644. An existing file keeps the mode its owner gave it."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, STORE_FILE_MODE))
    except OSError:
        pass  # exists, or cannot be created: SQLite's open says which, in _sqlite_problem's words


# -- SQLite's failures, said as what to do ------------------------------------------------------

UNLOCKED = "banfeed_unlocked"  # connection info: opened immutable, read without locks


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
        record.info[UNLOCKED] = True


def file_state(path: Path | None) -> tuple[int, int, int] | None:
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


def sqlite_problem(
    path: Path, exc: SQLAlchemyError, *, write: bool
) -> tuple[type[StoreError], str] | None:
    """What a SQLite failure means for the operator, or None when it is nothing of ours."""
    name = str(getattr(getattr(exc, "orig", None), "sqlite_errorname", ""))
    folder = path.parent
    if name.startswith(_DAMAGED):
        return StoreError, (
            f"the file is damaged ({first_line(exc)}) — stop banfeed, keep a copy of it, "
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


def first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
