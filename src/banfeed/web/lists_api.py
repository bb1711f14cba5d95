"""``/api/v1/allowlist``, ``/bans``, ``/events`` and ``/offenders.csv``: the JSON (and CSV)
twins of the Allowlist, Bans and Events pages and of the search's download. Adding to the
allowlist, banning and unbanning are ``POST /api/v1/allow``, ``/ban`` and ``/unban`` (``api``);
only the removal is here."""

from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BanfeedError, InputError
from .actions import ActionBody
from .api import PREFIX, _call, _error
from .bodies import TARGET_EXAMPLE, json_body
from .context import Web, store_failed
from .lists import AllowQuery, BanQuery, EventQuery, allow_rows, ban_page, do, event_page
from .search import OffenderQuery, csv_response, export_query, search
from .sessions import Session, guarded


def _params(request: Request) -> dict[str, list[str]]:
    return {k: request.query_params.getlist(k) for k in request.query_params}


def routes(web: Web) -> list[Route]:
    viewer = guarded(web, api=True)

    @viewer
    async def allowlist(request: Request, _session: Session) -> Response:
        try:
            query = AllowQuery.parse(_params(request))
        except InputError as exc:
            return _error(400, str(exc))
        return await _call(lambda: {"allowlist": [r.record() for r in allow_rows(web, query)]})

    @viewer
    async def bans(request: Request, _session: Session) -> Response:
        try:
            query = BanQuery.parse(_params(request))
        except InputError as exc:
            return _error(400, str(exc))
        return await _call(lambda: ban_page(web, query).record())

    @viewer
    async def events(request: Request, _session: Session) -> Response:
        try:
            query = EventQuery.parse(_params(request))
        except InputError as exc:
            return _error(400, str(exc))
        return await _call(lambda: event_page(web, query).record())

    @viewer
    async def offenders_csv(request: Request, _session: Session) -> Response:
        try:
            query = export_query(OffenderQuery.parse(_params(request)))
            first = await asyncio.to_thread(search, web, query)
        except InputError as exc:
            return _error(400, str(exc))
        except BanfeedError as exc:
            return _error(503, store_failed(exc))
        return csv_response(first, web)

    @guarded(web, api=True)
    async def remove(request: Request, session: Session) -> Response:
        body = await json_body(request, ActionBody, TARGET_EXAMPLE)
        if isinstance(body, JSONResponse):
            return body
        return await _call(do, web, "remove", body, session.actor)

    return [
        Route(f"{PREFIX}/allowlist", allowlist, methods=["GET"]),
        Route(f"{PREFIX}/allowlist/remove", remove, methods=["POST"]),
        Route(f"{PREFIX}/bans", bans, methods=["GET"]),
        Route(f"{PREFIX}/events", events, methods=["GET"]),
        Route(f"{PREFIX}/offenders.csv", offenders_csv, methods=["GET"]),
    ]
