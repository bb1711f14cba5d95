"""The dashboard's Allowlist, Bans and Events pages, their confirm-then-act writes, and the CSV
download of the offenders search. Handlers parse, make one call into ``lists`` (or
``search``), render."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from ..errors import BanfeedError, ConfigError, InputError
from ..models import EventKind, Role
from ..net import parse_address, parse_network
from .actions import ActionBody
from .context import Web, store_failed
from .lists import (
    DONE_WORDS,
    EVENT_WINDOW,
    LIST_ACTIONS,
    PAGE_OF,
    AllowQuery,
    BanQuery,
    EventQuery,
    ListAction,
    allow_rows,
    ban_page,
    do,
    event_page,
    list_action,
)
from .pages import BASE, CONSEQUENCES, environment
from .search import OffenderQuery, csv_response, export_query, search
from .sessions import SECURITY_HEADERS, Session, guarded

LIST_CONSEQUENCES: dict[ListAction, str] = {
    "allow": CONSEQUENCES["allow"],
    "remove": "Feeds may publish it again at the next refresh (about a second): its active "
    "offenders and bans come back; the config's [allowlist] and protect ranges still hold.",
    "ban": CONSEQUENCES["ban"],
    "unban": CONSEQUENCES["unban"] + " Bans inside the network are removed with it.",
}
FIELDS = ("target", "ttl", "expires", "note", "force")  # what a confirmation carries along
FLASH = ("done", "target")  # what a write's redirect adds to a page's own query


def _params(request: Request) -> dict[str, list[str]]:
    return {k: request.query_params.getlist(k) for k in request.query_params}


def _done(request: Request, page: str) -> str | None:
    """The flash after a write: fixed words and a network, never text from the URL."""
    action = list_action(request.query_params.get("done", ""))
    try:
        target = _shown(request.query_params.get("target", ""))
    except InputError:
        return None
    if action is None or PAGE_OF[action] != page:
        return None
    return f"{DONE_WORDS[action]} {target}"


def routes(web: Web) -> list[BaseRoute]:
    env = environment()
    env.globals.update(event_kinds=[k.value for k in EventKind], window=EVENT_WINDOW)
    viewer = guarded(web, api=False)
    admin_page = guarded(web, api=False, role=Role.ADMIN)

    def page(name: str, session: Session, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(user=session, csrf=session.csrf, **context)
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def listing(
        request: Request, session: Session, name: str, model: Any, read: Any
    ) -> Response:
        try:
            params = {k: v for k, v in _params(request).items() if k not in FLASH}
            query = model.parse(params)
            found = await asyncio.to_thread(read, web, query)
        except InputError as exc:
            return page(name, session, 400, query=model(), found=None, error=str(exc), done=None)
        except BanfeedError as exc:
            return page("error.html", session, 503, message=store_failed(exc))
        done = _done(request, name.removesuffix(".html"))
        return page(name, session, query=query, found=found, error=None, done=done)

    @viewer
    async def allowlist(request: Request, session: Session) -> Response:
        return await listing(request, session, "allowlist.html", AllowQuery, allow_rows)

    @viewer
    async def bans(request: Request, session: Session) -> Response:
        return await listing(request, session, "bans.html", BanQuery, ban_page)

    @viewer
    async def events(request: Request, session: Session) -> Response:
        return await listing(request, session, "events.html", EventQuery, event_page)

    @viewer
    async def offenders_csv(request: Request, session: Session) -> Response:
        try:
            query = export_query(OffenderQuery.parse(_params(request)))
            first = await asyncio.to_thread(search, web, query)
        except InputError as exc:
            return page("error.html", session, 400, message=str(exc))
        except BanfeedError as exc:
            return page("error.html", session, 503, message=store_failed(exc))
        return csv_response(first, web)

    def confirmation(
        session: Session, action: ListAction, values: dict[str, str], status: int, error: str | None
    ) -> Response:
        return page(
            "list_confirm.html",
            session,
            status,
            action=action,
            back=PAGE_OF[action],
            values=values,
            consequence=LIST_CONSEQUENCES[action],
            error=error,
        )

    @admin_page
    async def confirm(request: Request, session: Session) -> Response:
        action = list_action(request.query_params.get("action", ""))
        values = {k: request.query_params.get(k, "").strip() for k in FIELDS}
        if action is None:
            return page("error.html", session, 400, message="choose an action")
        return confirmation(session, action, values, 200, None)

    def action_route(action: ListAction) -> Route:
        async def handler(request: Request, session: Session) -> Response:
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
            values = {k: data.get(k, "").strip() for k in FIELDS}
            try:
                body = ActionBody.parse(data)
                await asyncio.to_thread(do, web, action, body, session.actor)
            except (InputError, ConfigError) as exc:
                return confirmation(session, action, values, 400, str(exc))
            except BanfeedError as exc:
                return page("error.html", session, 503, message=store_failed(exc))
            shown = _shown(body.target)
            done = urlencode({"done": action, "target": shown})
            return RedirectResponse(f"{BASE}/{PAGE_OF[action]}?{done}", status_code=303)

        return Route(f"{BASE}/lists/{action}", guarded(web, api=False)(handler), methods=["POST"])

    return [
        Route(f"{BASE}/allowlist", allowlist, methods=["GET"]),
        Route(f"{BASE}/bans", bans, methods=["GET"]),
        Route(f"{BASE}/events", events, methods=["GET"]),
        Route(f"{BASE}/offenders.csv", offenders_csv, methods=["GET"]),
        Route(f"{BASE}/lists/confirm", confirm, methods=["GET"]),
        *(action_route(action) for action in LIST_ACTIONS),
    ]


def _shown(target: str) -> str:
    """How a done target is named: an address as itself, a network in CIDR."""
    try:
        return str(parse_address(target))
    except InputError:
        return str(parse_network(target))
