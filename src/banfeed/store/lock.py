"""One writer per SQLite store: the daemon holds an exclusive lock on ``<store file>.lock``.

Two ``banfeed run`` on one SQLite file would both poll every device and both push: SQLite has
no leases (those need PostgreSQL, docs/ha.md), so the second daemon must refuse to start. The
lock is ``flock(2)`` on a sidecar file, not on the database itself: SQLite locks that file
with POSIX locks of its own, and where ``flock`` is emulated with POSIX locks (NFS) the two
would collide. The kernel releases a ``flock`` when the last descriptor of its open file
closes, so a daemon that dies — SIGKILL included — leaves no stale lock behind; the pid and
host written into the file are only there to name the holder in the message.

The file is never removed: a process unlinking it while another has it open but not yet locked
would let a third create a new file and lock that one, and two daemons would both hold "the"
lock. PostgreSQL stores take no such lock: replicas share the work through leases.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from ..errors import StoreError


def lock_path(db_path: Path) -> Path:
    """The sidecar of a store file. Resolved, so a store reached through a symlink or another
    relative path is guarded by the same lock."""
    real = db_path.resolve()
    return real.with_name(f"{real.name}.lock")


class WriterLock:
    """The exclusive lock of one SQLite store, held until :meth:`release` (or process exit)."""

    def __init__(self, db_path: Path, path: Path, fd: int) -> None:
        self.db_path = db_path
        self.path = path
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        """Unlock and close; calling it again does nothing."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Emptied while still held, so a leftover file names no one.
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)

    def __enter__(self) -> WriterLock:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"WriterLock({str(self.path)!r}, held={self.held})"


def acquire_writer_lock(db_path: Path) -> WriterLock:
    """Take the writer lock of the SQLite store at ``db_path`` without waiting.

    Raises ``StoreError`` naming the holder if another process (or another lock in this one)
    has it, or if the lock file cannot be opened."""
    path = lock_path(db_path)
    try:
        # O_CLOEXEC: a child process started by the daemon must not keep the lock alive after
        # the daemon itself has died.
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(
            f"store {db_path}: cannot open its lock file {path}: {exc.strerror} — the folder "
            "must be writable by the user running banfeed"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        raise StoreError(
            f"store {db_path} is in use by another `banfeed run` ({holder}) — one daemon per "
            "SQLite store; use PostgreSQL for replicas (docs/ha.md)"
        ) from None
    except OSError as exc:
        os.close(fd)
        raise StoreError(
            f"store {db_path}: cannot lock {path}: {exc.strerror} — keep SQLite stores on a "
            "local file system"
        ) from None
    try:
        _write_holder(fd)
    except OSError as exc:
        os.close(fd)  # closing releases the lock just taken
        raise StoreError(
            f"store {db_path}: cannot write its lock file {path}: {exc.strerror}"
        ) from None
    return WriterLock(db_path, path, fd)


def _write_holder(fd: int) -> None:
    # Written over the old text first, then cut to length: a contender reading meanwhile sees
    # either the old holder or the new one up to its newline, never an empty file.
    text = f"{os.getpid()} {socket.gethostname()}\n".encode()
    os.pwrite(fd, text, 0)
    os.ftruncate(fd, len(text))


def _holder(fd: int) -> str:
    try:
        first = os.pread(fd, 512, 0).decode("utf-8", "replace").partition("\n")[0]
    except OSError as exc:
        return f"holder unknown: {exc.strerror}"
    pid, _, host = first.partition(" ")
    if not pid.isdigit() or not host:
        return "holder not recorded yet"
    return f"pid {pid} on host {host}"
