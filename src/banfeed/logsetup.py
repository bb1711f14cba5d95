"""How `banfeed run` and `banfeed serve` log: ``[log]`` level and format, the HTTP access log,
and journald.

Text lines start with a UTC timestamp (``2026-01-10T08:00:00.123Z INFO banfeed: …``); JSON is one
object a line (``time``, ``level``, ``logger``, ``message``; an access line adds ``client``,
``method``, ``path``, ``http_version``, ``status``). When standard error is a journald stream
(systemd sets ``$JOURNAL_STREAM`` to its device and inode), lines carry no timestamp — the
journal stamps each entry itself — and start with the syslog priority (``<3>`` error, ``<4>``
warning, ``<6>`` info, ``<7>`` debug), which journald strips and keeps as the entry's priority
(``journalctl -p warning``). Every line of a traceback gets the prefix, so it stays one priority.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import os
import sys
import time
from pathlib import Path
from typing import TextIO

from .errors import ConfigError

LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
ACCESS_LOGGER = "uvicorn.access"  # uvicorn logs one record a request here
_SHOWN_AS = {ACCESS_LOGGER: "banfeed.access"}
_ACCESS_FIELDS = ("client", "method", "path", "http_version", "status")
_PRIORITY = ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4), (logging.INFO, 6))


def journald_stream(stream: TextIO) -> bool:
    """Whether ``stream`` is the journald stream systemd connected (``$JOURNAL_STREAM``)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not (device.isdigit() and inode.isdigit()):
        return False
    try:
        stat = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):  # no file behind it (a test's StringIO)
        return False
    return (stat.st_dev, stat.st_ino) == (int(device), int(inode))


def utc_time(created: float) -> str:
    """``2026-01-10T08:00:00.123Z``: ISO-8601 in UTC, to the millisecond."""
    whole = int(created)
    return (
        time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int(created % 1 * 1000):03d}Z"
    )


def priority(levelno: int) -> int:
    """The syslog priority of a logging level."""
    return next((p for level, p in _PRIORITY if levelno >= level), 7)


class _Formatter(logging.Formatter):
    def __init__(self, *, journal: bool) -> None:
        super().__init__()
        self.journal = journal

    def format(self, record: logging.LogRecord) -> str:
        text = self.render(record)
        if not self.journal:
            return text
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.splitlines() or [""])

    def render(self, record: logging.LogRecord) -> str:
        raise NotImplementedError

    def details(self, record: logging.LogRecord) -> str | None:
        parts = []
        if record.exc_info:
            parts.append(self.formatException(record.exc_info))
        if record.stack_info:
            parts.append(self.formatStack(record.stack_info))
        return "\n".join(parts) or None


class TextFormatter(_Formatter):
    def render(self, record: logging.LogRecord) -> str:
        name = _SHOWN_AS.get(record.name, record.name)
        text = f"{record.levelname} {name}: {record.getMessage()}"
        details = self.details(record)
        if details:
            text += "\n" + details
        return text if self.journal else f"{utc_time(record.created)} {text}"


class JsonFormatter(_Formatter):
    def render(self, record: logging.LogRecord) -> str:
        body: dict[str, object] = {
            "time": utc_time(record.created),
            "level": record.levelname,
            "logger": _SHOWN_AS.get(record.name, record.name),
            "message": record.getMessage(),
        }
        args = record.args
        if record.name == ACCESS_LOGGER and isinstance(args, tuple) and len(args) == 5:
            body.update(zip(_ACCESS_FIELDS, args, strict=True))
        details = self.details(record)
        if details:
            body["exception"] = details
        return json.dumps(body, ensure_ascii=False, default=str)


def formatter(fmt: str, *, journal: bool) -> logging.Formatter:
    return JsonFormatter(journal=journal) if fmt == "json" else TextFormatter(journal=journal)


class _State:
    """What :func:`configure` installed, so that a reload changes it in place."""

    handler: logging.StreamHandler[TextIO] | None = None
    floor: int | None = None  # the level -v / -vv asked for on the command line


_state = _State()


def configure(
    level: str, fmt: str, *, floor: int | None = None, stream: TextIO | None = None
) -> None:
    """Send every log record to ``stream`` (standard error) in ``fmt``, replacing the root
    handlers. ``level`` applies to banfeed's own loggers; libraries (httpx logs each request at
    info) stay at warning unless -v/-vv (``floor``) asks for more, as before."""
    stream = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt, journal=journald_stream(stream)))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    _state.handler, _state.floor = handler, floor
    _set_levels(level)


def reconfigure(level: str, fmt: str) -> bool:
    """Apply a reloaded ``[log]`` level and format; False if :func:`configure` never ran (the
    daemon embedded in another program keeps that program's logging)."""
    handler = _state.handler
    if handler is None:
        return False
    handler.setFormatter(formatter(fmt, journal=journald_stream(handler.stream)))
    _set_levels(level)
    return True


def _set_levels(level: str) -> None:
    wanted = LEVELS[level]
    floor = _state.floor
    logging.getLogger("banfeed").setLevel(wanted if floor is None else min(wanted, floor))
    others = max(wanted, logging.WARNING)
    logging.getLogger().setLevel(others if floor is None else min(others, floor))


def configure_access(access_log: bool | Path, fmt: str) -> None:
    """The HTTP access log: off (``False``), with the other logs (``True``), or appended to a
    file, reopened when logrotate moves it (``WatchedFileHandler``). Raises ConfigError when the
    file cannot be opened."""
    logger = logging.getLogger(ACCESS_LOGGER)
    for old in logger.handlers[:]:
        logger.removeHandler(old)
        old.close()
    logger.propagate = False  # uvicorn logs a request only when this logger has a handler
    if access_log is False:
        return
    handler: logging.Handler
    if access_log is True:
        stream = _state.handler.stream if _state.handler is not None else sys.stderr
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter(fmt, journal=journald_stream(stream)))
    else:
        try:
            handler = logging.handlers.WatchedFileHandler(access_log, encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"log.access_log: cannot open {access_log}: {exc.strerror} — the folder must "
                "exist and be writable by the user running banfeed"
            ) from None
        handler.setFormatter(formatter(fmt, journal=False))
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
