"""The simulated FortiGates' ASGI app: routing by local port, auth, faults, the endpoints."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import http
import ipaddress
import itertools
import json
import random
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .device import (
    _BAD_CREATED_IP,
    _BAD_TIME_NET,
    _BODY_FAULTS,
    _CALLS_KEPT,
    _ENTRY_PAGE,
    _FEEDS,
    _HTML_401,
    _HTML_500,
    _HTML_LOGIN,
    _HUGE_PAD_IP,
    _NESTED_DEPTH,
    _NOT_JSON,
    _PATH,
    _RAW_SEND,
    _SLOW_FAULTS,
    _SLOW_IP,
    BUILD,
    DEFAULT_TTL,
    SimDevice,
)

# -- the ASGI app: routing by port, counting, latency, then auth and faults, then handlers --


class _SimApp(Starlette):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Starlette wraps `send`; keep uvicorn's own so the "reset" fault can reach the socket.
        scope[_RAW_SEND] = send
        await super().__call__(scope, receive, send)


class SimFleet:
    """A set of simulated devices sharing one seeded RNG and one clock."""

    def __init__(self, *, seed: int = 0, clock: Callable[[], float] = time.time) -> None:
        self.seed = seed
        self.clock = clock
        self.rng = random.Random(seed)
        self.devices: dict[str, SimDevice] = {}
        self._ports: dict[int, str] = {}  # local port -> device name, filled by start()
        self.in_flight = 0  # requests being answered now, across the fleet
        self.max_in_flight = 0  # the most at once: shows how a client bounds its concurrency

    def add_device(
        self,
        name: str,
        *,
        token: str,
        vdoms: Sequence[str] = ("root",),
        entries: int = 0,
        churn: int = 0,
        latency: float = 0.0,
        fault: str = "none",
        ipv6_ratio: float = 0.1,
    ) -> SimDevice:
        if name in self.devices:
            raise ValueError(f"duplicate device name {name!r}")
        device = SimDevice(
            name=name,
            token=token,
            vdoms={v: [] for v in vdoms},
            fault=fault,
            latency=latency,
            churn=churn,
            ipv6_ratio=ipv6_ratio,
            clock=self.clock,
            rng=self.rng,
        )
        for vdom in vdoms:
            device.populate(vdom, entries, ipv6_ratio=ipv6_ratio)
        self.devices[name] = device
        return device

    def app(self) -> Starlette:
        """ASGI app for all devices, routed by local port (or, in-process, by host name)."""
        return _SimApp(routes=[self._route(*r) for r in _ROUTES])

    def _route(self, path: str, method: str, handler: _Handler, vdom_rule: str) -> Route:
        async def endpoint(request: Request) -> Response:
            return await self._endpoint(request, handler, vdom_rule)

        return Route(path, endpoint, methods=[method])

    def _device_for(self, scope: Scope) -> SimDevice | None:
        server = scope.get("server")
        name = None
        if server:
            name = self._ports.get(server[1])
            if name is None and server[0] in self.devices:
                name = server[0]  # httpx.ASGITransport with base_url "http://<device name>"
        if name is None and len(self.devices) == 1:
            name = next(iter(self.devices))
        return self.devices.get(name) if name is not None else None

    async def _endpoint(self, request: Request, handler: _Handler, vdom_rule: str) -> Response:
        device = self._device_for(request.scope)
        if device is None:
            return PlainTextResponse("no simulated device here", status_code=404)
        device.requests += 1
        try:
            raw = await request.body()
        except ClientDisconnect:
            return Response(status_code=499)
        body = _loads(raw)
        if not raw:
            recorded: object = dict(request.query_params)
        else:
            recorded = raw.decode("utf-8", "replace") if body is _NOT_JSON else body
        device.calls.append((request.method, request.url.path, recorded))
        if len(device.calls) > _CALLS_KEPT:  # a long `banfeed simulate` must not grow forever
            del device.calls[: _CALLS_KEPT // 2]
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if not await _sleep(request, device.latency):
                return Response(status_code=499)  # client gone: uvicorn sends nothing
            if (refused := await _refused(device, request)) is not None:
                return refused
            vdom = request.query_params.get("vdom") or "root"
            if vdom_rule != "any" and vdom not in device.vdoms:
                if vdom_rule == "known" or "vdom" in request.query_params:
                    return _error(404, -3, vdom=vdom)
            return await _slowly(device, request, await handler(device, request, body, vdom))
        finally:
            self.in_flight -= 1


# -- what every endpoint shares: auth, faults, FortiOS-shaped answers -------------------------

# (device, request, JSON body or _NOT_JSON, the vdom the query names) -> answer
_Handler = Callable[[SimDevice, Request, object, str], Awaitable[Response]]


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
    elif fault not in _BODY_FAULTS + _SLOW_FAULTS:
        return PlainTextResponse(f"unknown simulator fault {fault!r}", status_code=500)
    return None


def _loads(raw: bytes) -> object:
    try:
        return json.loads(raw) if raw else _NOT_JSON
    except ValueError:  # UnicodeDecodeError included
        return _NOT_JSON


def _error(status: int, error: int = -1, **extra: str) -> Response:
    return _json({"status": "error", "http_status": status, "error": error, **extra}, status)


def _done(device: SimDevice, vdom: str, path: str, name: str, action: str) -> Response:
    # No real body of a monitor POST answer was found; this is the GET shape minus results.
    body = {"http_method": "POST", "status": "success", "http_status": 200, "vdom": vdom}
    body |= {"path": path, "name": name, "action": action, "serial": device.serial}
    body |= {"version": device.version, "build": BUILD}
    return _json(body)


async def _sleep(request: Request, delay: float) -> bool:
    """Sleep ``delay`` seconds; False as soon as the client hangs up.

    Returning early matters for "timeout": a client that gave up must not leave a handler
    running, or stopping the server would wait for the graceful-shutdown timeout.
    """
    if delay <= 0:
        return True

    async def hang_up() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    sleeper = asyncio.ensure_future(asyncio.sleep(delay))
    watcher = asyncio.ensure_future(hang_up())
    try:
        await asyncio.wait((sleeper, watcher), return_when=asyncio.FIRST_COMPLETED)
        return not watcher.done()
    finally:
        sleeper.cancel()
        watcher.cancel()


def _authorized(request: Request, token: str) -> bool:
    # FortiOS 7.4.5+ refuses ?access_token=; banfeed must never rely on it.
    if "access_token" in request.query_params:
        return False
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _dumps(payload: object) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _json(body: object, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_dumps(body), status, headers, media_type="application/json")


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


# -- GET user/banned[/select] ------------------------------------------------------------------


async def _banned(device: SimDevice, request: Request, _body: object, _vdom: str) -> Response:
    fault = device.fault
    if fault == "shape":
        return _json({"status": "success", "results": {"not": "a list"}})
    raw = request.query_params.get("vdom") or "root"
    if raw == "*":
        names = sorted(device.vdoms)
    else:
        names = [v for v in raw.split(",") if v]
    missing = [v for v in names if v not in device.vdoms]
    if missing or not names:
        body = {"status": "error", "http_status": 404, "error": -3, "vdom": ",".join(missing)}
        return _json(body, 404)
    action = "select" if request.url.path.rstrip("/").endswith("/select") else None
    objects = [_response_object(device, v, device._poll(v), action) for v in names]
    now = int(device.clock())
    if fault in ("invalid", "bad-time"):
        extras = _invalid_entries if fault == "invalid" else _bad_time_entries
        for obj in objects:
            obj["results"].extend(extras(now))
    payload: object = objects if (raw == "*" or "," in raw) else objects[0]
    data = _dumps(payload)
    if fault == "huge" and len(data) < device.huge_bytes:
        pad = {"expires": now + DEFAULT_TTL, "created": now, "ip_address": _HUGE_PAD_IP}
        pad |= {"source": "", "ipv6": 0}
        objects[0]["results"].append(pad)
        # One pad entry of exactly the missing size keeps the body valid JSON of huge_bytes.
        pad["source"] = "X" * (device.huge_bytes - len(_dumps(payload)))
        data = _dumps(payload)
    elif fault == "truncated":
        data = data[: len(data) // 2]
    return Response(data, media_type="application/json")


def _response_object(
    device: SimDevice, vdom: str, results: object, action: str | None
) -> dict[str, Any]:
    """A GET answer of user/banned (``action``: "select", "check" or None for the plain list)."""
    obj: dict[str, Any] = {"http_method": "GET", "results": results, "vdom": vdom}
    obj |= {"path": "user", "name": "banned"}
    if action is not None:
        obj["action"] = action
    obj |= {"status": "success", "serial": device.serial, "version": device.version}
    obj["build"] = BUILD
    return obj


def _invalid_entries(now: int) -> list[dict[str, object]]:
    base: dict[str, object] = {"expires": now + DEFAULT_TTL, "created": now}
    base |= {"source": "IPS", "ipv6": 0}
    bad_ips = ("999.1.1.1", "01.02.03.04", "1.2.3.4\n5.6.7.8", "", "a" * 300)
    out = [{**base, "ip_address": ip} for ip in bad_ips]
    out.append(dict(base))  # no ip_address at all
    out.append({**base, "ip_address": _BAD_CREATED_IP, "created": "yesterday"})
    return out


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


# -- POST user/banned/add_users, clear_users, clear_all; GET user/banned/check ----------------


def _ip_list(body: object) -> list[str] | None:
    """Canonical text of ``body["ip_addresses"]``; None if absent, ill-typed or invalid."""
    ips = body.get("ip_addresses") if isinstance(body, dict) else None
    if not isinstance(ips, list) or not all(isinstance(ip, str) and "%" not in ip for ip in ips):
        return None
    try:
        return [str(ipaddress.ip_address(ip)) for ip in ips]
    except ValueError:
        return None


async def _add_users(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    ips = _ip_list(body)
    expiry = body.get("expiry") if isinstance(body, dict) else None
    if ips is None or not isinstance(expiry, int) or isinstance(expiry, bool) or expiry < 0:
        return _error(400)
    device._ban(vdom, ips, expiry)
    return _done(device, vdom, "user", "banned", "add_users")


async def _clear_users(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    if (ips := _ip_list(body)) is None:
        return _error(400)
    device._unban(vdom, ips)
    return _done(device, vdom, "user", "banned", "clear_users")


async def _clear_all(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    device._unban(vdom, None)
    return _done(device, vdom, "user", "banned", "clear_all")


async def _check(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    given = request.query_params.get("ip_address", "")
    if (ips := _ip_list({"ip_addresses": [given]})) is None:
        return _error(400)
    results = {"ip_address": given, "is_banned": device._is_banned(vdom, ips[0])}
    return _json(_response_object(device, vdom, results, "check"))


# -- system/external-resource: entry-list, refresh, dynamic (push) ----------------------------


def _mkey(request: Request, body: object) -> str | None:
    mkey = request.query_params.get("mkey")
    if mkey is None and isinstance(body, dict) and isinstance(body.get("mkey"), str):
        mkey = body["mkey"]  # FortiOS monitor POSTs usually take parameters in the body
    return mkey or None


def _int_param(request: Request, name: str, default: int) -> int | None:
    text = request.query_params.get(name)
    if text is None:
        return default
    return int(text) if text.isascii() and text.isdigit() else None


async def _entry_list(device: SimDevice, request: Request, _body: object, vdom: str) -> Response:
    mkey, start = _mkey(request, None), _int_param(request, "start", 0)
    count = _int_param(request, "count", _ENTRY_PAGE)
    if mkey is None or start is None or count is None:
        return _error(400)
    count = count or _ENTRY_PAGE  # the fixture asked count=0 and got all 6: a guess either way
    with device._lock:
        feed = device._feeds.get(mkey)
        if feed is None:
            return _error(404, -3)
        lines = itertools.chain(
            ({"entry": text, "valid": True} for text in feed.entries.values()),
            ({"entry": text, "valid": False} for text in feed.invalid),
        )
        # Keys and order as in fixtures/external_resource_entry_list_v7.4.2.json.
        results = {
            "conn_attempt_time": int(feed.conn_attempt_time or 0),
            "entries": list(itertools.islice(lines, start, start + count)),
            "http_status_code": feed.http_status_code,
            "invalid_count": len(feed.invalid),
            "last_content_update_time": int(feed.last_content_update_time or 0),
            "overflow": feed.overflow > 0,
            "resource_file_status": (
                "downloaded" if feed.last_content_update_time is not None else "not-downloaded"
            ),
            "status": "success",
            "valid_count": len(feed.entries),
        }
    obj = {"action": "entry-list", "build": BUILD, "http_method": "GET"}
    obj |= {"name": "external-resource", "path": "system", "results": results}
    obj |= {"serial": device.serial, "status": "success", "vdom": vdom, "version": device.version}
    return _json(obj)


async def _refresh(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    if (mkey := _mkey(request, body)) is None:
        return _error(400)
    try:
        # In a thread: the feed may be served by this very event loop (or a slow server).
        await asyncio.to_thread(device.refresh_feed, mkey)
    except KeyError:
        return _error(404, -3)
    except ValueError:  # a push feed, or a URL the simulator will not fetch
        return _error(400)
    return _done(device, vdom, "system", "external-resource", "refresh")


def _commands(device: SimDevice, body: object) -> list[tuple[str, str, list[str]]] | None:
    commands = body.get("commands") if isinstance(body, dict) else None
    if not isinstance(commands, list) or not commands:
        return None
    out: list[tuple[str, str, list[str]]] = []
    for command in commands:
        if not isinstance(command, dict):
            return None
        name, verb, entries = command.get("name"), command.get("command"), command.get("entries")
        if verb not in ("add", "remove", "snapshot") or not isinstance(entries, list):
            return None
        if not isinstance(name, str) or not all(isinstance(e, str) for e in entries):
            return None
        feed = device._feeds.get(name)
        if feed is None or not feed.push:
            return None
        out.append((name, verb, entries))
    return out


async def _dynamic(device: SimDevice, request: Request, body: object, vdom: str) -> Response:
    with device._lock:
        commands = _commands(device, body)
    if commands is None:  # all commands are checked before any is applied
        return _error(400)
    device._push(commands)
    return _done(device, vdom, "system", "external-resource", "dynamic")


# vdom rule: "known" (default root, must exist: else 404), "given" (checked only when given:
# feeds are global objects here), "any" (the handler checks; the list takes "a,b" and "*").
_ROUTES: list[tuple[str, str, _Handler, str]] = [
    (_PATH, "GET", _banned, "any"),
    (_PATH + "/select", "GET", _banned, "any"),
    (_PATH + "/check", "GET", _check, "known"),
    (_PATH + "/add_users", "POST", _add_users, "known"),
    (_PATH + "/clear_users", "POST", _clear_users, "known"),
    (_PATH + "/clear_all", "POST", _clear_all, "known"),
    (_FEEDS + "/entry-list", "GET", _entry_list, "given"),
    (_FEEDS + "/refresh", "POST", _refresh, "given"),
    (_FEEDS + "/dynamic", "POST", _dynamic, "given"),
]
