"""The Feeds pages: every feed (definition, state in words, held ones with their reason), one
feed (consumers, version history, diff form), a diff between two versions (downloadable as
text), and approve, rollback and release through a confirmation page. Reads and writes are
those of the API (``feedapi``), so a page and a script see and do the same."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote, urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import BanfeedError, InputError
from ..models import Role
from ..publish.stix import collection_path
from ..reports import FeedDiff
from ..timeutil import iso
from . import overview
from .context import Web
from .feedapi import (
    FEED_ACTIONS,
    HISTORY_MAX,
    HISTORY_SHOWN,
    MAX_VERSION,
    FeedAction,
    FeedActionBody,
    FeedFacts,
    diff,
    every_feed,
    feed_act,
    feed_facts,
    kept_version,
    public_message,
    status_of,
    version_record,
    whole_number,
)
from .pages import BASE, environment
from .sessions import SECURITY_HEADERS, Session, guarded

DIFF_SHOWN = 500  # lines of each side a diff page shows; the download has them all

DONE = {
    "approve": "the hold is released; consumers get the feed's current content at their "
    "next fetch.",
    "rollback": "the feed is pinned; consumers get the pinned version at their next fetch, "
    "until it is released.",
    "release": "the pin is released; the feed publishes its current build again.",
}


def consequence(facts: FeedFacts, action: FeedAction, version: int | None) -> str:
    """What confirming ``action`` will do, in plain words (InputError: nothing to do)."""
    name, state, served = facts.feed.name, facts.shown.state, facts.served
    if action == "approve":
        if state.held_since is None:
            raise InputError(f"feed {name} is not held; there is nothing to approve")
        return (
            f"Feed {name} is held since {iso(state.held_since)}: {state.hold_reason}. Approving "
            "publishes its current content at the next refresh (about a second): the lines "
            "the guard held back disappear from every consumer at its next fetch."
        )
    if action == "release":
        if state.pinned is None:
            raise InputError(f"feed {name} is not pinned; there is nothing to release")
        return (
            f"Feed {name} stops serving version {state.pinned} (pinned by "
            f"{state.pinned_by or 'an operator'}) and publishes its current build at the next "
            "refresh: consumers get the addresses collected meanwhile at their next fetch."
        )
    if version is None:
        raise InputError("version: choose the version to serve from the feed's history")
    if version == served:
        raise InputError(f"feed {name} already serves version {version}")
    return (
        f"Every consumer of {name} is served version {version} from its next fetch, instead "
        f"of version {served}, whatever is collected meanwhile — new offenders are not "
        "published and unbanned ones stay listed — until someone releases the pin."
    )


def diff_pair(facts: FeedFacts) -> tuple[int, int] | None:
    """The diff a feed page offers first: the served version against the one before it, or a
    served first version (a rollback) against the newest."""
    served, newest = facts.served, facts.versions[0].number if facts.versions else None
    if served is None or newest is None:
        return None
    if served > 1:
        return served - 1, served
    return (served, newest) if newest > served else None


def routes(web: Web) -> list[BaseRoute]:
    env = environment()
    viewer = guarded(web, api=False)
    admin_page = guarded(web, api=False, role=Role.ADMIN)

    def page(template: str, session: Session, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(template).render(user=session, csrf=session.csrf, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    def failed(session: Session, exc: BanfeedError) -> Response:
        return page("error.html", session, status_of(exc), message=public_message(exc))

    @viewer
    async def feeds(_request: Request, session: Session) -> Response:
        try:
            rows = await asyncio.to_thread(every_feed, web)
        except BanfeedError as exc:
            return failed(session, exc)
        return page("feeds.html", session, rows=rows, words=overview.feed_words)

    @viewer
    async def feed(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        try:
            limit = _number(request, "limit", HISTORY_MAX) or HISTORY_SHOWN
            facts = await asyncio.to_thread(feed_facts, web, name, limit)
        except BanfeedError as exc:
            return failed(session, exc)
        done = request.query_params.get("done", "")
        record = facts.record()
        return page(
            "feed.html",
            session,
            f=facts,
            record=record,
            d=record["definition"],
            taxii=collection_path(name),
            words=overview.feed_words(facts.shown),
            versions=[version_record(v, facts.served) for v in facts.versions],
            pair=diff_pair(facts),
            more=min(limit * 5, HISTORY_MAX) if facts.more and limit < HISTORY_MAX else None,
            done=DONE.get(done),
        )

    async def _diff(request: Request) -> FeedDiff:
        name = request.path_params["name"]
        old, new = _number(request, "old", MAX_VERSION), _number(request, "new", MAX_VERSION)
        return await asyncio.to_thread(diff, web, name, old, new)

    @viewer
    async def diff_page(request: Request, session: Session) -> Response:
        try:
            found = await _diff(request)
        except BanfeedError as exc:
            return failed(session, exc)
        query = urlencode({"old": found.old, "new": found.new})
        return page(
            "feed_diff.html",
            session,
            diff=found,
            shown=DIFF_SHOWN,
            download=f"{BASE}/feeds/{quote(found.feed)}/diff.txt?{query}",
        )

    @viewer
    async def diff_text(request: Request, session: Session) -> Response:
        try:
            found = await _diff(request)
        except BanfeedError as exc:
            return PlainTextResponse(public_message(exc) + "\n", status_code=status_of(exc))
        body = "".join(f"-{line}\n" for line in found.removed)
        body += "".join(f"+{line}\n" for line in found.added)
        filename = f"{found.feed}-{found.old}-{found.new}.diff"
        return PlainTextResponse(
            body, headers={"Content-Disposition": f'attachment; filename="{filename}"'}
        )

    @admin_page
    async def confirm(request: Request, session: Session) -> Response:
        name = request.path_params["name"]
        asked = request.query_params.get("action", "")
        action = next((a for a in FEED_ACTIONS if a == asked), None)
        try:
            if action is None:
                raise InputError("choose approve, rollback or release")
            version = _number(request, "version", MAX_VERSION)
            facts = await asyncio.to_thread(feed_facts, web, name, 1)
            words = consequence(facts, action, version)
            if action == "rollback" and version is not None:
                await asyncio.to_thread(kept_version, web, name, version)
        except BanfeedError as exc:
            return failed(session, exc)
        return page(
            "feed_confirm.html",
            session,
            name=facts.feed.name,
            action=action,
            number=version,
            consequence=words,
            error=None,
        )

    def action_route(action: FeedAction) -> Route:
        async def handler(request: Request, session: Session) -> Response:
            name = request.path_params["name"]
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
            try:
                body = FeedActionBody.parse(data)
                await asyncio.to_thread(feed_act, web, name, action, body, session.actor)
            except InputError as exc:
                return page(
                    "feed_confirm.html",
                    session,
                    400,
                    name=name,
                    action=action,
                    number=data.get("version"),
                    consequence=None,
                    error=str(exc),
                )
            except BanfeedError as exc:
                return failed(session, exc)
            return RedirectResponse(f"{BASE}/feeds/{quote(name)}?done={action}", 303)

        return Route(
            f"{BASE}/feeds/{{name}}/{action}", guarded(web, api=False)(handler), methods=["POST"]
        )

    return [
        Route(f"{BASE}/feeds", feeds, methods=["GET"]),
        Route(f"{BASE}/feeds/{{name}}", feed, methods=["GET"]),
        Route(f"{BASE}/feeds/{{name}}/diff", diff_page, methods=["GET"]),
        Route(f"{BASE}/feeds/{{name}}/diff.txt", diff_text, methods=["GET"]),
        Route(f"{BASE}/feeds/{{name}}/confirm", confirm, methods=["GET"]),
        *(action_route(action) for action in FEED_ACTIONS),
    ]


def _number(request: Request, key: str, high: int) -> int | None:
    return whole_number(request.query_params, key, high)
