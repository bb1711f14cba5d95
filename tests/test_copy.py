"""Moving a store between SQLite and the real PostgreSQL, and online SQLite backups."""

from __future__ import annotations

import sqlite3
import threading
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from banfeed.feeds import FeedPolicy, FeedSpec, build_feed, render_text
from banfeed.models import AllowEntry, Ban, Event, Offender, Offense
from banfeed.net import parse_network
from banfeed.policy import Allowlist
from banfeed.store import open_store
from banfeed.store import queries as q
from conftest import T0, cli

POLICY = FeedPolicy(Allowlist())


def filled(url: str) -> None:
    store = open_store(url, create=True)
    addresses = [IPv4Address(0x2D210000 + i) for i in range(300)] + [
        IPv6Address(0x2A001450400100000000000000000000 + i) for i in range(50)
    ]
    with store.write() as conn:
        q.insert_offenses(
            conn,
            [
                (Offense("fw", "root", a, T0 - i, None, "IPS"), str(a))
                for i, a in enumerate(addresses)
            ],
            seen=T0,
        )
        q.insert_offenders(
            conn,
            [
                q.offender_tuple(
                    Offender(a, T0, T0, 1, ("IPS",), ("fw",), ("fw/root",), None, "listed"), T0
                )
                for a in addresses
            ],
        )
        q.insert_events(conn, [Event(T0, "banned", "151.101.0.0/24", "alice", "test")])
        q.save_ban(conn, Ban(parse_network("151.101.0.0/24"), T0, None, "manual", "alice"))
        q.save_allow_entry(conn, AllowEntry(parse_network("45.33.0.0/28"), T0, None, "bob"))
        q.bump_version(conn)
    store.close()


def feed_bytes(url: str) -> bytes:
    store = open_store(url)
    with store.read() as conn:
        build = build_feed(conn, FeedSpec("f"), POLICY, T0)
    store.close()
    return render_text(build, T0, build.allowlist)


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
    with store.write() as conn:  # sequences moved past the copied ids
        q.insert_events(conn, [Event(T0, "note", None, "test", "after the copy")])
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
            with store.write() as conn:
                q.insert_events(conn, [Event(T0 + n, "note", None, "writer", str(n))])
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
