"""The JSON-RPC side of a FortiManager: ``exec`` of ``sys/proxy/json``, and what it answers.

One call carries a FortiOS request (``resource``) to every device of a target set and answers
one item per device, ``{"target", "status": {"code", "message"}, "response"}``, where
``response`` is the device's FortiOS answer. Items become :class:`ProxiedAnswer` (the answer,
or the device's own error); anything wrong with the call itself raises, naming the
FortiManager. HTTP goes through :class:`.client.FortiOSClient`'s machinery (one deadline,
bounded and decompressed answers, the key scrubbed, classified errors).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..config.fields import NAME_PATTERN
from ..config.fortimanager import SEPARATOR
from ..errors import (
    DeviceBadResponse,
    DeviceConfigError,
    DeviceError,
    DeviceHTTPError,
    DeviceNotFoundError,
    DevicePermissionError,
    DeviceServerError,
    DeviceUnreachable,
)
from ..models import Rejected, VdomList
from .client import (
    _STATUS_ERRORS,
    BANNED_PATH,
    DYNAMIC_PATH,
    ENTRY_LIST_PATH,
    BannedAnswer,
    DeviceTarget,
    FortiOSClient,
)
from .diff import Keys
from .parse import FeedStatus, _cut, _load, _short, diffed_lists, parse_entry_list

JSONRPC_PATH = "/jsonrpc"
PROXY_URL = "sys/proxy/json"
# What resolves a target set into devices (check, push, unban, verify): a cheap FortiOS read
# in the same access group as the quarantine list (authgrp), asked about TEST-NET-1.
PROBE = "/api/v2/monitor/user/banned/check?ip_address=192.0.2.1&vdom="
PROXIED_AT_ONCE = 4  # calls to one FortiManager in flight at once for push, unban and verify
_NAME = re.compile(NAME_PATTERN)


@dataclass(frozen=True, slots=True, repr=False)
class FortiManagerTarget(DeviceTarget):
    """A FortiManager and the devices to reach through it; a poll target of the collector."""

    adoms: tuple[str, ...] = ("root",)
    members: tuple[str, ...] = ("group/All_FortiGate",)  # "group/NAME" or "device/NAME"
    device_timeout: int = 30  # the FortiManager's own wait for each device
    push_quarantine: bool | None = None
    unban_everywhere: bool = True
    failure: DeviceError | None = field(default=None, compare=False)  # resolving it failed

    def __repr__(self) -> str:  # never show the key
        return f"FortiManagerTarget(name={self.name!r}, url={self.url!r}, adoms={self.adoms!r})"


@dataclass(frozen=True, slots=True, repr=False)
class ManagedDevice(DeviceTarget):
    """One FortiGate behind a FortiManager (``name`` is ``FMG.DEVICE``); url and key are the
    FortiManager's."""

    fortimanager: str = ""
    adom: str = "root"
    device: str = ""  # its name on the FortiManager
    device_timeout: int = 30
    gate: asyncio.Semaphore | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"ManagedDevice(name={self.name!r}, via={self.fortimanager!r})"


@dataclass
class ProxiedAnswer:
    """One device's item of a proxied answer: its FortiOS answer, or why it has none."""

    name: str  # FMG.DEVICE
    response: Any = None
    error: DeviceError | None = None

    async def banned(
        self,
        vdom: str,
        *,
        now: int,
        known_fingerprint: str | None = None,
        known_keys: Keys | None = None,
    ) -> BannedAnswer:
        """The device's list, validated exactly as a direct poll's answer is."""
        if self.error is not None:
            raise self.error
        text = json.dumps(self.response, ensure_ascii=False, separators=(",", ":"))
        fingerprint = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
        if fingerprint == known_fingerprint:
            return BannedAnswer([], fingerprint, unchanged=True)
        _raise_embedded_error(self.name, self.response)
        lists, keys = diffed_lists(self.name, vdom, self.response, now=now, known=known_keys)
        return BannedAnswer(lists, fingerprint, unchanged=False, keys=keys)


class FortiManagerClient(FortiOSClient):
    """A FortiManager's client: ``banned`` polls every device of its targets at once and keeps
    each device's item in ``answers[vdom]`` for :func:`poll_fortimanager`."""

    target: FortiManagerTarget | ManagedDevice

    def __init__(self, target: FortiManagerTarget | ManagedDevice) -> None:
        super().__init__(target)
        self.answers: dict[str, dict[str, ProxiedAnswer]] = {}
        self._ids = 0

    @property
    def fortimanager(self) -> str:
        t = self.target
        return t.fortimanager if isinstance(t, ManagedDevice) else t.name

    async def banned(
        self,
        vdom: str,
        *,
        now: int,
        known_fingerprint: str | None = None,
        known_keys: Keys | None = None,
    ) -> BannedAnswer:
        """Every ADOM's devices' lists of ``vdom``, kept in ``answers``; the FortiManager's own
        result has no entries, only the device names it could not take (as rejected)."""
        assert isinstance(self.target, FortiManagerTarget)
        adoms, resource = self.target.adoms, f"{BANNED_PATH}?vdom={vdom}"
        outcomes = await asyncio.gather(*(self._adom(a, resource, vdom) for a in adoms))
        answers = self.answers[vdom] = {}
        rejected: list[Rejected] = []
        failed: DeviceError | None = None
        for outcome in outcomes:
            if isinstance(outcome, DeviceError):
                failed = failed or outcome
                continue
            for item in outcome[0]:
                answers.setdefault(item.name, item)
            rejected += outcome[1]
        if failed is not None:
            raise failed
        if not answers:
            raise DeviceNotFoundError(
                self.target.name,
                f"no managed device in {', '.join(self.target.members)} of ADOM "
                f"{', '.join(adoms)} — check adoms and targets, and the API user's ADOMs",
                404,
            )
        fingerprint = hashlib.sha256("\n".join(sorted(answers)).encode()).hexdigest()
        return BannedAnswer([VdomList(vdom, [], rejected)], fingerprint, unchanged=False)

    async def _adom(
        self, adom: str, resource: str, vdom: str
    ) -> tuple[list[ProxiedAnswer], list[Rejected]] | DeviceError:
        try:
            return await self.proxy(adom, self.target_paths(), "get", resource, vdom=vdom)
        except DeviceError as exc:
            return exc

    def target_paths(self) -> tuple[str, ...]:
        t = self.target
        return (f"device/{t.device}",) if isinstance(t, ManagedDevice) else t.members

    async def proxy(
        self,
        adom: str,
        members: Iterable[str],
        action: str,
        resource: str,
        payload: Any = None,
        *,
        vdom: str = "",
    ) -> tuple[list[ProxiedAnswer], list[Rejected]]:
        """One ``sys/proxy/json`` call: each device's item, and the items that name none."""
        self._ids += 1
        data: dict[str, Any] = {
            "action": action,
            "resource": resource,
            "target": [f"adom/{adom}/{m}" for m in members],
            "timeout": self.target.device_timeout,
        }
        if payload is not None:
            data["payload"] = payload
        call = {"id": self._ids, "method": "exec", "params": [{"url": PROXY_URL, "data": data}]}
        body = await self._request("POST", JSONRPC_PATH, {}, json.dumps(call).encode())
        return self._items(adom, _load(self.target.name, body, "FortiManager answer"), vdom)

    def _items(
        self, adom: str, document: Any, vdom: str
    ) -> tuple[list[ProxiedAnswer], list[Rejected]]:
        name = self.target.name
        result = document.get("result") if isinstance(document, dict) else None
        if not isinstance(result, list) or len(result) != 1 or not isinstance(result[0], dict):
            raise DeviceBadResponse(
                name, f"not a JSON-RPC answer of one result ({_kind_of(result)})"
            )
        code, message = _status(result[0].get("status"))
        if code is None:
            raise DeviceBadResponse(name, "JSON-RPC result without a status code")
        if code != 0:
            raise _rpc_error(name, adom, code, message)
        data = result[0].get("data")
        if isinstance(data, dict):
            data = [data]
        if not isinstance(data, list):
            raise DeviceBadResponse(name, f"JSON-RPC 'data' is {_kind_of(data)}, not a list")
        items, rejected = [], []
        for index, raw in enumerate(data):
            item = self._item(raw)
            if isinstance(item, str):
                rejected.append(Rejected(name, vdom, index, item))
            else:
                items.append(item)
        return items, rejected

    def _item(self, raw: Any) -> ProxiedAnswer | str:
        """One device's item; a text (why) for an item that names no usable device."""
        if not isinstance(raw, dict):
            return f"device item is {_kind_of(raw)}, not an object"
        target = raw.get("target")
        if not isinstance(target, str) or not target:
            return f"device item without a target ({_text(target)})"
        device = self.fortimanager + SEPARATOR + target.rpartition("/")[2]
        if not _NAME.fullmatch(device):
            return f"device {_text(device, 80)!r} is no usable name (64 of letters, digits, _ . -)"
        code, message = _status(raw.get("status"))
        if code is None:
            return f"device {device}: item without a status code"
        if code != 0:
            return ProxiedAnswer(device, error=self._device_error(device, code, message))
        if "response" not in raw or raw["response"] is None:
            error = DeviceBadResponse(
                device, f"the FortiManager {self.fortimanager} relayed no answer"
            )
            return ProxiedAnswer(device, error=error)
        return ProxiedAnswer(device, raw["response"])

    def _device_error(self, device: str, code: int, message: str) -> DeviceError:
        if 400 <= code < 600:  # the device's HTTP status, as the FortiManager relays it
            return http_error(device, code, f"relayed by FortiManager {self.fortimanager}")
        return DeviceUnreachable(
            device,
            f"FortiManager {self.fortimanager} could not reach it: {message} (code {code}) "
            "— is the device connected to the FortiManager?",
        )

    # A FortiManager itself is no FortiGate: these are reached only when resolving its devices
    # failed (``failure``), and say so for every device behind it.
    async def add_users(self, addresses: Sequence[str], expiry: int, vdom: str = "root") -> None:
        raise self._unresolved()

    async def clear_users(self, addresses: Sequence[str], vdom: str = "root") -> None:
        raise self._unresolved()

    async def push_feed(self, feed: str, command: str, entries: Sequence[str]) -> None:
        raise self._unresolved()

    async def feed_status(self, feed: str) -> FeedStatus:
        raise self._unresolved()

    def _unresolved(self) -> DeviceError:
        t = self.target
        if isinstance(t, FortiManagerTarget) and t.failure is not None:
            return t.failure
        return DeviceConfigError(t.name, "a FortiManager is reached through its devices")


class ManagedDeviceClient(FortiManagerClient):
    """One managed device's client: a FortiGate's write and feed calls, each proxied."""

    target: ManagedDevice

    async def __aenter__(self) -> ManagedDeviceClient:
        if self.target.gate is not None:  # a few calls to one FortiManager at a time
            await self.target.gate.acquire()
        try:
            await super().__aenter__()
        except BaseException:
            self._release()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        try:
            await super().__aexit__(*exc)
        finally:
            self._release()

    def _release(self) -> None:
        if self.target.gate is not None:
            self.target.gate.release()

    async def add_users(self, addresses: Sequence[str], expiry: int, vdom: str = "root") -> None:
        body = {"ip_addresses": list(addresses), "expiry": max(0, expiry)}
        await self._write(f"{BANNED_PATH}/add_users?vdom={vdom}", body)

    async def clear_users(self, addresses: Sequence[str], vdom: str = "root") -> None:
        await self._write(
            f"{BANNED_PATH}/clear_users?vdom={vdom}", {"ip_addresses": list(addresses)}
        )

    async def push_feed(self, feed: str, command: str, entries: Sequence[str]) -> None:
        commands = [{"name": feed, "command": command, "entries": list(entries)}]
        await self._write(DYNAMIC_PATH, {"commands": commands})

    async def feed_status(self, feed: str) -> FeedStatus:
        response = await self._one("get", f"{ENTRY_LIST_PATH}?mkey={feed}")
        return parse_entry_list(self.target.name, feed, json.dumps(response).encode())

    async def _write(self, resource: str, payload: dict[str, Any]) -> None:
        response = await self._one("post", resource, payload)
        if not isinstance(response, dict) or response.get("status", "success") != "success":
            detail = _short(response) if isinstance(response, dict) else _kind_of(response)
            raise DeviceBadResponse(self.target.name, f"{resource}: not a success ({detail})")

    async def _one(self, action: str, resource: str, payload: Any = None) -> Any:
        t = self.target
        items, _ = await self.proxy(t.adom, self.target_paths(), action, resource, payload)
        for item in items:
            if item.name == t.name:
                if item.error is not None:
                    raise item.error
                _raise_embedded_error(t.name, item.response)
                return item.response
        raise DeviceNotFoundError(
            t.name, f"FortiManager {t.fortimanager} does not list {t.device} in ADOM {t.adom}", 404
        )


# -- what the FortiManager says, in banfeed's errors -------------------------------------------


def http_error(device: str, status: int, where: str) -> DeviceHTTPError:
    """A device's HTTP status relayed by a FortiManager, as the same error a direct poll gets."""
    if status in _STATUS_ERRORS:
        cls, message = _STATUS_ERRORS[status]
        return cls(device, f"{message} ({where})", status)
    if 500 <= status < 600:
        return DeviceServerError(
            device, f"device error ({status}, {where}) — retried next cycle", status
        )
    return DeviceHTTPError(device, f"unexpected HTTP status {status} ({where})", status)


def _raise_embedded_error(device: str, response: Any) -> None:
    """A FortiOS error object inside the item (``status: "error"``) raises as a direct poll's
    HTTP status would."""
    if isinstance(response, dict) and response.get("status") == "error":
        status = response.get("http_status")
        if isinstance(status, int) and not isinstance(status, bool) and 400 <= status < 600:
            raise http_error(device, status, f"the device said: {_short(response)}")
        raise DeviceHTTPError(device, f"the device reported an error: {_short(response)}", 0)


def _rpc_error(name: str, adom: str, code: int, message: str) -> DeviceError:
    if code == -11:
        return DevicePermissionError(
            name,
            f"ADOM {adom}: no permission ({message}, -11) — give the API user rpc-permit "
            "(read; read-write to push or unban) and access to this ADOM",
            403,
        )
    if code in (-3, -6, -10):
        return DeviceNotFoundError(
            name, f"ADOM {adom}: {message} ({code}) — check adoms and targets", 404
        )
    return DeviceHTTPError(name, f"ADOM {adom}: FortiManager error {code}: {message}", 0)


def _status(value: Any) -> tuple[int | None, str]:
    if not isinstance(value, dict):
        return None, ""
    code = value.get("code")
    if isinstance(code, bool) or not isinstance(code, int):
        return None, ""
    return code, _text(value.get("message"), 120)


def _text(value: Any, width: int = 40) -> str:
    # The FortiManager's text escaped: a newline or terminal escape must not forge a log line.
    return repr(_cut(value, width))[1:-1]


def _kind_of(value: Any) -> str:
    return "null" if value is None else type(value).__name__
