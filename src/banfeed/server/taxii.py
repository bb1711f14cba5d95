"""A read-only TAXII 2.1 server over the feeds' STIX bundles (docs/sharing.md, "TAXII 2.1").

``/taxii2/`` (discovery) and ``/taxii2/feeds/`` (the one API root) describe the server and are
open to anyone: they hold no feed data. Each feed and each shard is a collection, listed and
read with its feed's ``auth`` and ``allow_from``, as ``/feeds/`` is. The objects are those of
the cached ``.stix.json`` rendering, cut once per rendering (:mod:`.taxii_objects`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from .. import metrics
from ..publish.stix import (
    STIX_FORMAT,
    STIX_MEDIA_TYPE,
    StixUnavailable,
    collection_id,
)
from ..publish.stix import (
    TAXII_API_ROOT as API_ROOT,
)
from .auth import real_client
from .taxii_objects import (
    CollectionIndex,
    TaxiiQueryError,
    added_range,
    envelope,
    index_of,
    manifest,
    page_of,
    parse_query,
    versions,
)

if TYPE_CHECKING:
    from .app import ServerState

TAXII_MEDIA_TYPE = "application/taxii+json;version=2.1"
READ_METHODS = ("GET", "HEAD")


def taxii_error(status: int, title: str, description: str | None = None) -> Response:
    document = {"title": title, "http_status": str(status)}
    if description:
        document["description"] = description
    headers = {"Allow": ", ".join(READ_METHODS)} if status == 405 else {}
    if status == 503:
        headers["Retry-After"] = "30"
    return _taxii(json.dumps(document).encode(), status, headers)


def _taxii(body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body, status_code=status, media_type=TAXII_MEDIA_TYPE, headers=headers)


def accepts_taxii(header: str | None) -> bool:
    """``Accept`` takes TAXII 2.1 (no header takes anything; no version means the latest)."""
    if not header:
        return True
    for part in header.split(","):
        kind, *params = (p.strip().lower() for p in part.split(";"))
        values = dict(p.partition("=")[::2] for p in params)
        if values.get("q", "1").strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        if kind in ("*/*", "application/*"):
            return True
        if kind == "application/taxii+json" and values.get("version", "2.1") == "2.1":
            return True
    return False


def taxii_routes(state: ServerState) -> list[BaseRoute]:
    """The TAXII routes over ``state`` (read at each request: a reload replaces its parts)."""
    indexes: dict[str, CollectionIndex] = {}
    building: dict[str, asyncio.Lock] = {}

    def names() -> list[str]:
        found = []
        for feed in state.access:
            found.append(feed)
            found.extend(state.cache.shards.get(feed, ()))
        return found

    def refusal(request: Request, name: str, *, count: bool) -> Response | None:
        access = state.access[state.cache.owner(name)]
        peer = request.client.host if request.client else ""
        host = real_client(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)
        status = access.refusal(host, request.headers.get("authorization"))
        if status is None:
            return None
        if count:
            metrics.FEED_REQUESTS.labels(name, str(status)).inc()
            reason = "address" if status == 403 else "credentials"
            metrics.FEED_REFUSALS.labels(name, reason).inc()
        if status == 403:
            return taxii_error(403, "forbidden", "this address may not read this collection")
        response = taxii_error(401, "unauthorized", "this collection needs its feed's credentials")
        response.headers["WWW-Authenticate"] = access.challenge(name)
        return response

    def readable(request: Request) -> list[str]:
        return [name for name in names() if refusal(request, name, count=False) is None]

    def collection(name: str) -> dict[str, Any]:
        return {
            "id": collection_id(name),
            "title": name,
            "description": f"The indicators of banfeed feed {name}, as /feeds/{name}.stix.json",
            "can_read": True,
            "can_write": False,
            "media_types": [STIX_MEDIA_TYPE],
        }

    def named(request: Request) -> str | None:
        wanted = request.path_params["collection"]
        return next((n for n in names() if collection_id(n) == wanted), None)

    async def index(name: str) -> CollectionIndex | None:
        lock = building.setdefault(name, asyncio.Lock())
        async with lock:  # one parse per rendering, however many clients page at once
            for _attempt in range(3):  # the served version may change under the rendering
                entry = state.cache.entries.get(name)
                rendered = state.cache.get(name, STIX_FORMAT) or await asyncio.to_thread(
                    state.cache.render, name, STIX_FORMAT
                )
                if rendered is None or entry is None:
                    return None
                if state.cache.entries.get(name) is not entry:
                    continue
                kept = indexes.get(name)
                if kept is not None and kept.body is rendered.body:
                    return kept
                version = entry.served.version
                made = await asyncio.to_thread(
                    index_of, rendered.body, version.created, version.number, rendered.etag
                )
                indexes[name] = made
                return made
            return None

    async def guarded(request: Request, kind: str) -> Response:
        """The objects, an object, its versions or the manifest of one collection."""
        name = named(request)
        if name is None:
            return taxii_error(404, "no such collection")
        refused = refusal(request, name, count=True)
        if refused is not None:
            return refused
        try:
            found = await index(name)
        except StixUnavailable as exc:
            return taxii_error(501, "not implemented", str(exc))
        if found is None:
            reason = "its store cannot be read" if state.cache.last_error else "not published yet"
            return taxii_error(503, "unavailable", f"collection {name}: {reason}; retry later")
        object_id = request.path_params.get("object")
        if object_id is not None and object_id not in found.by_id:
            return taxii_error(404, "no such object", f"{object_id} is not in {name}")
        try:
            query = parse_query(request.query_params, object_id)
            if kind == "versions":
                body, kept = versions(found, query)
                return _taxii(body, headers=_added(found, kept))
            page = page_of(found, query)
        except TaxiiQueryError as exc:
            return taxii_error(400, "bad request", str(exc))
        metrics.FEED_REQUESTS.labels(name, "200").inc()
        agent = request.headers.get("user-agent", "")
        peer = request.client.host if request.client else ""
        host = real_client(peer, request.headers.getlist("x-forwarded-for"), state.trusted_proxies)
        state.fetches.record(name, host, agent, found.etag, 200, int(state.clock()))
        body = manifest(found, page) if kind == "manifest" else envelope(found, page)
        return _taxii(body, headers=_added(found, page.positions))

    async def discovery(request: Request) -> Response:
        return _taxii(
            json.dumps(
                {
                    "title": state.cache.stix_identity,
                    "description": "banfeed's feeds as read-only TAXII 2.1 collections",
                    "default": API_ROOT,
                    "api_roots": [API_ROOT],
                }
            ).encode()
        )

    async def api_root(request: Request) -> Response:
        # Read-only: no request body is accepted, so the largest one is 0 octets.
        document = {
            "title": f"{state.cache.stix_identity} feeds",
            "versions": [TAXII_MEDIA_TYPE],
            "max_content_length": 0,
        }
        return _taxii(json.dumps(document).encode())

    async def collections(request: Request) -> Response:
        listed = [collection(name) for name in readable(request)]
        return _taxii(json.dumps({"collections": listed} if listed else {}).encode())

    async def one_collection(request: Request) -> Response:
        name = named(request)
        if name is None:
            return taxii_error(404, "no such collection")
        return refusal(request, name, count=False) or _taxii(json.dumps(collection(name)).encode())

    def endpoint(handler: Any) -> Any:
        async def checked(request: Request) -> Response:
            if request.method not in READ_METHODS:
                return taxii_error(405, "method not allowed", "these collections are read-only")
            if not accepts_taxii(request.headers.get("accept")):
                return taxii_error(406, "not acceptable", f"this server answers {TAXII_MEDIA_TYPE}")
            response: Response = await handler(request)
            return response

        return checked

    async def objects(request: Request) -> Response:
        return await guarded(request, "objects")

    async def versions_of(request: Request) -> Response:
        return await guarded(request, "versions")

    async def manifest_of(request: Request) -> Response:
        return await guarded(request, "manifest")

    base = API_ROOT + "collections/"
    table = [
        ("/taxii2/", discovery),
        (API_ROOT, api_root),
        (base, collections),
        (base + "{collection}/", one_collection),
        (base + "{collection}/objects/", objects),
        (base + "{collection}/objects/{object}/", objects),
        (base + "{collection}/objects/{object}/versions/", versions_of),
        (base + "{collection}/manifest/", manifest_of),
    ]
    return [Route(path, endpoint(handler)) for path, handler in table]


def _added(index: CollectionIndex, positions: Sequence[int]) -> dict[str, str]:
    """X-TAXII-Date-Added-First/Last: the earliest and latest date_added of what is answered."""
    found = added_range(index, positions)
    if found is None:
        return {}
    return {"X-TAXII-Date-Added-First": found[0], "X-TAXII-Date-Added-Last": found[1]}
