"""The dashboard's pages: server-rendered (Jinja2), complete without JavaScript. Reads go
through the same report functions as the CLI and the API; writes through ``actions``."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from .. import __version__, reports
from ..errors import BanfeedError, ConfigError, InputError
from ..models import Role
from ..net import parse_address
from ..timeutil import iso
from . import accounts, overview
from .actions import ACTIONS, Action, ActionBody, act, everywhere_devices
from .context import Web, store_failed
from .search import SORTS, STATES, OffenderQuery, search
from .sessions import (
    LOGIN_COOKIE,
    SECURITY_HEADERS,
    SESSION_COOKIE,
    Session,
    current,
    guarded,
    login_token,
    login_token_ok,
    refusal,
    safe_next,
    same_origin,
    session_cookie,
    set_session,
)

log = logging.getLogger("banfeed.dashboard")

BASE = "/dashboard"
STATIC = Path(__file__).parent / "static"

CONSEQUENCES = {
    "unban": "Every feed stops publishing it at the next refresh (about a second); a later "
    "offense from a FortiGate lists it again.",
    "unban-everywhere": "As unban, and then it is released from the quarantine of every "
    "configured FortiGate (each needs its API admin's authgrp read-write: banfeed "
    "fortigate-config --unban-everywhere prints it), as banfeed unban --everywhere does.",
    "ban": "Every feed publishes it, whatever the FortiGates report, until the ban expires "
    "or it is unbanned.",
    "allow": "No feed publishes it while the entry lasts; a large drop is held by the "
    "mass-drop guard until a feed is approved.",
}


def _time(epoch: int | None) -> str:
    """Minutes are enough on a page: ``2026-12-08 10:31``; the title carries the full time."""
    return (iso(epoch) or "—")[:16].replace("T", " ")


def environment() -> Environment:
    env = Environment(
        loader=PackageLoader("banfeed.web", "templates"),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["time"] = _time
    env.filters["iso"] = iso
    env.filters["path"] = lambda text: quote(str(text), safe="")
    env.globals.update(version=__version__, base=BASE, sorts=SORTS, states=STATES)
    return env


def routes(web: Web) -> list[BaseRoute]:
    env = environment()
    viewer = guarded(web, api=False)
    admin_page = guarded(web, api=False, role=Role.ADMIN)

    def page(name: str, session: Session | None, status: int = 200, **context: Any) -> HTMLResponse:
        html = env.get_template(name).render(
            user=session,
            csrf=session.csrf if session else "",
            **context,
        )
        return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)

    async def index(_request: Request) -> Response:
        return RedirectResponse(f"{BASE}/", status_code=308)

    @viewer
    async def home(request: Request, session: Session) -> Response:
        found = await asyncio.to_thread(overview.page, web, request.query_params.get("range"))
        return page(
            "overview.html",
            session,
            o=found,
            words=overview.feed_words,
            device_words=overview.device_words,
        )

    @viewer
    async def offenders(request: Request, session: Session) -> Response:
        params = {k: request.query_params.getlist(k) for k in request.query_params}
        try:
            query = OffenderQuery.parse(params)
            found = await asyncio.to_thread(search, web, query)
        except InputError as exc:
            query = OffenderQuery()
            return page("offenders.html", session, 400, query=query, result=None, error=str(exc))
        return page("offenders.html", session, query=query, result=found, error=None)

    @viewer
    async def offender(request: Request, session: Session) -> Response:
        try:
            ip = parse_address(request.path_params["ip"])
        except InputError as exc:
            return page("error.html", session, 400, message=str(exc))
        detail = await asyncio.to_thread(reports.offender_detail, web.runtime(), ip)
        record = detail.record()
        timeline = [
            (o.created, "offense", f"{o.device}/{o.vdom}", o.source) for o in detail.offenses
        ] + [(e.time, e.kind.value, e.actor, e.detail) for e in detail.events]
        timeline.sort(key=lambda item: item[0], reverse=True)
        done = request.query_params.get("done")
        return page(
            "offender.html",
            session,
            ip=str(ip),
            detail=detail,
            record=record,
            timeline=timeline,
            done=done if done in ACTIONS else None,
        )

    @admin_page
    async def confirm(request: Request, session: Session) -> Response:
        action = request.query_params.get("action", "")
        target = request.query_params.get("target", "").strip()
        if action not in ACTIONS or not target:
            return page("error.html", session, 400, message="choose an action and a target")
        return page(
            "confirm.html",
            session,
            action=action,
            target=target,
            consequence=CONSEQUENCES[action],
            devices=everywhere_devices(web.host.config),
            error=None,
        )

    def action_route(name: Action) -> Route:
        async def handler(request: Request, session: Session) -> Response:
            form = await request.form()
            data = {k: v for k, v in form.items() if isinstance(v, str)}
            target = data.get("target", "").strip()
            try:
                body = ActionBody.parse(data)
                result = await asyncio.to_thread(act, web, name, body, session.actor)
            except (InputError, ConfigError) as exc:
                return page(
                    "confirm.html",
                    session,
                    400,
                    action=name,
                    target=target,
                    consequence=CONSEQUENCES[name],
                    devices=everywhere_devices(web.host.config),
                    error=str(exc),
                )
            except BanfeedError as exc:
                return page("error.html", session, 503, message=store_failed(exc))
            if name == "unban-everywhere":  # each device's outcome, on the page that follows
                return page("confirm.html", session, action=name, target=target, result=result)
            try:
                shown = str(parse_address(target))
            except InputError:  # a network: the overview shows the feeds it changes
                return RedirectResponse(f"{BASE}/?{urlencode({'done': name})}", 303)
            return RedirectResponse(f"{BASE}/offenders/{quote(shown)}?done={name}", 303)

        return Route(f"{BASE}/actions/{name}", guarded(web, api=False)(handler), methods=["POST"])

    async def login(request: Request) -> Response:
        target = safe_next(request.query_params.get("next"))
        if current(web, request) is not None:
            return RedirectResponse(target, status_code=303)
        return _login_form(target, None, 200)

    def _login_form(target: str, error: str | None, status: int) -> Response:
        cookie, token = login_token(web)
        response = page("login.html", None, status, next=target, login_csrf=token, error=error)
        response.set_cookie(
            LOGIN_COOKIE, cookie, max_age=3600, path=BASE, httponly=True, samesite="strict"
        )
        return response

    async def login_post(request: Request) -> Response:
        form = await request.form()
        fields = {k: v for k, v in form.items() if isinstance(v, str)}
        target = safe_next(fields.get("next"))
        address = request.client.host if request.client else "?"
        now = web.now()
        if not same_origin(web, request):
            return refusal(False, 403, "cross-site request refused")
        if not login_token_ok(web, request, fields.get("csrf")):
            return _login_form(target, "the form expired; sign in again", 403)
        if web.throttle.blocked(address, now):
            log.warning("login from %s refused: too many failures", address)
            return _login_form(target, "too many failed logins; wait 15 minutes", 429)
        name, password = fields.get("username", "").strip(), fields.get("password", "")
        user = await asyncio.to_thread(accounts.authenticate, web.host.store, name, password)
        if user is None:
            web.throttle.failed(address, now)
            log.warning("failed dashboard login for %r from %s", name[:64], address)
            return _login_form(target, "wrong user name or password", 401)
        web.throttle.succeeded(address)
        log.info("dashboard login: %s (%s) from %s", user.name, user.role.value, address)
        cookie, _ = session_cookie(web, user)
        response = RedirectResponse(target, status_code=303)
        set_session(response, request, web, cookie)
        response.delete_cookie(LOGIN_COOKIE, path=BASE)
        return response

    async def logout(_request: Request, session: Session) -> Response:
        await asyncio.to_thread(accounts.end_sessions, web.host.store, session.name)
        log.info("dashboard logout: %s", session.name)
        response = RedirectResponse(f"{BASE}/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    return [
        Route(BASE, index, methods=["GET"]),
        Route(f"{BASE}/", home, methods=["GET"], name="overview"),
        Route(f"{BASE}/offenders", offenders, methods=["GET"]),
        Route(f"{BASE}/offenders/{{ip}}", offender, methods=["GET"]),
        Route(f"{BASE}/confirm", confirm, methods=["GET"]),
        *(action_route(name) for name in ACTIONS),
        Route(f"{BASE}/login", login, methods=["GET"], name="login"),
        Route(f"{BASE}/login", login_post, methods=["POST"]),
        Route(
            f"{BASE}/logout",
            guarded(web, api=False, write_role=Role.VIEWER)(logout),
            methods=["POST"],
        ),
        Mount(f"{BASE}/static", StaticFiles(directory=STATIC), name="static"),
    ]
