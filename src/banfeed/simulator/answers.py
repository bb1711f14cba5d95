"""What every endpoint shares: request bodies, auth, waiting, FortiOS-shaped answers."""

from __future__ import annotations

import asyncio
import hmac
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

from starlette.requests import Request
from starlette.responses import Response

from .constants import BUILD
from .device import SimDevice

_NOT_JSON: Final = object()  # request body absent or not JSON

# (device, request, JSON body or _NOT_JSON, the vdom the query names) -> answer
_Handler = Callable[[SimDevice, Request, object, str], Awaitable[Response]]


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
