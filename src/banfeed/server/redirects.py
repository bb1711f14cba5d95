"""Trailing-slash redirects that never name a host.

Starlette's router answers ``/dashboard`` with a redirect to ``http://<Host header>/dashboard/``:
the ``Location`` is built from what the client sent as ``Host``, so a forged ``Host`` (or a
cache in front keyed without it) sends clients elsewhere. Here the redirect is a path: the raw
path of the request with its trailing slash added or removed, never one starting with ``//`` or
``/\\`` (which a browser reads as another host).
"""

from __future__ import annotations

from starlette.responses import RedirectResponse
from starlette.routing import Match, Mount, Router
from starlette.types import ASGIApp, Receive, Scope, Send


def relative_slash_redirects(router: Router) -> None:
    """Turn ``router``'s (and its mounted routers') slash redirects into path-only ones."""
    router.redirect_slashes = False
    router.default = _SlashRedirect(router, router.default)
    for route in router.routes:
        inner = getattr(route.app, "router", route.app) if isinstance(route, Mount) else None
        if isinstance(inner, Router) and inner.redirect_slashes:
            relative_slash_redirects(inner)


class _SlashRedirect:
    def __init__(self, router: Router, fallback: ASGIApp) -> None:
        self.router, self.fallback = router, fallback

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        location = self.location(scope) if scope["type"] == "http" else None
        if location is None:
            await self.fallback(scope, receive, send)
        else:
            await RedirectResponse(location, status_code=307)(scope, receive, send)

    def location(self, scope: Scope) -> str | None:
        path: str = scope["path"]
        raw: bytes = scope.get("raw_path") or path.encode()
        if path in ("", "/") or path.startswith(("//", "/\\")) or raw.startswith((b"//", b"/\\")):
            return None
        if path.endswith("/") != raw.endswith(b"/"):  # an encoded slash (%2F) ends the path
            return None
        toggled = dict(scope, path=path[:-1] if path.endswith("/") else path + "/")
        if not any(route.matches(toggled)[0] is not Match.NONE for route in self.router.routes):
            return None
        target = raw[:-1] if raw.endswith(b"/") else raw + b"/"
        if not target.startswith(b"/") or target.startswith((b"//", b"/\\")):
            return None
        query: bytes = scope.get("query_string") or b""
        return (target + (b"?" + query if query else b"")).decode("latin-1")
