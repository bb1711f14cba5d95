"""The HTTP face of banfeed: feeds, health, metrics and a small status page.

Handlers are thin: they read what :class:`FeedCache` already rendered and answer with the HTTP
semantics a FortiGate relies on (strong ETag, 304, gzip, no empty 200 when the store is down).
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from .. import metrics
from ..net import IPNetwork
from ..publish.render import FORMATS
from ..publish.stix import STIX_FORMAT, StixUnavailable
from ..timeutil import Clock, iso
from .auth import STATUS_REALM, FeedAccess, real_client
from .cache import FeedCache, FeedEntry, Rendered
from .consumers import Fetches
from .redirects import relative_slash_redirects
from .taxii import taxii_error, taxii_routes

log = logging.getLogger(__name__)


@dataclass
class ServerState:
    cache: FeedCache
    access: Mapping[str, FeedAccess]
    clock: Clock
    interval: int  # collection interval, for /readyz
    collecting: bool
    fetches: Fetches = field(default_factory=Fetches)
    trusted_proxies: tuple[IPNetwork, ...] = ()  # whose X-Forwarded-For names the client
    status: FeedAccess = field(default_factory=FeedAccess)  # /metrics and / ([server.status])


def create_app(state: ServerState, extra: Sequence[BaseRoute] = ()) -> Starlette:
    """The feed server; ``extra``: more routes beside it (the dashboard, ``banfeed.web``)."""

    async def feed(request: Request) -> Response:
        name, fmt = request.path_params["name"], request.path_params["fmt"]
        # NAME.stix.json: NAME's STIX bundle (a feed named "x.stix" keeps its own x.stix.json)
        if fmt == "json" and name.endswith(".stix") and state.cache.owner(name) not in state.access:
            name, fmt = name.removesuffix(".stix"), STIX_FORMAT
        access = state.access.get(state.cache.owner(name))  # a shard: its feed's auth
        if access is None or fmt not in (*FORMATS, STIX_FORMAT):
            return PlainTextResponse("no such feed\n", status_code=404)
        peer = request.client.host if request.client else ""
        forwarded = request.headers.getlist("x-forwarded-for")
        host = real_client(peer, forwarded, state.trusted_proxies)
        status, response = await _feed_response(state, request, name, fmt, access, host)
        metrics.FEED_REQUESTS.labels(name, str(status)).inc()
        if status in (401, 403):  # refusals are counted, never recorded: they cost no rows
            reason = "address" if status == 403 else "credentials"
            metrics.FEED_REFUSALS.labels(name, reason).inc()
            return response
        etag = response.headers.get("etag")
        agent = request.headers.get("user-agent", "")
        state.fetches.record(name, host, agent, etag, status, int(state.clock()))
        return response

    async def healthz(_request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(_request: Request) -> Response:
        # Ready means "can serve feeds" (what a load balancer asks); collection health is
        # reported beside it and does not make a replica that serves recorded versions unready.
        problems = readiness_problems(state)
        body = {
            "ready": not problems,
            "problems": problems,
            "collection": collection_problems(state),
            "publishing": public_text(state, state.cache.publish_error),
        }
        return JSONResponse(body, status_code=503 if problems else 200)

    def status_refusal(request: Request) -> Response | None:
        """``[server.status]``: /metrics and / as a feed is guarded (/healthz, /readyz open)."""
        peer = request.client.host if request.client else ""
        host = real_client(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)
        status = state.status.refusal(host, request.headers.get("authorization"))
        if status == 403:
            return PlainTextResponse("forbidden\n", status_code=403)
        if status == 401:
            challenge = {"WWW-Authenticate": state.status.challenge_for(STATUS_REALM)}
            return PlainTextResponse("unauthorized\n", status_code=401, headers=challenge)
        return None

    async def metrics_endpoint(request: Request) -> Response:
        return status_refusal(request) or Response(
            generate_latest(), media_type=CONTENT_TYPE_LATEST
        )

    async def index(request: Request) -> Response:
        return status_refusal(request) or HTMLResponse(_index_html(state))

    routes = [
        Route("/feeds/{name}.{fmt}", feed, methods=["GET", "HEAD"]),
        Route("/healthz", healthz, methods=["GET", "HEAD"]),
        Route("/readyz", readyz, methods=["GET", "HEAD"]),
        Route("/metrics", metrics_endpoint),
        Route("/", index),
        *taxii_routes(state),
        *extra,
    ]
    app = Starlette(routes=routes, exception_handlers={404: _not_found})
    relative_slash_redirects(app.router)
    return app


async def _not_found(request: Request, _exc: Exception) -> Response:
    """No route: the API answers in its documented shape, everything else in plain text."""
    if request.url.path.startswith("/api/"):
        message = "no such API route: see /api/v1/openapi.json"
        return JSONResponse({"error": message}, status_code=404)
    if request.url.path.startswith("/taxii2/"):
        return taxii_error(404, "not found", "no such TAXII resource")
    return PlainTextResponse("Not Found", status_code=404)


async def _feed_response(
    state: ServerState, request: Request, name: str, fmt: str, access: FeedAccess, host: str
) -> tuple[int, Response]:
    if not access.client_allowed(host):
        return 403, PlainTextResponse("forbidden\n", status_code=403)
    if not access.authorized(request.headers.get("authorization")):
        challenge = {"WWW-Authenticate": access.challenge(name)}
        return 401, PlainTextResponse("unauthorized\n", status_code=401, headers=challenge)
    rendered: Rendered | None
    if fmt == "txt":
        rendered = state.cache.get(name, fmt)
    else:
        try:
            rendered = state.cache.get(name, fmt) or await asyncio.to_thread(
                state.cache.render, name, fmt
            )
        except StixUnavailable as exc:  # this server lacks the banfeed[stix] extra
            return 501, PlainTextResponse(f"{exc}\n", status_code=501)
    if rendered is None:
        # Never an empty 200: a FortiGate empties its feed on that, and keeps its list on 503.
        # The body is for the consumer: why in its terms, never the store's path or URL (the
        # operator's log, /readyz and the status page say what failed).
        reason = "its store cannot be read" if state.cache.last_error else "not published yet"
        return 503, PlainTextResponse(
            f"feed {name} unavailable: {reason}; keep the last list and retry later\n",
            status_code=503,
            headers={"Retry-After": "30"},
        )
    gzip_ok = accepts_gzip(request.headers.get("accept-encoding", ""))
    etag = rendered.etag[:-1] + '-gzip"' if gzip_ok else rendered.etag
    headers = {
        "ETag": etag,
        "Last-Modified": rendered.last_modified,
        "Cache-Control": "no-cache",
        "Vary": "Accept-Encoding",
    }
    if _not_modified(request, rendered, etag):
        return 304, Response(status_code=304, headers=headers)
    if gzip_ok:
        headers["Content-Encoding"] = "gzip"
        return 200, Response(rendered.gzipped, media_type=rendered.media_type, headers=headers)
    return 200, Response(rendered.body, media_type=rendered.media_type, headers=headers)


def accepts_gzip(header: str) -> bool:
    """``Accept-Encoding`` names gzip (or ``*``) with a non-zero quality."""
    for part in header.lower().split(","):
        coding, _, params = part.strip().partition(";")
        if coding.strip() not in ("gzip", "x-gzip", "*"):
            continue
        quality = params.strip().removeprefix("q=") if params.strip().startswith("q=") else "1"
        try:
            return float(quality) > 0
        except ValueError:
            return False
    return False


def _not_modified(request: Request, rendered: Rendered, etag: str) -> bool:
    inm = request.headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or etag in tags or rendered.etag in tags
    ims = request.headers.get("if-modified-since")
    if ims:
        try:
            since = parsedate_to_datetime(ims)
            modified = parsedate_to_datetime(rendered.last_modified)
        except (TypeError, ValueError):
            return False
        return since.tzinfo is not None and modified <= since
    return False


def readiness_problems(state: ServerState) -> list[str]:
    """Why this server cannot serve every feed now (empty: ready)."""
    cache = state.cache
    if not cache.healthy:
        return [f"store: {public_text(state, cache.last_error) or 'not read yet'}"]
    missing = [name for name in state.access if name not in cache.entries]
    return [f"feed {name}: no version published yet" for name in missing]


# URLs and absolute paths in an error's text: the store's location and the host's layout are
# for the operator's log, not for whoever can reach /readyz or the status page.
_LOCATIONS = re.compile(r"[a-z][a-z0-9+.-]*://\S+|(?<![\w.])/[^\s'\",;:]+", re.IGNORECASE)


def public_text(state: ServerState, text: str | None) -> str | None:
    """An error's text as unauthenticated clients see it: no store URL, URL or path."""
    if text is None:
        return None
    text = text.replace(f"store {state.cache.store.display_url}: ", "")
    return _LOCATIONS.sub("…", text)


def collection_problems(state: ServerState) -> list[str]:
    """Why collection looks unhealthy (reported, not part of readiness)."""
    if not state.collecting:
        return []
    cache = state.cache
    if cache.last_cycle is None:
        return ["no collection cycle has completed yet"]
    if state.clock() - cache.last_cycle > 3 * state.interval:
        return [f"last collection cycle at {iso(cache.last_cycle)}, over 3 intervals ago"]
    return []


def _feed_words(entry: FeedEntry | None) -> tuple[str, str, str, str]:
    if entry is None:
        return "—", "—", "—", "not published yet"
    version, fstate = entry.served.version, entry.served.state
    if fstate.pinned is not None:
        words = f"pinned to version {version.number} by {fstate.pinned_by or 'an operator'}"
    elif fstate.held_since is not None:
        words = f"held since {iso(fstate.held_since)}: {fstate.hold_reason}"
    else:
        words = f"version {version.number}"
    return str(version.entries), str(version.overflow), iso(version.created) or "", words


def _index_html(state: ServerState) -> str:
    rows = []
    for name in state.access:
        size, overflow, changed, words = _feed_words(state.cache.entries.get(name))
        link = html.escape(f"/feeds/{name}.txt")
        rows.append(
            f"<tr><td><a href='{link}'>{html.escape(name)}</a></td><td>{size}</td>"
            f"<td>{overflow}</td><td>{html.escape(changed)}</td><td>{html.escape(words)}</td></tr>"
        )
    problems = "".join(f"<li>{html.escape(p)}</li>" for p in readiness_problems(state))
    collection = "".join(f"<li>{html.escape(p)}</li>" for p in collection_problems(state))
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>banfeed</title></head><body>"
        "<h1>banfeed</h1><table><tr><th>feed</th><th>entries</th><th>overflow</th>"
        f"<th>published</th><th>state</th></tr>{''.join(rows)}</table>"
        f"<h2>serving</h2><ul>{problems or '<li>ready</li>'}</ul>"
        f"<h2>collection</h2><ul>{collection or '<li>ok</li>'}</ul>"
        "<p><a href='/metrics'>metrics</a> · <a href='/readyz'>readyz</a></p></body></html>"
    )
