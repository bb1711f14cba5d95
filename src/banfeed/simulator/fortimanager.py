"""A simulated FortiManager fronting the simulated FortiGates of a :class:`SimFleet`.

``POST /jsonrpc`` speaks the JSON-RPC of FortiManager's API, as much of it as banfeed uses:

- auth: ``Authorization: Bearer <api_key>`` (FortiManager 7.2.2+ API users), or the
  ``session`` that ``exec sys/login/user`` ``{"user", "passwd"}`` returned; anything else is
  HTTP 401 (an HTML page).
- ``exec sys/proxy/json`` ``{"action", "resource", "target": [...], "payload", "timeout"}``:
  targets ``adom/A/group/G``, ``adom/A/device/D``, ``group/G`` and ``device/D`` (every ADOM;
  ``All_FortiGate`` is every device of an ADOM) resolve to devices, each asked once, through the
  fleet's own app in-process: its token, faults and latency apply as if it were asked directly.
  The answer is the shape of the fixtures (``fmg_proxy_*``): one item per device,
  ``{"target", "status": {"code", "message"}, "response"}``.
- per device: a name in ``unreachable`` (its tunnel down) answers ``{"code": -1, "message":
  "Device is offline or unreachable"}`` and no response; a device slower than the call's
  ``timeout`` ``{"code": -1, "message": "request timed out"}``; a device answer that is no JSON
  (an HTML 401 or 500) ``{"code": <its HTTP status>}`` (these per-device codes are not from a
  real FortiManager's documentation: banfeed treats any code but 0 as that device failing).
- an ADOM, group or device it does not know: the result's status ``{"code": -3, "message":
  "Object does not exist"}``.

``fault`` breaks the FortiManager itself: ``500`` (HTML), ``-11`` (every result "No permission
for the resource"), ``shape`` (``result`` is no list), ``truncated`` (half the answer),
``huge`` (padded past ``huge_bytes``). Every request is counted in ``requests`` and its JSON
body kept in ``calls``. Like the rest of the simulator it shares no code with banfeed's client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import socket
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from .app import SimFleet
from .serve import _bind

FMG_FAULTS = ("none", "500", "-11", "shape", "truncated", "huge")
_OK = {"code": 0, "message": "OK"}
_MISSING = {"code": -3, "message": "Object does not exist"}
_HTML_401 = "<html><head><title>401 Unauthorized</title></head><body>Unauthorized</body></html>"


@dataclass
class SimFortiManager:
    """A FortiManager managing ``adoms`` (ADOM -> device names of ``fleet``)."""

    fleet: SimFleet
    api_key: str
    adoms: dict[str, list[str]]
    groups: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (ADOM, group)
    users: dict[str, str] = field(default_factory=dict)  # login name -> password
    unreachable: set[str] = field(default_factory=set)
    fault: str = "none"
    huge_bytes: int = 4 * 1024**2
    requests: int = 0
    calls: list[Any] = field(default_factory=list)
    _sessions: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._devices_app = self.fleet.app()

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/jsonrpc", self._jsonrpc, methods=["POST"])])

    async def _jsonrpc(self, request: Request) -> Response:
        self.requests += 1
        try:
            call = json.loads(await request.body())
        except ValueError:
            call = None
        self.calls.append(call)
        if not isinstance(call, dict) or not isinstance(call.get("params"), list):
            return _answer({"id": None, "result": [{"status": {"code": -6, "message": "bad"}}]})
        if self.fault == "500":
            return HTMLResponse("<html><body>Internal Server Error</body></html>", 500)
        results, session = [], None
        for param in call["params"]:
            url = str(param.get("url", "")).strip("/") if isinstance(param, dict) else ""
            if call.get("method") == "exec" and url == "sys/login/user":
                session = self._login(param.get("data"))
                status = _OK if session else {"code": -22, "message": "Login fail"}
                results.append({"status": status, "url": "sys/login/user"})
                continue
            if not self._authorized(request, call.get("session")):
                return HTMLResponse(_HTML_401, status_code=401)
            if self.fault == "-11":
                refused = {"code": -11, "message": "No permission for the resource"}
                results.append({"status": refused, "url": url})
            elif call.get("method") == "exec" and url == "sys/proxy/json":
                results.append(await self._proxy(param.get("data")))
            else:
                results.append({"status": {"code": -6, "message": "Invalid url"}, "url": url})
        answer: dict[str, Any] = {"id": call.get("id"), "result": results}
        if session is not None:
            answer["session"] = session
        return self._faulty(answer)

    def _login(self, data: Any) -> str | None:
        login = data[0] if isinstance(data, list) and data else data
        if not isinstance(login, dict) or login.get("user") not in self.users:
            return None
        if not hmac.compare_digest(str(login.get("passwd", "")), self.users[login["user"]]):
            return None
        session = secrets.token_urlsafe(24)
        self._sessions.add(session)
        return session

    def _authorized(self, request: Request, session: Any) -> bool:
        if isinstance(session, str) and session in self._sessions:
            return True
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(key.strip(), self.api_key)

    def _faulty(self, answer: dict[str, Any]) -> Response:
        if self.fault == "shape":
            answer["result"] = {"data": "not a list"}
        body = json.dumps(answer).encode()
        if self.fault == "truncated":
            body = body[: len(body) // 2]
        elif self.fault == "huge":
            body = body[:-1] + b" " * self.huge_bytes + b"}"
        return Response(body, media_type="application/json")

    # -- sys/proxy/json ------------------------------------------------------------------------

    async def _proxy(self, data: Any) -> dict[str, Any]:
        result: dict[str, Any] = {"url": "/sys/proxy/json"}
        if not isinstance(data, dict) or not isinstance(data.get("target"), list):
            return result | {"status": {"code": -10, "message": "The data is invalid"}}
        names: list[str] = []
        for target in data["target"]:
            found = self._resolve(str(target))
            if found is None:
                return result | {"status": _MISSING}
            names += [n for n in found if n not in names]  # a device asked once
        timeout = data.get("timeout", 60)
        timeout = timeout if isinstance(timeout, int | float) and timeout > 0 else 60
        method = str(data.get("action", "get")).upper()
        resource = str(data.get("resource", "/"))
        payload = data.get("payload")
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=self._devices_app)) as c:
            items = await asyncio.gather(
                *(self._ask(c, name, method, resource, payload, timeout) for name in names)
            )
        return result | {"data": list(items), "status": _OK}

    def _resolve(self, target: str) -> list[str] | None:
        """The devices of one target path; None when it names nothing known."""
        parts = target.strip("/").split("/")
        adoms = list(self.adoms)
        if len(parts) == 4 and parts[0] == "adom":
            if parts[1] not in self.adoms:
                return None
            adoms, parts = [parts[1]], parts[2:]
        if len(parts) != 2 or parts[0] not in ("group", "device"):
            return None
        kind, name = parts
        found: list[str] = []
        known = False  # an empty group is known, and resolves to no device
        for adom in adoms:
            members = self.adoms[adom]
            if kind == "device" and name in members:
                found.append(name)
            elif kind == "group" and name == "All_FortiGate":
                found += members
            elif kind == "group" and (adom, name) in self.groups:
                found += self.groups[(adom, name)]
            else:
                continue
            known = True
        return found if known else None

    async def _ask(
        self,
        client: httpx.AsyncClient,
        name: str,
        method: str,
        resource: str,
        payload: Any,
        timeout: float,
    ) -> dict[str, Any]:
        item: dict[str, Any] = {"target": name}
        device = self.fleet.devices.get(name)
        if name in self.unreachable or device is None:
            return item | {"status": {"code": -1, "message": "Device is offline or unreachable"}}
        headers = {"Authorization": f"Bearer {device.token}"}
        body = None if payload is None else json.dumps(payload).encode()
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            async with asyncio.timeout(timeout):
                resp = await client.request(
                    method, f"http://{name}{resource}", headers=headers, content=body
                )
        except TimeoutError:
            return item | {"status": {"code": -1, "message": "request timed out"}}
        try:
            response = resp.json()
        except ValueError:
            status = {"code": resp.status_code, "message": f"HTTP {resp.status_code}"}
            return item | {"status": status}
        return item | {"response": response, "status": _OK}


def _answer(document: dict[str, Any]) -> Response:
    return Response(json.dumps(document), media_type="application/json")


@dataclass
class RunningFortiManager:
    """A simulated FortiManager served from a background thread; ``url`` is its base URL."""

    url: str
    _server: uvicorn.Server = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _sock: socket.socket = field(repr=False)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread.ident is not None:
            self._thread.join(timeout=10)
        self._sock.close()

    def __enter__(self) -> RunningFortiManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start(fmg: SimFortiManager, *, host: str = "127.0.0.1", port: int = 0) -> RunningFortiManager:
    """Serve ``fmg`` on ``host:port`` (0: an ephemeral port) from a background thread."""
    config = uvicorn.Config(
        fmg.app(),
        log_level="warning",
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=1,
        proxy_headers=False,
        server_header=False,
        loop="asyncio",
    )
    config.load()
    server = uvicorn.Server(config)
    sock = _bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}"
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="banfeed-sim-fmg", daemon=True
    )
    running = RunningFortiManager(url, server, thread, sock)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            running.stop()
            raise RuntimeError("simulated FortiManager failed to start")
        time.sleep(0.005)
    return running


def fortimanager(
    fleet: SimFleet,
    api_key: str,
    adoms: Mapping[str, Sequence[str]] | None = None,
    **options: Any,
) -> SimFortiManager:
    """A FortiManager managing ``adoms`` (default: every device of ``fleet`` in ``root``)."""
    managed = {a: list(d) for a, d in (adoms or {"root": list(fleet.devices)}).items()}
    return SimFortiManager(fleet, api_key, managed, **options)
