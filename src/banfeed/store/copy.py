"""Moving a whole store between databases, and online backups of SQLite stores."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import Connection, Table, delete, func, select

from ..errors import InputError, StoreError
from .engine import Store, bulk_insert
from .schema import (
    allow_entries,
    bans,
    device_status,
    events,
    feed_consumers,
    feed_state,
    meta,
    offenders,
    offenses,
)

# Everything that is the store's state; replicas and leases are runtime coordination.
TABLES: tuple[Table, ...] = (
    meta,
    offenders,
    offenses,
    events,
    allow_entries,
    bans,
    device_status,
    feed_state,
    feed_consumers,
)
CHUNK = 5000

Progress = Callable[[str, int, int], None]  # table, rows copied so far, rows in all


def copy_store(source: Store, target: Store, progress: Progress | None = None) -> dict[str, int]:
    """Copy every table; the target must be empty (its schema is created or upgraded first).
    One transaction on the target: a failed copy leaves it empty. Returns rows per table, and
    raises if any count differs afterwards."""
    source.require_schema()
    target.upgrade()
    with target.read() as conn:
        filled = [t.name for t in TABLES[1:] if _count(conn, t)]
    if filled:
        raise InputError(f"target store is not empty ({', '.join(filled)}): copy into a new one")
    counts: dict[str, int] = {}
    with source.read() as src, target.write() as dst:
        dst.execute(delete(meta))  # the migration's own meta rows are replaced by the source's
        for table in TABLES:
            total = _count(src, table)
            columns = [c.name for c in table.columns]
            done = 0
            batch: list[tuple[object, ...]] = []
            rows = src.execution_options(yield_per=CHUNK).execute(select(table))
            for row in rows:
                batch.append(tuple(row))
                if len(batch) == CHUNK:
                    bulk_insert(dst, table, columns, batch)
                    done += len(batch)
                    batch = []
                    if progress:
                        progress(table.name, done, total)
            bulk_insert(dst, table, columns, batch)
            done += len(batch)
            if progress:
                progress(table.name, done, total)
            counts[table.name] = total
        target.reset_sequences(dst, (offenses, events))
    with target.read() as conn:
        copied = {t.name: _count(conn, t) for t in TABLES}
    wrong = {name: (n, copied[name]) for name, n in counts.items() if copied[name] != n}
    if wrong:
        raise StoreError(f"copy check failed (source, target): {wrong}")
    return counts


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def backup_sqlite(store: Store, path: Path) -> int:
    """A consistent copy of a SQLite store while it is in use (SQLite's online backup API).
    Returns the size of the backup in bytes."""
    if store.dialect != "sqlite" or store.path is None:
        raise InputError(
            "db backup copies SQLite stores; back up PostgreSQL with pg_dump (see docs/ha.md)"
        )
    if path.exists():
        raise InputError(f"{path} exists; choose a new file")
    temp = path.with_name(f".{path.name}.partial")
    try:
        with sqlite3.connect(f"file:{quote(str(store.path))}?mode=ro", uri=True) as src:
            dst = sqlite3.connect(temp)
            try:
                src.backup(dst)
            finally:
                dst.close()
        temp.replace(path)
    except sqlite3.Error as exc:
        temp.unlink(missing_ok=True)
        raise StoreError(f"backup of {store.path} failed: {exc}") from None
    return path.stat().st_size
