"""One writer per SQLite store: the sidecar lock, across real processes and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from banfeed.errors import StoreError
from banfeed.store.lock import acquire_writer_lock, lock_path

# Takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLD = """
import sys
from pathlib import Path
from banfeed.store.lock import acquire_writer_lock
lock = acquire_writer_lock(Path(sys.argv[1]))
print("locked", flush=True)
sys.stdin.read()
lock.release()
"""

# Tries once; prints the error and exits 3 if the lock is taken.
TRY = """
import sys
from pathlib import Path
from banfeed.errors import StoreError
from banfeed.store.lock import acquire_writer_lock
try:
    acquire_writer_lock(Path(sys.argv[1])).release()
except StoreError as exc:
    print(exc)
    sys.exit(3)
print("acquired")
"""

TIMEOUT = 60  # seconds: only so a broken test fails instead of hanging


def python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def attempt(db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", TRY, str(db)], capture_output=True, text=True, timeout=TIMEOUT
    )


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "banfeed.db"


@pytest.fixture
def holder(db: Path) -> Iterator[subprocess.Popen[str]]:
    """Another process holding the lock of ``db``."""
    process = python(HOLD, str(db))
    assert process.stdout is not None
    line = process.stdout.readline()
    if line != "locked\n":
        process.kill()
        _, err = process.communicate(timeout=TIMEOUT)
        pytest.fail(f"the holder did not take the lock: {line!r} {err}")
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate(timeout=TIMEOUT)


def test_second_process_is_refused_while_the_first_holds_it(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    result = attempt(db)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout.strip() == (
        f"store {db} is in use by another `banfeed run` (pid {holder.pid} on host "
        f"{socket.gethostname()}) — one daemon per SQLite store; use PostgreSQL for replicas "
        "(docs/ha.md)"
    )
    with pytest.raises(StoreError, match=rf"\(pid {holder.pid} on host "):
        acquire_writer_lock(db)


def test_lock_is_free_again_after_the_holder_is_killed(
    db: Path, holder: subprocess.Popen[str]
) -> None:
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=TIMEOUT)
    assert holder.returncode == -signal.SIGKILL
    with acquire_writer_lock(db) as lock:  # the kernel dropped the dead process's lock
        assert lock.held
        assert lock_path(db).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
        result = attempt(db)
        assert result.returncode == 3 and f"(pid {os.getpid()} on host " in result.stdout
    assert not lock.held


def test_release_then_acquire_again_in_the_same_process(db: Path) -> None:
    first = acquire_writer_lock(db)
    # A second lock in the same process is refused too: one daemon per store, even in tests.
    with pytest.raises(StoreError, match=rf"pid {os.getpid()} on host "):
        acquire_writer_lock(db)
    first.release()
    first.release()  # idempotent
    assert not first.held
    assert attempt(db).stdout.strip() == "acquired"
    second = acquire_writer_lock(db)
    try:
        assert second.held and second.path == lock_path(db)
    finally:
        second.release()


def test_lock_file_is_private_and_sits_beside_the_store(db: Path, tmp_path: Path) -> None:
    old = os.umask(0)  # the mode comes from banfeed, not from a permissive umask
    try:
        lock = acquire_writer_lock(db)
    finally:
        os.umask(old)
    with lock:
        assert lock.path == tmp_path.resolve() / "banfeed.db.lock"
        assert stat.S_IMODE(lock.path.stat().st_mode) == 0o600
    assert lock.path.exists() and lock.path.read_text() == ""  # kept, naming no one


def test_a_store_reached_by_another_path_is_the_same_store(db: Path, tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.mkdir()
    (link / "banfeed.db").symlink_to(db)
    with acquire_writer_lock(db), pytest.raises(StoreError, match="is in use"):
        acquire_writer_lock(link / "banfeed.db")


def test_lock_file_that_cannot_be_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "banfeed.db"
    with pytest.raises(StoreError) as caught:
        acquire_writer_lock(missing)
    assert str(caught.value) == (
        f"store {missing}: cannot open its lock file {lock_path(missing)}: No such file or "
        "directory — the folder must be writable by the user running banfeed"
    )
