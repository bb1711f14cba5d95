"""The dashboard's writes: unban, unban everywhere, ban, allow — the functions `banfeed
unban [--everywhere]`, `ban` and `allow add` call, with the signed-in admin (or ``token:NAME``)
as the actor of the audit event."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import compose, control, push
from ..checks import error_record
from ..config import Config
from ..errors import InputError
from ..net import parse_network
from ..timeutil import iso, parse_duration
from .context import Web

Action = Literal["unban", "unban-everywhere", "ban", "allow"]
ACTIONS: tuple[Action, ...] = ("unban", "unban-everywhere", "ban", "allow")


def everywhere_devices(config: Config) -> list[str]:
    """The FortiGates an unban everywhere releases the address on: every configured one, as
    `banfeed unban --everywhere` (each needs its API admin's ``authgrp read-write``)."""
    return [target.name for target in compose.targets(config)]


def device_record(result: push.PushResult) -> dict[str, Any]:
    """One FortiGate's outcome of an unban everywhere (the API's ``devices``)."""
    return {
        "device": result.device,
        "cleared": result.error is None,
        "addresses": result.count,
        "error": None if result.error is None else error_record(result.error),
    }


class ActionBody(BaseModel):
    """What an action takes (a form or a JSON body)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    target: str = Field(min_length=1, max_length=64, description="An address or network.")
    note: str | None = Field(None, max_length=500, description="Why, for the audit log.")
    ttl: str | None = Field(None, max_length=16, description='ban: how long, like "7d".')
    expires: str | None = Field(None, max_length=16, description='allow: remove after, "30d".')
    force: bool = Field(False, description="Past the prefix guard (recorded in the event).")

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> ActionBody:
        cleaned = {k: v for k, v in data.items() if k != "csrf" and v not in ("", None)}
        if cleaned.get("force") in ("on", "true", "1"):
            cleaned["force"] = True
        try:
            return cls.model_validate(cleaned)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InputError(f"{where}: {first['msg']}") from None


def _release(config: Config, report: control.UnbanReport, done: dict[str, Any]) -> dict[str, Any]:
    """What `banfeed unban --everywhere` does after the store: release the unbanned offenders
    from the quarantine of every FortiGate, each device alone (one failing fails alone)."""
    results = []
    if report.offenders:
        targets = compose.targets(config)
        results = asyncio.run(push.clear_everywhere(targets, report.offenders))
    cleared = sum(r.error is None for r in results)
    if report.offenders:
        words = f"; released on {cleared} of {len(results)} FortiGates"
    else:
        words = "; no offender to release on the FortiGates (a ban is no quarantine)"
    return done | {
        "done": done["done"] + words,
        "cleared_everywhere": cleared == len(results),
        "devices": [device_record(r) for r in results],
    }


def act(web: Web, action: Action, body: ActionBody, actor: str) -> dict[str, Any]:
    """Do ``action``; the result as JSON (``done`` says it in words)."""
    rt = web.runtime()
    config, now = rt.config, rt.now()
    note = body.note or None
    if action in ("unban", "unban-everywhere"):
        report = control.unban(
            rt.store, [parse_network(body.target)], actor=actor, note=note, now=now
        )
        done = {"done": f"unbanned {body.target}", "actor": actor} | report.record()
        return done if action == "unban" else _release(config, report, done)
    if action == "ban":
        ttl = parse_duration(body.ttl) if body.ttl else None
        ban = control.ban(
            rt.store,
            body.target,
            ttl=ttl,
            note=note,
            actor=actor,
            guard=compose.guard(config),
            allowlist=compose.allowlist(config),
            now=now,
            force=body.force,
        )
        until = iso(ban.expires) or "unbanned"
        return {
            "done": f"banned {ban.network} until {until}",
            "actor": actor,
            "network": str(ban.network),
            "expires": iso(ban.expires),
        }
    expires = parse_duration(body.expires) if body.expires else None
    entry = control.allow_add(
        rt.store,
        body.target,
        expires=None if expires is None else now + expires,
        note=note,
        actor=actor,
        now=now,
        guard=compose.guard(config),
        force=body.force,
    )
    until = f" until {iso(entry.expires)}" if entry.expires else ""
    return {
        "done": f"allowlisted {entry.network}{until}",
        "actor": actor,
        "network": str(entry.network),
        "expires": iso(entry.expires),
    }
