"""The feed server's connections: bounded in number, in request-head size and in time.

uvicorn (with httptools) bounds none of these by itself: a request head of any size is read, a
connection that sends nothing is kept until the client goes, and connections are accepted until
the process runs out of descriptors (then every request fails with ``Too many open files``).
:func:`connection_limits` chooses a cap below the descriptor limit at start, and
:func:`guarded_protocol` gives uvicorn a protocol that

- sets ``TCP_NODELAY`` on every accepted connection (a response is written as a head and a
  body: with Nagle's algorithm the body waits for the client's delayed ACK, ~40 ms, on every
  request of a keep-alive connection after the first);
- answers ``431`` and closes when the request line and headers exceed ``max_header_size``
  (counted as they arrive, before the parser keeps them);
- answers ``408`` (or closes a connection that sent nothing) when a whole request head has not
  arrived within ``header_timeout`` of the connection or of the previous response;
- drops a connection that reads nothing of a response for ``send_timeout``;
- at the cap, makes room for a new connection by closing the one that has waited longest for its
  request head (a slow or silent client), and answers ``503`` only when every connection is busy
  with a request, so legitimate clients are served while slow ones hold connections open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .. import metrics
from ..config import ServerConfig
from ..errors import ConfigError

log = logging.getLogger("banfeed")

RESERVED_DESCRIPTORS = 64  # beside those open at start: store connections, log files, threads
RAISE_SOFT_LIMIT_TO = 65536  # the soft RLIMIT_NOFILE is raised towards the hard one, up to this
MOST_CONNECTIONS = 4096  # the automatic cap never goes higher: beyond it, use a reverse proxy
KEEP_ALIVE_SECONDS = 5  # an idle keep-alive connection is closed after it (uvicorn's default)
LISTEN_QUEUE = 2048  # connections the kernel queues for accept(): they cost no descriptor


@dataclass(frozen=True)
class ConnectionLimits:
    max_connections: int
    backlog: int  # how many connections one accept round takes (uvicorn's backlog)
    max_header_size: int
    header_timeout: float
    send_timeout: float
    descriptors: int  # the soft RLIMIT_NOFILE in effect

    def uvicorn_options(self) -> dict[str, Any]:
        """What ``uvicorn.Config`` is given for these limits. Proxy headers are off: uvicorn's
        default trusts ``X-Forwarded-For`` from loopback; banfeed reads it only from
        ``[server] trusted_proxies``, for feeds (``auth.real_client``)."""
        return {
            "http": guarded_protocol(self),
            "backlog": self.backlog,
            "proxy_headers": False,
            "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        }


def descriptor_limit() -> int:
    """The soft RLIMIT_NOFILE, first raised towards the hard limit (as nginx and systemd
    services do); a limit that cannot be raised is used as it is."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = (
        RAISE_SOFT_LIMIT_TO if hard == resource.RLIM_INFINITY else min(hard, RAISE_SOFT_LIMIT_TO)
    )
    if soft != resource.RLIM_INFINITY and soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.debug("descriptor limit raised from %d to %d", soft, target)
            soft = target
    return RAISE_SOFT_LIMIT_TO if soft == resource.RLIM_INFINITY else int(soft)


def _open_descriptors() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux: assume a few dozen
        return 32


def connection_limits(server: ServerConfig, *, polls: int = 0) -> ConnectionLimits:
    """The cap on connections, checked against the descriptor limit now; ``polls``: device
    requests in flight at once (``collect.concurrency``), each a descriptor of its own."""
    limit = descriptor_limit()
    reserved = _open_descriptors() + RESERVED_DESCRIPTORS + polls
    room = limit - reserved
    # One accept round takes up to `backlog` connections before any is looked at: keep room for
    # a few rounds beyond the cap, so accept() never meets EMFILE.
    backlog = max(8, min(64, room // 8))
    most = min(MOST_CONNECTIONS, room - 4 * backlog)
    fix = "raise it (ulimit -n, LimitNOFILE= in the systemd unit) or put a reverse proxy in front"
    if most < 8:
        raise ConfigError(
            f"server: the descriptor limit ({limit} open files) leaves too few for connections "
            f"({reserved} reserved for the store, logs and device polls); {fix}"
        )
    chosen = server.max_connections or most
    if chosen > most:
        raise ConfigError(
            f"server.max_connections: {chosen} is more than the descriptor limit allows "
            f"({limit} open files, {reserved} reserved, room for {most}); lower it, or {fix}"
        )
    log.info(
        "server: at most %d connections at once (descriptor limit %d, %d reserved%s)",
        chosen,
        limit,
        reserved,
        "" if server.max_connections else "; set server.max_connections to choose",
    )
    return ConnectionLimits(
        max_connections=chosen,
        backlog=backlog,
        max_header_size=server.max_header_size,
        header_timeout=float(server.header_timeout),
        send_timeout=float(server.send_timeout),
        descriptors=limit,
    )


class GuardedServer(uvicorn.Server):
    """uvicorn's server with the kernel's listen queue kept long: uvicorn's ``backlog`` is
    also asyncio's accept round, kept short above, and a short queue makes connecting clients
    wait for a SYN retransmission (a second) while the server is briefly busy."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        for sock in sockets or ():
            sock.listen(LISTEN_QUEUE)


class _Connections:
    """The open connections of one server, and those waiting for a request head, oldest
    first (a dict keeps insertion order)."""

    def __init__(self) -> None:
        self.open: set[GuardedProtocol] = set()
        self.waiting: dict[GuardedProtocol, None] = {}


def guarded_protocol(limits: ConnectionLimits) -> type[GuardedProtocol]:
    """A protocol class for one server: its limits and its own set of connections."""
    return type(
        "GuardedProtocol", (GuardedProtocol,), {"limits": limits, "connections_": _Connections()}
    )


def _status(code: int, reason: str, text: str) -> bytes:
    body = text.encode()
    return (
        f"HTTP/1.1 {code} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


TOO_LARGE = _status(431, "Request Header Fields Too Large", "request headers too large\n")
TIMED_OUT = _status(408, "Request Timeout", "request not received in time\n")
BUSY = _status(503, "Service Unavailable", "server busy; retry later\n").replace(
    b"connection: close", b"retry-after: 5\r\nconnection: close"
)


class GuardedProtocol(HttpToolsProtocol):
    limits: ClassVar[ConnectionLimits]
    connections_: ClassVar[_Connections]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None
        self._send_timer: asyncio.TimerHandle | None = None
        self._head_bytes = 0
        self._tail = b""  # the last bytes of the head so far: its blank line may straddle reads
        self._waiting = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        super().connection_made(transport)
        conns = self.connections_
        if len(conns.open) >= self.limits.max_connections:
            oldest = next(iter(conns.waiting), None)
            if oldest is None:  # every connection is busy with a request: this one must wait
                self._close("busy", BUSY)
                return
            oldest._close("evicted")
        conns.open.add(self)
        metrics.HTTP_CONNECTIONS.set(len(conns.open))
        self._await_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_waiting()
        if self._send_timer is not None:
            self._send_timer.cancel()
        self.connections_.open.discard(self)
        metrics.HTTP_CONNECTIONS.set(len(self.connections_.open))
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._waiting:  # count the head up to its blank line, before the parser sees it
            seen = self._tail + data
            end = seen.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = seen[-3:]
            if self._head_bytes > self.limits.max_header_size:
                self._close("header_size", TOO_LARGE)
                return
        super().data_received(data)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._send_timer is None:
            self._send_timer = self.loop.call_later(self.limits.send_timeout, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._send_timer is not None:
            self._send_timer.cancel()
            self._send_timer = None

    # -- httptools callbacks and uvicorn hooks --------------------------------------------

    def on_headers_complete(self) -> None:
        self._stop_waiting()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        idle = self.cycle is None or self.cycle.response_complete  # nothing pipelined started
        if idle and not self.transport.is_closing():
            self._await_request()

    # -- the limits -----------------------------------------------------------------------

    def _await_request(self) -> None:
        self._stop_waiting()
        self._waiting, self._head_bytes, self._tail = True, 0, b""
        self.connections_.waiting[self] = None
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_late)

    def _stop_waiting(self) -> None:
        self._waiting = False
        self.connections_.waiting.pop(self, None)
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_late(self) -> None:
        self._head_timer = None
        if self._waiting and not self.transport.is_closing():
            if self._head_bytes:
                self._close("header_timeout", TIMED_OUT)
            else:
                self._close("silent")

    def _send_stalled(self) -> None:
        self._send_timer = None
        if not self.transport.is_closing():
            metrics.HTTP_CONNECTIONS_CLOSED.labels("send_timeout").inc()
            self.transport.abort()

    def _close(self, reason: str, answer: bytes = b"") -> None:
        self._stop_waiting()
        metrics.HTTP_CONNECTIONS_CLOSED.labels(reason).inc()
        log.debug("closing a connection from %s: %s", (self.client or ("?",))[0], reason)
        if answer:
            self.transport.write(answer)
        self.transport.close()
        self.connections_.open.discard(self)
