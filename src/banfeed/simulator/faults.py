"""Fault answers: auth and the faults that preempt an endpoint, and the slow or hostile ones.

``reset`` (a TCP RST), ``drip``, ``drip-headers``, ``slow-chunked``, ``nested``, ``bad-time``,
``echo`` and ``echo-redirect`` (a device or proxy that echoes the request, token included) and
``gzip-bomb``; the rest of the banned list's body faults are in ``banned_endpoints``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http
import socket
import struct
import zlib
from collections.abc import AsyncIterator
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse

from .answers import _authorized, _dumps, _json, _sleep
from .constants import _BODY_FAULTS, _RAW_SEND, _SLOW_FAULTS, DEFAULT_TTL
from .device import SimDevice

_HTML_401 = "<html><head><title>401 Unauthorized</title></head><body>Unauthorized</body></html>"
_HTML_500 = "<html><head><title>500 Internal Server Error</title></head><body>Error</body></html>"
_HTML_503 = "<html><head><title>503 Service Unavailable</title></head><body>Busy</body></html>"
_HTML_LOGIN = "<html><body>Please login</body></html>"
# TEST-NET-2, like _BAD_CREATED_IP (banned_endpoints): the addresses of the bad-time and
# slow-chunked entries.
_BAD_TIME_NET = "198.51.100."
_SLOW_IP = "198.51.100.250"
# Nesting this deep exceeds any recursion limit, and is still only 200 kB of body.
_NESTED_DEPTH = 100_000


async def _refused(device: SimDevice, request: Request) -> Response | None:
    """The answer when auth or a fault preempts the endpoint; None: go on and answer."""
    fault = device.fault
    if fault == "401" or not _authorized(request, device.token):
        return HTMLResponse(_HTML_401, status_code=401)
    if fault in ("403", "404", "424", "429"):
        status = int(fault)
        headers = {"Retry-After": "60"} if status == 429 else None
        return _json({"status": "error", "http_status": status, "error": -status}, status, headers)
    if fault == "500":
        return HTMLResponse(_HTML_500, status_code=500)
    if fault == "503":  # a device restarting, or a load balancer with no healthy member
        return HTMLResponse(_HTML_503, status_code=503, headers={"Retry-After": "30"})
    if fault == "html":
        return HTMLResponse(_HTML_LOGIN)
    if fault == "reset":
        # After a real reset uvicorn drops this reply; in-process (no socket) it is the answer.
        await _reset(request)
        return Response(status_code=502)
    if fault == "timeout":
        if not await _sleep(request, device.timeout_delay):
            return Response(status_code=499)
    elif fault == "nested":  # well-formed JSON, nested deeper than any recursive parser goes
        nested = b"[" * _NESTED_DEPTH + b"]" * _NESTED_DEPTH
        return Response(nested, media_type="application/json")
    elif fault == "slow-chunked":
        chunks = _endless_list(int(device.clock()), device.drip_interval)
        return StreamingResponse(chunks, media_type="application/json")
    elif fault in ("echo", "echo-redirect", "gzip-bomb"):
        return _hostile(device, request)
    elif fault not in _BODY_FAULTS + _SLOW_FAULTS:
        return PlainTextResponse(f"unknown simulator fault {fault!r}", status_code=500)
    return None


def _hostile(device: SimDevice, request: Request) -> Response:
    """What a device, or a proxy in front of it, that should not be trusted answers."""
    if device.fault == "gzip-bomb":  # a small body that inflates to huge_bytes of JSON spaces
        headers = {"Content-Encoding": "gzip"}
        return Response(_bomb(device.huge_bytes), media_type="application/json", headers=headers)
    # The request as received, headers and all (an error page that "helps" by echoing it).
    # Authorization first, so it survives any cut a client makes of a long message.
    first = sorted(request.headers.items(), key=lambda item: item[0] != "authorization")
    lines = [f"{name}: {value}" for name, value in first]
    lines.append(f"{request.method} {request.url.path}?{request.url.query}")
    echoed = " | ".join(lines)
    if device.fault == "echo-redirect":
        return Response(status_code=302, headers={"Location": f"/login?request={quote(echoed)}"})
    return _json({"status": "error", "http_status": 400, "error": -1, "cli_error": echoed})


@functools.lru_cache(maxsize=4)
def _bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = b" " * 1_048_576
    parts = [packer.compress(block) for _ in range(size // len(block))]
    parts += [packer.compress(b" " * (size % len(block))), packer.flush()]
    return b"".join(parts)


def _transport(request: Request) -> asyncio.Transport | None:
    """The request's TCP connection, or None in-process (no socket)."""
    raw_send = request.scope.get(_RAW_SEND)
    # uvicorn's send is a bound method of its per-request cycle, which owns the transport.
    transport = getattr(getattr(raw_send, "__self__", None), "transport", None)
    return transport if isinstance(transport, asyncio.Transport) else None


async def _reset(request: Request) -> None:
    """Abort the TCP connection with an RST (no-op when no real socket is reachable)."""
    if (transport := _transport(request)) is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # Linger 0 turns close() into an RST instead of an orderly FIN.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    for _ in range(3):  # let connection_lost run so uvicorn drops the reply we return
        await asyncio.sleep(0)


# -- slow answers: drip, drip-headers, slow-chunked -------------------------------------------
# Each sends something every drip_interval, so no read ever waits as long as a client's read
# timeout: only a deadline on the whole request stops them.


async def _slowly(device: SimDevice, request: Request, response: Response) -> Response:
    """``response`` as "drip" or "drip-headers" deliver it; unchanged under any other fault."""
    fault, interval = device.fault, device.drip_interval
    if fault == "drip-headers" and (transport := _transport(request)) is not None:
        return await _drip_head(request, transport, response, interval)
    if fault in ("drip", "drip-headers"):  # drip-headers in-process: no socket to drip on
        return StreamingResponse(
            _bytewise(bytes(response.body), interval), response.status_code, dict(response.headers)
        )
    return response


async def _bytewise(body: bytes, interval: float) -> AsyncIterator[bytes]:
    for index in range(len(body)):
        await asyncio.sleep(interval)
        yield body[index : index + 1]


async def _drip_head(
    request: Request, transport: asyncio.Transport, response: Response, interval: float
) -> Response:
    """Write ``response`` to the socket ourselves, its status line and headers one byte per
    ``interval``, then close the connection (uvicorn cannot send headers slowly)."""
    try:
        phrase = http.HTTPStatus(response.status_code).phrase
    except ValueError:  # a status of the simulator's own, such as 499
        phrase = ""
    lines = [f"HTTP/1.1 {response.status_code} {phrase}".encode()]
    lines += [b"%s: %s" % (k, v) for k, v in response.raw_headers if k != b"connection"]
    head = b"\r\n".join([*lines, b"connection: close", b"", b""])
    for index in range(len(head)):
        if transport.is_closing() or not await _sleep(request, interval):
            break  # the client gave up
        transport.write(head[index : index + 1])
    else:
        transport.write(response.body)
    transport.close()
    # Until uvicorn has seen the connection go, so it drops the reply returned here instead
    # of writing it after ours.
    await _sleep(request, 1.0)
    return Response(status_code=499)


async def _endless_list(now: int, interval: float) -> AsyncIterator[bytes]:
    """The start of a banned list that never ends: one valid entry per ``interval``."""
    yield b'{"http_method":"GET","results":['
    entry = {"expires": now + DEFAULT_TTL, "created": now, "ip_address": _SLOW_IP}
    entry |= {"source": "IPS", "ipv6": 0}
    chunk = _dumps(entry) + b","
    while True:
        await asyncio.sleep(interval)
        yield chunk


def _bad_time_entries(now: int) -> list[dict[str, object]]:
    """Entries with a valid address each but a time no FortiOS sends (a float, even a whole
    one, is refused too: FortiOS sends integers)."""
    year_3000, before_2000, expires = 32_503_680_000, 946_684_799, now + DEFAULT_TTL
    times: list[tuple[object, object]] = [
        (year_3000, expires),
        (-1, expires),
        (float(now), expires),
        (before_2000, expires),
        (now, year_3000),  # expires, not created, is wrong in these two
        (now, before_2000),
    ]
    return [
        {"expires": e, "created": c, "ip_address": f"{_BAD_TIME_NET}{201 + i}"}
        | {"source": "IPS", "ipv6": 0}
        for i, (c, e) in enumerate(times)
    ]
