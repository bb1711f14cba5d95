"""The quarantine list's endpoints: GET user/banned[/select] and check, POST add_users,
clear_users and clear_all; the banned list's body faults (shape, invalid, huge, truncated)."""

from __future__ import annotations

import ipaddress
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from .answers import _done, _dumps, _error, _json
from .constants import BUILD, DEFAULT_TTL
from .device import SimDevice
from .faults import _bad_time_entries

# TEST-NET-3: the one "valid" address in the invalid-fault extras, so even a client that
# wrongly accepts created="yesterday" can never push a real host into a feed.
_BAD_CREATED_IP = "203.0.113.77"
_HUGE_PAD_IP = "192.0.2.1"


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
