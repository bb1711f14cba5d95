"""Process and store faults, made to happen: SIGKILL of `collect` mid-write and of `export`
mid-file, a SQLite write lock held past the busy timeout by another process, a full and a
read-only file system (a real 2 MiB tmpfs), and the modes of the files banfeed creates.

Real `banfeed` processes, a real simulator on 127.0.0.1, real SQLite files. The long version
of the kill loop (20 kills at random points of a 100,000-entry ingest) is bench/kill_collect.py.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from banfeed import collector as collector_mod
from banfeed import compose, simulator
from banfeed import config as config_mod
from banfeed.errors import StoreBusyError
from banfeed.publish.render import UNLOCKED_TEMP_AGE, write_atomically
from banfeed.store import _sqlite as sqlite_module
from banfeed.store import open_store
from conftest import cli, wait_for, write_config

TOKEN = "faults-token-0123456789"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """One simulated FortiGate recording what it served, a config, an initialised store."""
    fleet = simulator.SimFleet(seed=11)
    device = fleet.add_device("fw", token=TOKEN, vdoms=["root"])
    device.ledger = set()
    sim = simulator.start(fleet)
    monkeypatch.setenv("FAULTS_TOKEN", TOKEN)
    db = tmp_path / "banfeed.db"
    body = (
        f'[[fortigates]]\nname = "fw"\nurl = "{sim.urls["fw"]}"\n'
        'token_env = "FAULTS_TOKEN"\ntimeout = "60s"\n'
    )
    path = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}", body)
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    yield {"device": device, "config": path, "db": db, "sim": sim, "tmp": tmp_path}
    sim.stop()


def banfeed(config: Path, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "banfeed", "--config", str(config), *args],
        env={**os.environ, "FAULTS_TOKEN": TOKEN},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stored(db: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT vdom, ip, created FROM offenses").fetchall()


def integrity(db: Path) -> str:
    with sqlite3.connect(db) as conn:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])


def write_locked(db: Path) -> bool:
    """Whether another process holds the store's write lock (this one takes it for an instant
    otherwise, which a writer's busy timeout absorbs)."""
    conn = sqlite3.connect(db, isolation_level=None, timeout=0)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as exc:
        assert "locked" in str(exc)
        return True
    finally:
        conn.close()


def served(device: simulator.SimDevice) -> set[tuple[str, str, int]]:
    return set(device.ledger or ())


# -- SIGKILL ------------------------------------------------------------------------------------


def test_sigkill_mid_ingest_write_loses_and_duplicates_nothing(site: dict[str, Any]) -> None:
    device, db = site["device"], site["db"]
    device.populate("root", 300, ttl=None)
    assert cli("--config", str(site["config"]), "collect").exit_code == 0
    assert len(stored(db)) == 300
    device.populate("root", 8_000, ttl=None)
    proc = banfeed(site["config"], "collect")
    # Killed inside its one write transaction: the moment it holds the store's write lock.
    wait_for(lambda: write_locked(db), 60, "the ingest's write")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert integrity(db) == "ok"
    assert len(stored(db)) == 300  # the interrupted ingest rolled back whole
    result = cli("--config", str(site["config"]), "collect")
    assert result.exit_code == 0, result.output
    rows = stored(db)
    assert len(rows) == len(set(rows)) == 8_300  # none duplicated
    assert {(v, ip, int(c)) for v, ip, c in rows} == served(device)  # none lost


def test_sigkill_during_export_leaves_the_old_file_and_the_next_export_cleans_up(
    site: dict[str, Any],
) -> None:
    site["device"].populate("root", 4_000, ttl=None)
    config, out = site["config"], site["tmp"] / "www"
    out.mkdir()
    target = out / "ips.json"
    assert cli("--config", str(config), "collect").exit_code == 0
    assert (
        cli("--config", str(config), "export", "--format", "json", "-o", str(target)).exit_code == 0
    )
    old = target.read_bytes()
    assert cli("--config", str(config), "ban", "2a00:1450:4001::1").exit_code == 0
    site["device"].populate("root", 50, ttl=None)
    assert cli("--config", str(config), "collect").exit_code == 0
    proc = banfeed(config, "export", "--format", "json", "-o", str(target))
    temps = wait_for(lambda: list(out.glob(".ips.json.banfeed-*.tmp")), 60, "the temp file")
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    assert target.read_bytes() == old  # the old file, whole
    assert [p for p in temps if p.exists()]  # what a SIGKILL leaves: today's bug
    result = cli("--config", str(config), "export", "--format", "json", "-o", str(target))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["ips.json"]  # the leftover is gone
    assert target.read_bytes() != old and target.read_bytes().endswith(b"]\n")


def test_only_abandoned_temp_files_of_the_target_are_removed(tmp_path: Path) -> None:
    target = tmp_path / "ips.txt"
    abandoned = tmp_path / ".ips.txt.banfeed-dead1234.tmp"  # its writer is gone: unlocked
    abandoned.write_bytes(b"half")
    live = tmp_path / ".ips.txt.banfeed-live1234.tmp"  # a writer still holds its lock
    live.write_bytes(b"half")
    old_legacy = tmp_path / ".ips.txt.k2j4h1_x.tmp"  # an earlier banfeed's, never locked
    old_legacy.write_bytes(b"half")
    aged = time.time() - UNLOCKED_TEMP_AGE - 60
    os.utime(old_legacy, (aged, aged))
    new_legacy = tmp_path / ".ips.txt.a1b2c3d4.tmp"  # as young: perhaps being written
    new_legacy.write_bytes(b"half")
    others = [
        tmp_path / ".other.txt.banfeed-dead1234.tmp",  # another target's
        tmp_path / ".ips.txt.notbanfeeds.tmp",  # not our pattern
        tmp_path / "ips.txt.banfeed-dead1234.tmp",  # not hidden: not ours
    ]
    for path in others:
        path.write_bytes(b"keep")
    (tmp_path / ".ips.txt.banfeed-dir.tmp").mkdir()  # not a regular file
    (tmp_path / ".ips.txt.banfeed-link.tmp").symlink_to(tmp_path / "ips.txt.banfeed-dead1234.tmp")
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        write_atomically(target, b"198.51.100.7\n")
    assert target.read_bytes() == b"198.51.100.7\n"
    assert not abandoned.exists() and not old_legacy.exists()
    assert live.exists() and new_legacy.exists() and all(p.exists() for p in others)
    assert (tmp_path / ".ips.txt.banfeed-dir.tmp").is_dir()
    assert (tmp_path / ".ips.txt.banfeed-link.tmp").is_symlink()


# -- SQLite busy beyond the timeout -------------------------------------------------------------


def hold_write_lock(db: Path, seconds: float) -> subprocess.Popen[str]:
    """Another process (as a long cron `import` would) holding the store's write lock."""
    code = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "c.execute(\"INSERT INTO meta (key, value) VALUES ('held', 'yes')\")\n"
        "print('held', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(db), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def runtime(site: dict[str, Any]) -> compose.Runtime:
    cfg = config_mod.load(site["config"])
    return compose.Runtime(cfg, open_store(cfg.store_url()), time.time)


def test_a_cycle_waits_out_a_write_lock_held_past_the_busy_timeout(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_module, "SQLITE_BUSY_TIMEOUT_MS", 200)  # 30 s in production
    site["device"].populate("root", 500, ttl=None)
    rt = runtime(site)
    holder = hold_write_lock(site["db"], 1.5)  # over seven busy timeouts
    with caplog.at_level(logging.WARNING, logger="banfeed.collector"):
        report = asyncio.run(rt.collector().cycle())
    holder.communicate()
    assert holder.returncode == 0
    assert report.new_offenses == 500 and not report.failed
    waits = [r.getMessage() for r in caplog.records if "cycle write waits" in r.getMessage()]
    assert waits and "busy" in waits[0] and "polled answers kept" in waits[0]
    assert {(v, ip, int(c)) for v, ip, c in stored(site["db"])} == served(site["device"])
    with rt.store.read() as tx:  # the fetch records too: the device's status of this poll
        status = tx.device_statuses()[("fw", "root")]
    assert status.error_kind is None and status.entries == 500
    rt.store.close()


def test_past_the_wait_the_cycle_fails_cleanly_and_the_next_one_stores_everything(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "SQLITE_BUSY_TIMEOUT_MS", 200)
    monkeypatch.setattr(collector_mod, "BUSY_WAIT_SECONDS", 0.5)
    site["device"].populate("root", 200, ttl=None)
    rt = runtime(site)
    holder = hold_write_lock(site["db"], 3)
    with pytest.raises(StoreBusyError, match="busy: another process .* write lock .* nothing was"):
        asyncio.run(rt.collector().cycle())
    result = cli("--config", str(site["config"]), "ban", "2a00:1450:4001::9")
    assert result.exit_code == 1 and "busy" in result.output and "Traceback" not in result.output
    holder.communicate()
    assert holder.returncode == 0
    assert stored(site["db"]) == []
    asyncio.run(rt.collector().cycle())
    assert {(v, ip, int(c)) for v, ip, c in stored(site["db"])} == served(site["device"])
    rt.store.close()


# -- a full and a read-only file system ---------------------------------------------------------


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB file system (tmpfs): it fills up, and can be remounted read-only."""
    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if mounted.returncode != 0:  # never a skip: the failure must really happen
        pytest.fail(f"cannot mount a tmpfs (these tests run as root): {mounted.stderr.strip()}")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


def fill(folder: Path) -> Path:
    """Take every free byte of ``folder``'s file system."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def remount(folder: Path, mode: str) -> None:
    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def disk_site(site: dict[str, Any], disk: Path) -> Path:
    """The site's config with its store on ``disk``; 200 offenses stored."""
    path = site["tmp"] / "disk.toml"
    text = site["config"].read_text().replace(str(site["db"]), str(disk / "banfeed.db"))
    path.write_text(text)
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    site["device"].populate("root", 200, ttl=None)
    assert cli("--config", str(path), "collect").exit_code == 0
    return path


def test_a_full_disk_fails_collect_and_export_cleanly_and_keeps_the_data(
    site: dict[str, Any], disk: Path
) -> None:
    config, db = disk_site(site, disk), disk / "banfeed.db"
    out = disk / "www"
    out.mkdir()
    target = out / "ips.txt"
    assert cli("--config", str(config), "export", "-o", str(target)).exit_code == 0
    old = target.read_bytes()
    filler = fill(disk)
    site["device"].populate("root", 1_000, ttl=None)
    result = cli("--config", str(config), "collect")
    assert result.exit_code == 1, result.output
    assert "is full" in result.output and "store is intact" in result.output
    assert "Traceback" not in result.output
    # The export of a full disk: the store (elsewhere) can publish, the file cannot be written.
    on_disk = site["config"]
    assert cli("--config", str(on_disk), "collect").exit_code == 0
    result = cli("--config", str(on_disk), "export", "-o", str(target))
    assert result.exit_code == 1, result.output
    assert "no space left" in result.output and "previous file is unchanged" in result.output
    assert target.read_bytes() == old
    assert sorted(p.name for p in out.iterdir()) == ["ips.txt"]  # no temp file left
    filler.unlink()
    assert integrity(db) == "ok" and len(stored(db)) == 200  # as it was before the disk filled
    result = cli("--config", str(config), "collect")
    assert result.exit_code == 0, result.output
    assert {(v, ip, int(c)) for v, ip, c in stored(db)} == served(site["device"])
    assert cli("--config", str(on_disk), "export", "-o", str(target)).exit_code == 0
    assert len(target.read_bytes().splitlines()) == 1_200


def test_a_read_only_file_system_fails_writes_cleanly_and_still_serves_reads(
    site: dict[str, Any], disk: Path
) -> None:
    config, db = disk_site(site, disk), disk / "banfeed.db"
    target = disk / "ips.txt"
    assert cli("--config", str(site["config"]), "collect").exit_code == 0
    assert cli("--config", str(site["config"]), "export", "-o", str(target)).exit_code == 0
    old = target.read_bytes()
    remount(disk, "ro")
    try:
        site["device"].populate("root", 100, ttl=None)
        result = cli("--config", str(config), "collect")
        assert result.exit_code == 1, result.output
        assert "mounted read-only" in result.output and "Traceback" not in result.output
        listed = cli("--config", str(config), "list", "--format", "json")
        assert listed.exit_code == 0, listed.output  # reading needs no write
        assert len(json.loads(listed.output)) == 200
        assert cli("--config", str(site["config"]), "collect").exit_code == 0
        result = cli("--config", str(site["config"]), "export", "-o", str(target))
        assert result.exit_code == 1, result.output
        assert "read-only" in result.output and target.read_bytes() == old
    finally:
        remount(disk, "rw")
    assert integrity(db) == "ok" and len(stored(db)) == 200
    assert cli("--config", str(config), "collect").exit_code == 0
    assert {(v, ip, int(c)) for v, ip, c in stored(db)} == served(site["device"])


# -- the modes of the files banfeed creates -----------------------------------------------------


@pytest.fixture
def umask() -> Iterator[Any]:
    previous = os.umask(0o022)  # the usual one: what banfeed's own modes must not depend on
    yield os.umask
    os.umask(previous)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_store_config_backup_and_export_files_get_their_documented_modes(
    tmp_path: Path, umask: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "banfeed.toml"
    result = cli("--config", str(config), "init")
    assert result.exit_code == 0, result.output
    store = tmp_path / "banfeed.db"
    assert mode(config) == 0o640 and mode(store) == 0o640  # tokens, password hashes
    assert cli("--config", str(config), "ban", "2a00:1450:4001::5").exit_code == 0
    with sqlite3.connect(store) as conn:  # SQLite gives -wal and -shm the store's mode
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO meta (key, value) VALUES ('mode-test', 'x')")
        assert mode(tmp_path / "banfeed.db-wal") == 0o640
        assert mode(tmp_path / "banfeed.db-shm") == 0o640
        conn.execute("ROLLBACK")
    assert cli("--config", str(config), "db", "backup", str(tmp_path / "copy.db")).exit_code == 0
    assert mode(tmp_path / "copy.db") == 0o640
    feed = tmp_path / "ips.txt"
    assert cli("--config", str(config), "export", "-o", str(feed)).exit_code == 0
    assert mode(feed) == 0o644  # a web server (another user) serves it
    assert feed.read_text() == "2a00:1450:4001::5\n"
    feed.chmod(0o600)
    assert cli("--config", str(config), "export", "-o", str(feed)).exit_code == 0
    assert mode(feed) == 0o600  # the operator's mode is kept
    umask(0o077)  # a stricter umask narrows the store further, never widens it
    assert cli("--config", str(tmp_path / "other.toml"), "init").exit_code == 0
    assert mode(tmp_path / "other.toml") == 0o640  # written with an explicit mode
    assert mode(tmp_path / "banfeed.db") == 0o640  # existing: kept as it was
    other = open_store(f"sqlite:///{tmp_path / 'private.db'}", create=True)
    other.close()
    assert mode(tmp_path / "private.db") == 0o600
    existing = tmp_path / "wide.db"
    existing.touch(mode=0o644)
    existing.chmod(0o644)
    open_store(f"sqlite:///{existing}", create=True).close()
    assert mode(existing) == 0o644  # an existing file keeps the mode its owner chose


# -- PostgreSQL: a replica killed while publishing ---------------------------------------------


def test_a_process_killed_while_recording_a_feed_version_leaves_no_trace(
    tmp_path: Path, pg_url: str
) -> None:
    import sqlalchemy as sa

    config = write_config(tmp_path / "banfeed.toml", pg_url)
    victim_name = f"banfeed_victim_{os.getpid()}_{time.monotonic_ns()}"
    victim_config = write_config(
        tmp_path / "victim.toml", f"{pg_url}&application_name={victim_name}"
    )
    target = tmp_path / "ips.txt"
    assert cli("--config", str(config), "db", "upgrade").exit_code == 0
    assert cli("--config", str(config), "ban", "2a00:1450:4001::1").exit_code == 0
    assert cli("--config", str(config), "export", "-o", str(target)).exit_code == 0
    old = target.read_bytes()
    assert cli("--config", str(config), "ban", "2a00:1450:4001::2").exit_code == 0
    engine_ = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine_.connect() as holder, engine_.connect() as watcher:
            lock = holder.begin()  # the victim's INSERT of its version waits behind this lock
            holder.exec_driver_sql("LOCK TABLE feed_versions IN EXCLUSIVE MODE")
            proc = banfeed(victim_config, "export", "-o", str(target))

            def blocked() -> bool:
                row = watcher.execute(
                    sa.text(
                        "SELECT query FROM pg_stat_activity WHERE application_name = :name "
                        "AND wait_event_type = 'Lock'"
                    ),
                    {"name": victim_name},
                ).first()
                watcher.rollback()
                return row is not None and "feed_versions" in row[0]

            wait_for(blocked, 30, "the victim recording its version")
            proc.send_signal(signal.SIGKILL)  # mid-publish: its transaction open
            assert proc.wait() == -signal.SIGKILL
            lock.rollback()

            def gone() -> bool:
                count = watcher.execute(
                    sa.text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": victim_name},
                ).scalar_one()
                watcher.rollback()
                return count == 0

            wait_for(gone, 30, "PostgreSQL to end the victim's session")
            numbers = [n for (n,) in watcher.execute(sa.text("SELECT number FROM feed_versions"))]
            watcher.rollback()
        assert numbers == [1]  # its version was never recorded, not even in part
        assert target.read_bytes() == old  # and its file never written
        result = cli("--config", str(config), "export", "-o", str(target))  # a survivor
        assert result.exit_code == 0, result.output
        assert target.read_text() == "2a00:1450:4001::1\n2a00:1450:4001::2\n"
        with engine_.connect() as conn:
            assert [n for (n,) in conn.execute(sa.text("SELECT number FROM feed_versions"))] == [
                1,
                2,
            ]
    finally:
        engine_.dispose()
