"""The threat feeds' endpoints: system/external-resource entry-list, refresh, dynamic (push)."""

from __future__ import annotations

import asyncio
import itertools

from starlette.requests import Request
from starlette.responses import Response

from .answers import _done, _error, _json
from .constants import BUILD
from .device import SimDevice

_ENTRY_PAGE = 100  # entry-list entries per answer unless ?count= says otherwise


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
