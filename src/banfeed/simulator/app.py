"""The simulated FortiGates' ASGI app: routing by local port, counting, latency, the routes.

Auth and faults are in ``faults``, the endpoints in ``banned_endpoints``, ``feed_endpoints``
and ``cmdb_endpoints``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from .answers import _NOT_JSON, _error, _Handler, _loads, _sleep
from .banned_endpoints import _add_users, _banned, _check, _clear_all, _clear_users
from .cmdb_endpoints import _create, _delete, _list, _update
from .constants import _CALLS_KEPT, _CMDB_FEEDS, _FEEDS, _PATH, _RAW_SEND
from .device import SimDevice
from .faults import _refused, _slowly
from .feed_endpoints import _dynamic, _entry_list, _refresh

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

    def refresh_due(self) -> int:
        """Fetch the pull feeds whose refresh time has come, on every device; how many."""
        return sum(len(device.refresh_due()) for device in list(self.devices.values()))

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
    (_CMDB_FEEDS, "GET", _list, "given"),
    (_CMDB_FEEDS + "/{name}", "GET", _list, "given"),
    (_CMDB_FEEDS, "POST", _create, "given"),
    (_CMDB_FEEDS + "/{name}", "PUT", _update, "given"),
    (_CMDB_FEEDS + "/{name}", "DELETE", _delete, "given"),
]
