"""FortiGates polled through a FortiManager: targets, the poll, and reaching each device.

A ``[[fortimanagers]]`` entry becomes a :class:`FortiManagerTarget`, which the collector polls
beside the FortiGates: one ``sys/proxy/json`` call per ADOM and VDOM selector
(:mod:`.fmgclient`), then each managed device's answer is polled like a direct one — the same
parser, back-off, answer diffing, errors and metrics — under the name ``FMG.DEVICE``. A
device's own failure (unreachable from the FortiManager, refusing it) fails that device alone;
a failure of the FortiManager fails it and every device known behind it, each with its error.
Push, unban-everywhere and verify reach each managed device through
:class:`.fmgclient.ManagedDeviceClient` once :func:`expand_targets` has resolved the targets.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

from ..config import beside
from ..config.fortimanager import SEPARATOR, FortiManagerConfig
from ..errors import ConfigError, DeviceError
from ..models import DeviceStatus, PollResult
from .client import BannedAnswer, DeviceTarget, FortiOSClient
from .diff import Keys
from .fmgclient import (
    PROBE,
    PROXIED_AT_ONCE,
    FortiManagerClient,
    FortiManagerTarget,
    ManagedDevice,
    ManagedDeviceClient,
)

__all__ = [
    "BannedSource",
    "FortiManagerTarget",
    "ManagedDevice",
    "client_for",
    "expand_targets",
    "managed_devices",
    "poll_fortimanager",
    "targets_from",
]


def targets_from(sections: Sequence[FortiManagerConfig], base_dir: Path) -> list[DeviceTarget]:
    """One target per ``[[fortimanagers]]``; a key that cannot be read fails it alone."""
    built: list[DeviceTarget] = []
    for fmg in sections:
        token, problem = None, None
        try:
            token = fmg.resolve_token(base_dir)
        except ConfigError as exc:
            problem = str(exc)
        ca_file = None if fmg.ca_file is None else beside(fmg.ca_file, base_dir)
        built.append(
            FortiManagerTarget(
                name=fmg.name,
                url=fmg.url,
                token=token,
                vdoms=tuple(fmg.vdoms),
                verify_tls=fmg.verify_tls,
                ca_file=ca_file,
                timeout=float(fmg.timeout),
                max_response=fmg.max_response,
                token_problem=problem,
                adoms=tuple(fmg.adoms),
                members=tuple(fmg.targets),
                device_timeout=fmg.device_timeout,
                push_quarantine=fmg.push_quarantine,
                unban_everywhere=fmg.unban_everywhere,
            )
        )
    return built


class BannedSource(Protocol):
    """What the collector polls a quarantine list from: a FortiGate's client, a FortiManager's,
    or one device's answer inside a FortiManager's."""

    async def banned(
        self,
        vdom: str,
        *,
        now: int,
        known_fingerprint: str | None = None,
        known_keys: Keys | None = None,
    ) -> BannedAnswer: ...


# -- resolving, polling ------------------------------------------------------------------------


def client_for(target: DeviceTarget) -> FortiOSClient:
    """The client that reaches ``target``: directly, or through its FortiManager."""
    if isinstance(target, ManagedDevice):
        return ManagedDeviceClient(target)
    if isinstance(target, FortiManagerTarget):
        return FortiManagerClient(target)
    return FortiOSClient(target)


async def expand_targets(
    targets: Sequence[DeviceTarget], *, unban: bool = False
) -> list[DeviceTarget]:
    """``targets`` with each FortiManager replaced by its managed devices (one probe call per
    ADOM resolves its targets), or kept with ``failure`` set when that fails; with ``unban``,
    FortiManagers whose ``unban_everywhere`` is off are left out."""

    async def devices(t: DeviceTarget) -> list[DeviceTarget]:
        if not isinstance(t, FortiManagerTarget):
            return [t]
        if unban and not t.unban_everywhere:
            return []
        try:
            return list(await managed_devices(t))
        except DeviceError as exc:
            return [replace(t, failure=exc)]

    return [d for found in await asyncio.gather(*(devices(t) for t in targets)) for d in found]


async def managed_devices(target: FortiManagerTarget) -> list[ManagedDevice]:
    """The devices ``target``'s targets resolve to in each ADOM (``banfeed check`` reports a
    FortiManager that resolves none, as the poll does)."""
    gate = asyncio.Semaphore(PROXIED_AT_ONCE)
    vdom = target.vdoms[0] if target.vdoms[0] != "*" else "root"
    found: dict[str, ManagedDevice] = {}
    client = FortiManagerClient(target)
    async with client:
        for adom in target.adoms:
            items, _ = await client.proxy(adom, target.members, "get", PROBE + vdom)
            for item in items:
                raw = item.name[len(target.name) + len(SEPARATOR) :]
                found.setdefault(item.name, _managed(target, item.name, adom, raw, gate))
    return list(found.values())


def _managed(
    t: FortiManagerTarget, name: str, adom: str, device: str, gate: asyncio.Semaphore
) -> ManagedDevice:
    return ManagedDevice(
        name=name,
        url=t.url,
        token=t.token,
        vdoms=t.vdoms,
        verify_tls=t.verify_tls,
        ca_file=t.ca_file,
        timeout=t.timeout,
        max_response=t.max_response,
        token_problem=t.token_problem,
        fortimanager=t.name,
        adom=adom,
        device=device,
        device_timeout=t.device_timeout,
        gate=gate,
    )


Statuses = dict[tuple[str, str], DeviceStatus]
PollOne = Callable[[BannedSource, PollResult, Statuses, int, asyncio.Semaphore], Awaitable[None]]


async def poll_fortimanager(
    target: FortiManagerTarget,
    statuses: Statuses,
    tokens: dict[str, str | None],
    poll: PollOne,
    now: int,
    gate: asyncio.Semaphore,
) -> list[PollResult]:
    """The FortiManager's own result per VDOM selector, then one per managed device, each made
    by ``poll`` (the collector's, for back-off, diffing, errors and metrics as for any device).
    Devices back off with the FortiManager's key (``tokens``), whose back-off holds them all."""
    token = tokens.get(target.name)
    prefix = target.name + SEPARATOR

    async def one(client: FortiManagerClient | None, head: PollResult) -> list[PollResult]:
        if client is not None:
            await poll(client, head, statuses, now, gate)
        answers = client.answers.pop(head.vdom, {}) if client is not None else {}
        results = [head]
        for name, answer in answers.items():
            tokens[name] = token
            result = PollResult(name, head.vdom, started=time.time())
            await poll(answer, result, statuses, now, gate)
            results.append(result)
        if head.error is not None:  # the devices it did not answer for fail with its error
            for device, vdom in statuses:
                if vdom == head.vdom and device.startswith(prefix) and device not in answers:
                    tokens[device] = token
                    error = relayed(head.error, device, target.name)
                    results.append(PollResult(device, vdom, started=head.started, error=error))
        return results

    heads = [PollResult(target.name, vdom, started=time.time()) for vdom in target.vdoms]
    client = FortiManagerClient(target)
    try:
        async with client:
            done = await asyncio.gather(*(one(client, head) for head in heads))
    except DeviceError as exc:  # the client could not even be built (e.g. a bad ca_file)
        for head in heads:
            head.error = exc
        done = [await one(None, head) for head in heads]
    return [result for results in done for result in results]


def relayed(error: DeviceError, device: str, fortimanager: str) -> DeviceError:
    """The FortiManager's ``error`` as one device behind it reports it (same kind, status and
    Retry-After, so back-off and status read it as the device's own)."""
    copied = type(error).__new__(type(error))  # copy.copy would call __init__ with args
    copied.__dict__.update(error.__dict__)
    copied.device = device
    copied.detail = f"via FortiManager {fortimanager}: {error.detail}"
    copied.args = (f"{device}: {copied.detail}",)
    return copied
