"""``/api/v1/feeds/NAME…`` and what the Feeds pages share with it: a feed looked up by name,
its definition and versions as records, and the three writes — approve, rollback (a pin),
release — made by the functions `banfeed feeds approve|rollback|release` call, with the
signed-in admin as the actor and the note in the audit event.

Errors say what is wrong with the request (400: a bad version or body; 404: no such feed);
a store that fails is logged and answered 503 without its message, which names the store.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import control, reports
from ..compose import Runtime
from ..config import NAME_PATTERN, FeedConfig
from ..errors import BanfeedError, ConfigError, InputError
from ..models import FeedVersion
from ..publish import shards
from ..timeutil import format_duration, iso
from . import overview
from .bodies import json_body
from .context import Web, store_failed
from .sessions import Session, guarded

log = logging.getLogger("banfeed.dashboard")

PREFIX = "/api/v1/feeds"
FeedAction = Literal["approve", "rollback", "release"]
FEED_ACTIONS: tuple[FeedAction, ...] = ("approve", "rollback", "release")
HISTORY_SHOWN = 20  # versions listed unless more are asked for
HISTORY_MAX = 1000
MAX_VERSION = 10**12  # far past any feed's history, and inside a 64-bit column


def status_of(exc: BanfeedError) -> int:
    """400 for bad input, 404 for an unknown feed, 503 (logged) for the store."""
    if isinstance(exc, InputError):
        return 400
    if isinstance(exc, ConfigError):
        return 404
    return 503


def public_message(exc: BanfeedError) -> str:
    """What a client may read: the input problem, never a store's message (its URL, path)."""
    return str(exc) if isinstance(exc, InputError | ConfigError) else store_failed(exc)


def known_feed(rt: Runtime, name: str) -> FeedConfig:
    """The configured feed ``name``: InputError if it cannot be a feed name, ConfigError
    (404) if no feed has it."""
    if not re.fullmatch(NAME_PATTERN, name):
        raise InputError("not a feed name: letters, digits, '.', '_' and '-', at most 64")
    return rt.config.feed(name)


def whole_number(params: Mapping[str, str], key: str, high: int) -> int | None:
    """The query parameter ``key`` as a number from 1 to ``high``; None when absent."""
    text = params.get(key, "").strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 13 and 1 <= int(text) <= high):
        raise InputError(f"{key}: give a whole number from 1 to {high}")
    return int(text)


def definition(feed: FeedConfig) -> dict[str, Any]:
    """What a feed is configured to publish and to whom (secrets never: the auth type only)."""
    return {
        "family": feed.family,
        "causes": list(feed.causes),
        "devices": list(feed.devices),
        "vdoms": list(feed.vdoms),
        "min_offenses": feed.min_offenses,
        "seen_within": None if feed.seen_within is None else format_duration(feed.seen_within),
        "limit": feed.limit,
        "shards": feed.shards,
        "shard_urls": [f"/feeds/{name}.txt" for name in feed.shard_names]
        if feed.shards > 1
        else [],
        "aggregate": feed.aggregate,
        "auth": feed.auth.type,
        "allow_from": [str(n) for n in feed.allow_from],
    }


def version_record(version: FeedVersion, served: int | None) -> dict[str, Any]:
    """One published version: `banfeed feeds history --format json`'s shape."""
    return {
        "version": version.number,
        "published": iso(version.created),
        "entries": version.entries,
        "added": version.added,
        "removed": version.removed,
        "overflow": version.overflow,
        "etag": version.etag,
        "reason": version.reason,
        "approver": version.approver,
        "served": version.number == served,
    }


@dataclass(frozen=True)
class FeedFacts:
    """One feed as the feed page and the API show it."""

    feed: FeedConfig
    shown: reports.FeedOverview
    versions: list[FeedVersion]  # newest first
    more: bool  # older versions exist than those listed

    @property
    def served(self) -> int | None:
        return self.shown.version.number if self.shown.version else None

    def record(self) -> dict[str, Any]:
        return overview.feed_record(self.shown) | {"definition": definition(self.feed)}


def feed_facts(web: Web, name: str, limit: int = HISTORY_SHOWN) -> FeedFacts:
    rt = web.runtime()
    feed = known_feed(rt, name)
    shown = next(f for f in reports.feed_overviews(rt) if f.name == feed.name)
    _, versions = reports.feed_history(rt, feed.name, limit + 1)
    return FeedFacts(feed, shown, versions[:limit], len(versions) > limit)


def every_feed(web: Web) -> list[tuple[dict[str, Any], reports.FeedOverview]]:
    """Each configured feed's definition and its state as served, in config order."""
    rt = web.runtime()
    return [(definition(rt.config.feed(f.name)), f) for f in reports.feed_overviews(rt)]


def diff(web: Web, name: str, old: int | None, new: int | None) -> reports.FeedDiff:
    rt = web.runtime()
    return reports.feed_diff(rt, known_feed(rt, name).name, old, new)


def kept_version(web: Web, name: str, number: int) -> FeedVersion:
    """A version a rollback can serve (its bytes kept), for the confirmation page; the pin
    itself checks again, in its own transaction."""
    rt = web.runtime()
    known_feed(rt, name)
    with rt.store.read() as tx:
        version = tx.feed_version(name, number)
    if version is None or version.body is None:
        raise InputError(f"feed {name} has no version {number} with its bytes kept")
    return version


class FeedActionBody(BaseModel):
    """What a feed action takes (a form or a JSON body)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)

    version: int | None = Field(
        None, ge=1, le=MAX_VERSION, description="rollback: the version to serve."
    )
    note: str | None = Field(None, max_length=500, description="Why, for the audit log.")

    @classmethod
    def parse(cls, data: Mapping[str, Any]) -> FeedActionBody:
        cleaned = {k: v for k, v in data.items() if k != "csrf" and v not in ("", None)}
        try:
            return cls.model_validate(cleaned)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise InputError(f"{where}: {first['msg']}") from None


def feed_act(
    web: Web, name: str, action: FeedAction, body: FeedActionBody, actor: str
) -> dict[str, Any]:
    """Do ``action`` on feed ``name``; the result as JSON (``done`` says it in words)."""
    rt = web.runtime()
    feed = known_feed(rt, name).name
    now, note = rt.now(), body.note or None
    if action != "rollback" and body.version is not None:
        raise InputError(f"version: {action} takes no version")
    result: dict[str, Any] = {"actor": actor, "feed": feed}
    if action == "approve":
        approval = control.approve_feed(rt.store, feed, actor=actor, now=now, note=note)
        if approval is control.Approval.NOT_HELD:
            raise InputError(f"feed {feed} is not held; there is nothing to approve")
        done = f"released the hold on {feed}: its current content is published"
        if approval is control.Approval.ALREADY:
            done = f"the hold on {feed} was already released: its current content is published"
    elif action == "rollback":
        if body.version is None:
            raise InputError("version: give the version to serve (see the feed's history)")
        shards.check_rollback(rt.store, feed, body.version, rt.config.feed(feed).shards)
        pinned = control.pin_feed(rt.store, feed, body.version, actor=actor, now=now, note=note)
        done = f"pinned {feed} to version {pinned.number} ({pinned.entries} entries)"
        result |= {"version": pinned.number, "entries": pinned.entries}
    else:
        if not control.release_feed(rt.store, feed, actor=actor, now=now, note=note):
            raise InputError(f"feed {feed} is not pinned; there is nothing to release")
        done = f"released the pin on {feed}: its current build is published"
    return {"done": done} | result


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _answer(func: Callable[[], Any]) -> JSONResponse:
    try:
        return JSONResponse(await asyncio.to_thread(func))
    except BanfeedError as exc:
        return _error(status_of(exc), public_message(exc))


def routes(web: Web) -> list[Route]:
    viewer = guarded(web, api=True)

    @viewer
    async def feed(request: Request, _session: Session) -> Response:
        name = request.path_params["name"]
        return await _answer(lambda: feed_facts(web, name).record())

    @viewer
    async def versions(request: Request, _session: Session) -> Response:
        name = request.path_params["name"]
        try:
            limit = whole_number(request.query_params, "limit", HISTORY_MAX) or HISTORY_SHOWN
        except InputError as exc:
            return _error(400, str(exc))

        def history() -> dict[str, Any]:
            facts = feed_facts(web, name, limit)
            state = facts.shown.state
            return {
                "feed": facts.feed.name,
                "served": facts.served,
                "held_since": iso(state.held_since),
                "hold_reason": state.hold_reason,
                "pinned": state.pinned,
                "versions": [version_record(v, facts.served) for v in facts.versions],
                "more": facts.more,
            }

        return await _answer(history)

    @viewer
    async def feed_diff(request: Request, _session: Session) -> Response:
        name = request.path_params["name"]
        try:
            old = whole_number(request.query_params, "old", MAX_VERSION)
            new = whole_number(request.query_params, "new", MAX_VERSION)
        except InputError as exc:
            return _error(400, str(exc))

        def lines() -> dict[str, Any]:
            found = diff(web, name, old, new)
            return {
                "feed": found.feed,
                "old": found.old,
                "new": found.new,
                "added": found.added,
                "removed": found.removed,
            }

        return await _answer(lines)

    def action(name: FeedAction) -> Route:
        async def handler(request: Request, session: Session) -> Response:
            body = await json_body(request, FeedActionBody, '{"note": "…"}')
            if isinstance(body, JSONResponse):
                return body
            feed_name = request.path_params["name"]
            return await _answer(lambda: feed_act(web, feed_name, name, body, session.actor))

        return Route(f"{PREFIX}/{{name}}/{name}", guarded(web, api=True)(handler), methods=["POST"])

    return [
        Route(f"{PREFIX}/{{name}}", feed, methods=["GET"]),
        Route(f"{PREFIX}/{{name}}/versions", versions, methods=["GET"]),
        Route(f"{PREFIX}/{{name}}/diff", feed_diff, methods=["GET"]),
        *(action(name) for name in FEED_ACTIONS),
    ]
