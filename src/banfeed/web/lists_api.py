"""``/api/v1/allowlist``, ``/bans``, ``/events`` and ``/offenders.csv``: the JSON (and CSV)
twins of the Allowlist, Bans and Events pages and of the search's download. Adding to the
allowlist, banning and unbanning are ``POST /api/v1/allow``, ``/ban`` and ``/unban`` (``api``);
only the removal is here."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..errors import BanfeedError, InputError
from .actions import ActionBody
from .api import PREFIX, _call, _error
from .bodies import TARGET_EXAMPLE, json_body
from .context import Web, store_failed
from .lists import AllowQuery, BanQuery, EventQuery, allow_rows, ban_page, do, event_page
from .search import OffenderQuery, Query, csv_response, export_query, search
from .sessions import Session, guarded

Q = TypeVar("Q", bound=Query)


def _params(request: Request) -> dict[str, list[str]]:
    return {k: request.query_params.getlist(k) for k in request.query_params}


def routes(web: Web) -> list[Route]:
    viewer = guarded(web, api=True)

    def reader(model: type[Q], answer: Callable[[Q], dict[str, Any]]) -> Any:
        """A read route: the query string parsed into ``model`` (400 if it is not one), then
        ``answer`` of it off the event loop."""

        @viewer
        async def read(request: Request, _session: Session) -> Response:
            try:
                query = model.parse(_params(request))
            except InputError as exc:
                return _error(400, str(exc))
            return await _call(lambda: answer(query))

        return read

    allowlist = reader(
        AllowQuery, lambda q: {"allowlist": [r.record() for r in allow_rows(web, q)]}
    )
    bans = reader(BanQuery, lambda q: ban_page(web, q).record())
    events = reader(EventQuery, lambda q: event_page(web, q).record())

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
