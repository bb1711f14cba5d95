"""Moving a store between SQLite and the real PostgreSQL, and online SQLite backups."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Table, func, insert, select

from banfeed.errors import InputError, StoreError
from banfeed.models import (
    AllowEntry,
    Ban,
    BanOrigin,
    Event,
    EventKind,
    Offender,
    OffenderStatus,
    Offense,
)
from banfeed.net import parse_network
from banfeed.policy import Allowlist
from banfeed.publish import FeedPolicy, FeedSpec
from banfeed.store import Store, open_store
from banfeed.store import copy as store_copy
from banfeed.store._common import bulk_insert
from banfeed.store.copy import RUNTIME_ONLY, SEQUENCED, TABLES, copy_store
from banfeed.store.schema import leases, metadata, pushes, replicas
from conftest import T0, build_feed, cli

POLICY = FeedPolicy(Allowlist())


def filled(url: str) -> None:
    store = open_store(url, create=True)
    addresses = [IPv4Address(0x2D210000 + i) for i in range(300)] + [
        IPv6Address(0x2A001450400100000000000000000000 + i) for i in range(50)
    ]
    with store.write() as tx:
        tx.insert_offenses(
            [
                (Offense("fw", "root", a, T0 - i, None, "IPS"), str(a))
                for i, a in enumerate(addresses)
            ],
            seen=T0,
        )
        tx.insert_offenders(
            [
                Offender(a, T0, T0, 1, ("IPS",), ("fw",), ("fw/root",), None, OffenderStatus.LISTED)
                for a in addresses
            ],
            T0,
        )
        tx.insert_events([Event(T0, EventKind.BANNED, "151.101.0.0/24", "alice", "test")])
        tx.save_ban(Ban(parse_network("151.101.0.0/24"), T0, None, BanOrigin.MANUAL, "alice"))
        tx.save_allow_entry(AllowEntry(parse_network("45.33.0.0/28"), T0, None, "bob"))
        tx.bump_version()
    store.close()


def feed_bytes(url: str) -> bytes:
    store = open_store(url)
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f"), POLICY, T0)
    store.close()
    return build.text()


def test_copy_sqlite_to_postgresql_and_back(tmp_path: Path, pg_url: str) -> None:
    first = f"sqlite:///{tmp_path / 'a.db'}"
    filled(first)
    config = tmp_path / "banfeed.toml"
    config.write_text(f'[store]\nurl = "{first}"\n')
    to_pg = cli("--config", str(config), "db", "copy", "--to", pg_url)
    assert to_pg.exit_code == 0, to_pg.output + to_pg.stderr
    assert "offenders: 350" in to_pg.output and "offenses: 350" in to_pg.output
    assert "events: 1" in to_pg.output and "bans: 1" in to_pg.output
    back = f"sqlite:///{tmp_path / 'b.db'}"
    assert cli("db", "copy", "--from", pg_url, "--to", back).exit_code == 0
    expected = feed_bytes(first)
    assert expected.count(b"\n") == 350 - 16 + 1  # the /28 allowed, the /24 banned
    assert feed_bytes(pg_url) == expected == feed_bytes(back)
    store = open_store(pg_url)
    with store.write() as tx:  # sequences moved past the copied ids
        tx.insert_events([Event(T0, EventKind.IMPORTED, None, "test", "after the copy")])
    store.close()
    again = cli("db", "copy", "--from", first, "--to", pg_url)
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_backup_while_writing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'live.db'}"
    filled(url)
    stop = threading.Event()

    def writer() -> None:
        store = open_store(url)
        n = 0
        while not stop.is_set():
            with store.write() as tx:
                tx.insert_events([Event(T0 + n, EventKind.IMPORTED, None, "writer", str(n))])
            n += 1
        store.close()

    thread = threading.Thread(target=writer)
    thread.start()
    config = tmp_path / "banfeed.toml"
    config.write_text(f'[store]\nurl = "{url}"\n')
    try:
        result = cli("--config", str(config), "db", "backup", str(tmp_path / "backup.db"))
    finally:
        stop.set()
        thread.join()
    assert result.exit_code == 0, result.output + result.stderr
    with sqlite3.connect(tmp_path / "backup.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("SELECT count(*) FROM offenders").fetchone() == (350,)
    assert feed_bytes(f"sqlite:///{tmp_path / 'backup.db'}") == feed_bytes(url)
    exists = cli("--config", str(config), "db", "backup", str(tmp_path / "backup.db"))
    assert exists.exit_code == 2


# -- every table ------------------------------------------------------------------------------


def test_copy_covers_every_table() -> None:
    names = [t.name for t in TABLES]
    assert RUNTIME_ONLY <= set(metadata.tables), "RUNTIME_ONLY names a table the schema lacks"
    assert not RUNTIME_ONLY & set(names)
    assert set(names) | RUNTIME_ONLY == set(metadata.tables)
    assert "pushes" in names
    assert names == [t.name for t in metadata.sorted_tables if t.name not in RUNTIME_ONLY]
    # Store.reset_sequences moves the sequence of `id`: a generated key named otherwise would
    # be copied and then collide with the next insert on PostgreSQL.
    generated = [t for t in TABLES if t.autoincrement_column is not None]
    assert {t.name for t in SEQUENCED} == {t.name for t in generated} >= {"offenses", "events"}


@contextmanager
def sql(url: str) -> Iterator[Connection]:
    """A plain SQLAlchemy transaction on a store: these tests write and read tables whole,
    below the store's typed API, so a table added later needs no new helper here."""
    store = open_store(url)
    try:
        with store.engine.begin() as conn:
            yield conn
    finally:
        store.close()


def synthetic_row(table: Table, n: int) -> dict[str, Any]:
    """A row of plain values for any table, unique by ``n``: tables added to the schema later
    get rows without this test knowing them. Generated ids are left to the database."""
    row: dict[str, Any] = {}
    for column in table.columns:
        if column is table.autoincrement_column:
            continue
        kind = column.type.python_type
        length = getattr(column.type, "length", None) or 64
        if kind is int:
            row[column.name] = n + 1  # fits a SmallInteger
        elif kind is bytes:
            row[column.name] = n.to_bytes(4, "big")[:length]
        else:
            row[column.name] = f"{n}-{table.name}.{column.name}"[:length]
    return row


def fill_every_table(url: str) -> None:
    """The store of `filled`, quarantines banfeed pushed, replicas and their leases, and rows in
    every table still empty after that (device status, feed state, tables added later)."""
    filled(url)
    with sql(url) as conn:
        conn.execute(
            insert(pushes),
            [
                {"device": "fw2", "ip": "45.33.0.200", "pushed": T0, "expires": T0 + 3600},
                {"device": "fw2", "ip": "2a00:1450:4001::7", "pushed": T0, "expires": T0 + 60},
            ],
        )
        conn.execute(insert(replicas).values(id="host:1", started=T0, heartbeat=T0))
        conn.execute(insert(leases).values(device="fw", vdom="root", owner="host:1", since=T0))
        for table in metadata.sorted_tables:
            if not _count(conn, table):
                conn.execute(insert(table), [synthetic_row(table, n) for n in range(3)])
        assert all(_count(conn, t) for t in metadata.sorted_tables)


def _count(conn: Connection, table: Table) -> int:
    return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def contents(url: str, tables: Sequence[Table] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    with sql(url) as conn:  # sorted in Python: the two databases order text differently
        return {t.name: sorted(map(tuple, conn.execute(select(t))), key=repr) for t in tables}


def copy(source: str, target: str) -> dict[str, int]:
    src, dst = open_store(source), Store(target, create=True)
    try:
        return copy_store(src, dst)
    finally:
        src.close()
        dst.close()


def test_copy_keeps_every_row_of_every_table(tmp_path: Path, pg_url: str) -> None:
    first = f"sqlite:///{tmp_path / 'a.db'}"
    fill_every_table(first)
    expected = contents(first)
    assert len(expected["pushes"]) == 2 and len(expected["offenses"]) == 350
    runtime = [metadata.tables[name] for name in sorted(RUNTIME_ONLY)]
    back = f"sqlite:///{tmp_path / 'b.db'}"
    for source, target in ((first, pg_url), (pg_url, back)):
        counts = copy(source, target)
        assert counts == {name: len(rows) for name, rows in expected.items()}
        assert contents(target) == expected
        assert contents(target, runtime) == {t.name: [] for t in runtime}

    with sql(pg_url) as conn:  # every generated id continues after the copied ones
        for table in SEQUENCED:
            top = conn.execute(select(func.max(table.c.id))).scalar_one()
            new = conn.execute(insert(table).values(synthetic_row(table, 99))).inserted_primary_key
            assert new is not None and new[0] > top


def test_copy_refuses_a_target_replicas_use(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    filled(source)
    open_store(target, create=True).close()
    with sql(target) as conn:
        conn.execute(insert(replicas).values(id="host:1", started=T0, heartbeat=T0))
    with pytest.raises(InputError, match=r"not empty \(replicas\): copy into a new one"):
        copy(source, target)
    left = contents(target)
    assert [name for name, rows in left.items() if rows] == ["meta"]  # nothing copied


def test_copy_that_does_not_add_up_leaves_the_target_empty(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, target = f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"
    fill_every_table(source)
    real = bulk_insert

    def lossy(conn: Connection, table: Table, columns: Sequence[str], rows: list[Any]) -> None:
        real(conn, table, columns, rows[1:] if table.name == "pushes" else rows)

    monkeypatch.setattr(store_copy, "bulk_insert", lossy)
    with pytest.raises(StoreError, match=r"row counts differ .*'pushes': \(2, 1\)"):
        copy(source, target)
    left = contents(target)
    assert [name for name, rows in left.items() if rows] == ["meta"]  # the migration's own
