"""``/api/v1/``: JSON for scripts and the dashboard's own pages. Handlers parse, make one core
call, answer; errors are ``{"error": "..."}`` with 400 (bad input), 404, 401 or 403. A session
cookie or an API token (``Authorization: Bearer``) says who asks: see ``sessions.guarded``."""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import alerts, reports
from ..errors import BanfeedError, ConfigError, InputError
from ..net import parse_address
from . import overview
from .actions import ACTIONS, Action, ActionBody, act
from .bodies import TARGET_EXAMPLE, json_body
from .context import Web, store_failed
from .openapi import document
from .search import OffenderQuery, search
from .sessions import SECURITY_HEADERS, Session, guarded

PREFIX = "/api/v1"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _call(func: Any, *args: Any) -> JSONResponse:
    """Run a blocking core call off the event loop; banfeed's errors become statuses."""
    try:
        result = await asyncio.to_thread(func, *args)
    except (InputError, ConfigError) as exc:
        return _error(400, str(exc))
    except BanfeedError as exc:
        return _error(503, store_failed(exc))
    return JSONResponse(result)


def routes(web: Web) -> list[Route]:
    viewer = guarded(web, api=True)

    @viewer
    async def me(_request: Request, session: Session) -> Response:
        return JSONResponse(
            {
                "user": session.actor,
                "role": session.role.value,
                "csrf": session.csrf or None,
                "token": session.token,
            }
        )

    @viewer
    async def offenders(request: Request, _session: Session) -> Response:
        params = {k: request.query_params.getlist(k) for k in request.query_params}
        try:
            query = OffenderQuery.parse(params)
        except InputError as exc:
            return _error(400, str(exc))
        return await _call(lambda: search(web, query).record())

    @viewer
    async def offender(request: Request, _session: Session) -> Response:
        try:
            ip = parse_address(request.path_params["ip"])
        except InputError as exc:
            return _error(400, str(exc))
        try:
            detail = await asyncio.to_thread(reports.offender_detail, web.runtime(), ip)
        except BanfeedError as exc:
            return _error(503, store_failed(exc))
        if detail.offender is None and not any(v.listed for v in detail.feeds):
            return _error(404, f"{ip} is not in the store and no feed lists it")
        return JSONResponse(detail.record())

    @viewer
    async def feeds(_request: Request, _session: Session) -> Response:
        rt = web.runtime()
        return await _call(lambda: [overview.feed_record(f) for f in reports.feed_overviews(rt)])

    @viewer
    async def devices(_request: Request, _session: Session) -> Response:
        now = web.now()
        return await _call(lambda: [overview.device_record(d, now) for d in overview.devices(web)])

    @viewer
    async def summary(_request: Request, _session: Session) -> Response:
        return await _call(lambda: overview.overview(web).record())

    @viewer
    async def series(request: Request, _session: Session) -> Response:
        try:
            span = overview.parse_range(request.query_params.get("range"))
        except InputError as exc:
            return _error(400, str(exc))
        return await _call(lambda: overview.series(web, span).record())

    @viewer
    async def recent_alerts(_request: Request, _session: Session) -> Response:
        return await _call(lambda: alerts.records(overview.recent(web)))

    def action(name: Action) -> Route:
        async def handler(request: Request, session: Session) -> Response:
            body = await json_body(request, ActionBody, TARGET_EXAMPLE)
            if isinstance(body, JSONResponse):
                return body
            return await _call(act, web, name, body, session.actor)

        return Route(f"{PREFIX}/{name}", guarded(web, api=True)(handler), methods=["POST"])

    async def openapi(_request: Request) -> Response:
        return JSONResponse(document(), headers=SECURITY_HEADERS)

    return [
        Route(f"{PREFIX}/openapi.json", openapi, methods=["GET"]),
        Route(f"{PREFIX}/me", me, methods=["GET"]),
        Route(f"{PREFIX}/overview", summary, methods=["GET"]),
        Route(f"{PREFIX}/overview/series", series, methods=["GET"]),
        Route(f"{PREFIX}/alerts", recent_alerts, methods=["GET"]),
        Route(f"{PREFIX}/offenders", offenders, methods=["GET"]),
        Route(f"{PREFIX}/offenders/{{ip}}", offender, methods=["GET"]),
        Route(f"{PREFIX}/feeds", feeds, methods=["GET"]),
        Route(f"{PREFIX}/devices", devices, methods=["GET"]),
        *(action(name) for name in ACTIONS),
    ]
