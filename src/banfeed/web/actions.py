"""The dashboard's writes: unban, ban, allow — the functions `banfeed unban`, `ban` and
`allow add` call, with the signed-in admin as the actor of the audit event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .. import compose, control
from ..errors import InputError
from ..net import parse_network
from ..timeutil import iso, parse_duration
from .context import Web

Action = Literal["unban", "ban", "allow"]
ACTIONS: tuple[Action, ...] = ("unban", "ban", "allow")


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


def act(web: Web, action: Action, body: ActionBody, actor: str) -> dict[str, Any]:
    """Do ``action``; the result as JSON (``done`` says it in words)."""
    rt = web.runtime()
    config, now = rt.config, rt.now()
    note = body.note or None
    if action == "unban":
        report = control.unban(
            rt.store, [parse_network(body.target)], actor=actor, note=note, now=now
        )
        return {"done": f"unbanned {body.target}", "actor": actor} | report.record()
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
