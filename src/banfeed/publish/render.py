"""Renderings of a published feed (plain text, CSV, JSON), validators, and atomic files.

``RENDERERS`` maps a format to ``(render, media type)``: a new format is one entry. The plain
text is what a version records; CSV and JSON describe the active offenders its lines cover.
"""

from __future__ import annotations

import csv
import errno
import fcntl
import gzip
import hashlib
import io
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..errors import ExportError
from ..models import Offender
from ..net import IPAddress, IPNetwork
from ..policy import Allowlist, state, suppression_reason
from ..timeutil import iso


def text_body(lines: Sequence[IPAddress | IPNetwork] | Sequence[str]) -> bytes:
    """One address or CIDR a line, LF, no comments: what a FortiGate threat feed reads (a
    build's own lines: ``FeedBuild.text()``)."""
    return "".join(f"{line}\n" for line in lines).encode("ascii")


def etag_of(body: bytes) -> str:
    """Strong: the hash of the bytes, so it changes exactly when the bytes change and every
    replica computes the same one."""
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def compress(body: bytes) -> bytes:
    # mtime=0: the same bytes compress to the same bytes on every replica. Level 1: every new
    # version is compressed as it is published, and a million lines take 0.07 s at level 1
    # against 0.39 s at level 6, for a body 21% larger (3.15 MB against 2.60 MB).
    return gzip.compress(body, compresslevel=1, mtime=0)


def decompress(data: bytes) -> bytes:
    return gzip.decompress(data)


def offender_record(offender: Offender, now: int, allowlist: Allowlist) -> dict[str, Any]:
    """The stable JSON shape of an offender (documented in docs/cli.md)."""
    return {
        "ip": str(offender.ip),
        "family": f"ipv{offender.ip.version}",
        "first_offense": iso(offender.first_offense),
        "last_offense": iso(offender.last_offense),
        "offense_count": offender.offense_count,
        "sources": list(offender.sources),
        "devices": list(offender.devices),
        "vdoms": list(offender.vdoms),
        "active_until": iso(offender.active_until),
        "state": state(offender, now, allowlist).value,
        "suppressed_by": suppression_reason(offender.ip, allowlist),
        "note": offender.note,
    }


CSV_COLUMNS = (
    "ip",
    "family",
    "first_offense",
    "last_offense",
    "offense_count",
    "sources",
    "devices",
    "active_until",
)


# A spreadsheet runs a cell that starts with one of these as a formula (CSV injection).
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_cell(value: Any) -> str:
    """One CSV cell: empty for None, a list joined by spaces, and a cell a spreadsheet would
    run as a formula (a cause or note from outside could start with ``=``) prefixed with
    ``'``. Every CSV banfeed writes uses it, with :func:`csv_writer`."""
    if value is None:
        return ""
    text = " ".join(value) if isinstance(value, list) else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


def csv_writer(out: io.StringIO) -> Any:
    """RFC 4180: CRLF line ends, a field quoted when it holds a comma, a quote or a break."""
    return csv.writer(out, lineterminator="\r\n")


def csv_chunks(offenders: Iterable[Offender], now: int, allowlist: Allowlist) -> Iterator[str]:
    """The CSV rendering piece by piece (header, then about a thousand rows a piece), so a
    million offenders are written in bounded memory."""
    out = io.StringIO()
    writer = csv_writer(out)
    writer.writerow(CSV_COLUMNS)
    for n, offender in enumerate(offenders, 1):
        record = offender_record(offender, now, allowlist)
        writer.writerow([csv_cell(record[c]) for c in CSV_COLUMNS])
        if n % 1000 == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()


def json_chunks(offenders: Iterable[Offender], now: int, allowlist: Allowlist) -> Iterator[str]:
    """``json.dumps(records, indent=1)`` and a newline, one record a piece (bounded memory)."""
    pieces: list[str] = []
    seen = False
    for offender in offenders:
        text = json.dumps(offender_record(offender, now, allowlist), indent=1)
        pieces.append((",\n " if seen else "[\n ") + text.replace("\n", "\n "))
        seen = True
        if len(pieces) == 1000:
            yield "".join(pieces)
            pieces = []
    yield "".join(pieces) + ("\n]\n" if seen else "[]\n")


ChunkRenderer = Callable[[Iterable[Offender], int, Allowlist], Iterator[str]]
# Format -> (its rendering piece by piece, media type): a new format is one entry.
OFFENDER_RENDERERS: dict[str, tuple[ChunkRenderer, str]] = {
    "csv": (csv_chunks, "text/csv; charset=utf-8"),
    "json": (json_chunks, "application/json"),
}


def rendered_pieces(
    fmt: str, offenders: Iterable[Offender], now: int, allowlist: Allowlist
) -> Iterator[bytes]:
    """``fmt``'s rendering of ``offenders`` as UTF-8 pieces (a few hundred kB each)."""
    render = OFFENDER_RENDERERS[fmt][0]
    return (piece.encode("utf-8") for piece in render(offenders, now, allowlist))


TEXT_MEDIA_TYPE = "text/plain; charset=us-ascii"
FORMATS = ("txt", *OFFENDER_RENDERERS)


# Temp files of an atomic write: ``.<target name>.banfeed-<random>.tmp`` beside the target, each
# locked (flock) by its writer while it lives. A temp file left by a killed writer is removed by
# the next write to the same target: only names of this pattern, only regular files, and only
# when no live writer holds their lock (the kernel releases it when the writer dies).
TEMP_MARK = ".banfeed-"
# Temp names of earlier banfeed (before TEMP_MARK ; mkstemp's 8 characters, never locked): removed
# only once older than this, since a writer of that version may still be running.
UNLOCKED_TEMP_AGE = 600.0


def write_atomically(path: Path, data: bytes | Iterable[bytes], *, new_mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` (bytes, or pieces written as they come, so a large
    rendering is never whole in memory) so that a reader sees the old file or the new, never
    half.

    Temp file in the same folder, fsync, rename over the target, fsync the folder. An existing
    target keeps its mode; a new one gets ``new_mode`` (0644 by default: a web server must be
    able to read a feed file). Temp files that interrupted writes left behind are removed first
    (see ``TEMP_MARK``), which also frees their space on a full disk.
    """
    folder = path.parent
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = new_mode
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror}") from None
    fd, temp = _locked_temp(path)
    # Ages are measured against the new temp file's mtime: the clock of the file system that
    # wrote the others' (a file server's, on NFS), not this machine's.
    remove_stale_temps(path, now=os.fstat(fd).st_mtime)
    try:
        with os.fdopen(fd, "wb") as handle:
            for piece in (data,) if isinstance(data, bytes) else data:
                handle.write(piece)
            handle.flush()
            os.fsync(handle.fileno())
            os.fchmod(handle.fileno(), mode)
            os.replace(temp, path)  # still locked: no cleaner can take it meanwhile
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except BaseException as exc:  # an error, or Ctrl-C: never leave the temp file behind
        Path(temp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise ExportError(f"{path}: {_reason(exc)}") from None
        raise


def _locked_temp(path: Path) -> tuple[int, str]:
    """A new temp file for ``path``, created and locked by this process."""
    while True:
        try:
            fd, temp = tempfile.mkstemp(
                prefix=f".{path.name}{TEMP_MARK}", suffix=".tmp", dir=path.parent
            )
        except OSError as exc:
            raise ExportError(f"cannot write in {path.parent}: {_reason(exc)}") from None
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            same = os.stat(temp).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            return fd, temp
        # A cleaner took it between creation and lock (it looked abandoned): take another.
        os.close(fd)


def remove_stale_temps(path: Path, now: float) -> list[str]:
    """Remove the temp files of ``path`` whose writer is gone; the names removed. ``now``: the
    file system's time (legacy temp files are removed only when older than UNLOCKED_TEMP_AGE)."""
    prefix = f".{path.name}."
    try:
        names = [n for n in os.listdir(path.parent) if n.startswith(prefix) and n.endswith(".tmp")]
    except OSError:
        return []  # the write that follows says what is wrong with the folder
    removed = []
    for name in names:
        middle = name[len(prefix) : -len(".tmp")]
        ours = name.startswith(f".{path.name}{TEMP_MARK}")
        legacy = len(middle) == 8 and all(c in _MKSTEMP_CHARS for c in middle)
        if (ours or legacy) and _remove_if_abandoned(path.parent / name, ours, now):
            removed.append(name)
    return removed


_MKSTEMP_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_")


def _remove_if_abandoned(temp: Path, locked_only: bool, now: float) -> bool:
    try:
        fd = os.open(temp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False  # gone already, a symbolic link, or not ours to read
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return False
        if not locked_only and now - st.st_mtime < UNLOCKED_TEMP_AGE:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # a live writer holds it
        if os.stat(temp, follow_symlinks=False).st_ino != st.st_ino:
            return False
        os.unlink(temp)  # under the lock: a writer that locks it next sees it gone
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on the device — free space there; the previous file is unchanged"
    if exc.errno == errno.EROFS:
        return "the file system is mounted read-only; the previous file is unchanged"
    return exc.strerror or str(exc)
