"""The threat feeds as configuration objects: ``/api/v2/cmdb/system/external-resource``.

What ``config system external-resource`` does on the CLI, over REST: list, read, create
(POST), change (PUT) and delete threat feeds of type ``address``. A pull feed is fetched at
once, then every ``refresh-rate`` minutes, by the simulator's refresher. Answers are shaped like
FortiOS CMDB answers (a write answers with ``mkey`` and revisions, as in the fixture
``monitor_post_response_xsoar_mock.json``); errors are FortiOS's: 404 ``-3`` for an unknown
name, 500 ``-5`` for a name that exists already, 400 ``-651`` for an invalid value.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .answers import _error, _json
from .constants import BUILD
from .device import SimDevice
from .feeds import _Feed

_NAME_MAX = 35  # FortiOS: the name of an external resource is at most 35 characters
_CHECKS = ("none", "basic", "full")


def _object(name: str, feed: _Feed) -> dict[str, Any]:
    """The CMDB view of a feed (the password is never shown, as on FortiOS)."""
    return {
        "name": name,
        "uuid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}:{feed.url}")),
        "status": "enable" if feed.push or feed.refresh_every is not None else "disable",
        "type": "address",
        "update-method": "push" if feed.push else "feed",
        "username": feed.username or "",
        "password": "ENC XXXX" if feed.password else "",
        "resource": feed.url,
        "server-identity-check": feed.server_identity_check,
        "refresh-rate": feed.refresh_rate,
    }


def _envelope(device: SimDevice, method: str, **extra: object) -> dict[str, Any]:
    body: dict[str, Any] = {"http_method": method, "revision": _revision(device)}
    body |= extra
    body |= {"vdom": "root", "path": "system", "name": "external-resource"}
    body |= {"status": "success", "http_status": 200, "serial": device.serial}
    return body | {"version": device.version, "build": BUILD}


def _revision(device: SimDevice) -> str:
    with device._lock:
        names = ",".join(f"{n}={f.url}" for n, f in sorted(device._feeds.items()))
    return hashlib.sha256(names.encode()).hexdigest()[:32]


async def _list(device: SimDevice, request: Request, _body: object, _vdom: str) -> Response:
    name = request.path_params.get("name")
    with device._lock:
        feeds = dict(device._feeds)
    if name is not None:
        if name not in feeds:
            return _error(404, -3)
        feeds = {name: feeds[name]}
    results = [_object(n, f) for n, f in sorted(feeds.items())]
    return _json(_envelope(device, "GET", size=len(results), results=results))


async def _create(device: SimDevice, request: Request, body: object, _vdom: str) -> Response:
    name = body.get("name") if isinstance(body, dict) else None
    if not isinstance(name, str) or not 0 < len(name) <= _NAME_MAX:
        return _error(400, -651)
    if name in device.feed_names():
        return _error(500, -5)
    return _write(device, "POST", name, body, {})


async def _update(device: SimDevice, request: Request, body: object, _vdom: str) -> Response:
    name = request.path_params["name"]
    with device._lock:
        feed = device._feeds.get(name)
    if feed is None:
        return _error(404, -3)
    return _write(device, "PUT", name, body, _object(name, feed) | {"password": feed.password})


async def _delete(device: SimDevice, request: Request, _body: object, _vdom: str) -> Response:
    name = request.path_params["name"]
    old = _revision(device)
    if not device.remove_feed(name):
        return _error(404, -3)
    return _json(_envelope(device, "DELETE", mkey=name, old_revision=old, revision_changed=True))


def _write(
    device: SimDevice, method: str, name: str, body: object, current: dict[str, Any]
) -> Response:
    """Apply a POST or PUT body over ``current`` (PUT: the feed as it is; POST: defaults)."""
    if not isinstance(body, dict):
        return _error(400, -651)
    values: dict[str, object] = {"status": "enable", "type": "address", "update-method": "feed"}
    values |= {"refresh-rate": 5, "server-identity-check": "none"} | current | body
    rate, check = values["refresh-rate"], values["server-identity-check"]
    user, password = values.get("username") or None, values.get("password") or None
    resource = values.get("resource", "")
    if not (
        values["type"] == "address"  # the simulator keeps IP address feeds only
        and values["status"] in ("enable", "disable")
        and values["update-method"] in ("feed", "push")
        and isinstance(rate, int)
        and not isinstance(rate, bool)
        and 1 <= rate <= 43200
        and isinstance(check, str)
        and check in _CHECKS
        and isinstance(resource, str)
        and (user is None or isinstance(user, str))
        and (password is None or isinstance(password, str))
    ):
        return _error(400, -651)
    push = values["update-method"] == "push"
    enabled = values["status"] == "enable"
    old = _revision(device)
    try:
        device.add_feed(
            name,
            url=resource,
            username=user,
            password=password,
            push=push,
            verify=check != "none",
            refresh_every=rate * 60.0 if enabled and not push else None,
        )
    except ValueError:  # a resource the simulator will not fetch: not 127.0.0.1 or ::1
        return _error(400, -651, cli_error="resource: only http(s) to loopback is simulated")
    with device._lock:
        feed = device._feeds[name]
        feed.refresh_rate, feed.server_identity_check = rate, check
    return _json(_envelope(device, method, mkey=name, old_revision=old, revision_changed=True))
