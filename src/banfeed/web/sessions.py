"""Who is asking, and may they: signed session cookies, the proxy header, CSRF, roles.

A session is a signed cookie (itsdangerous, HMAC-SHA1 over JSON) holding the user's name, the
user's session epoch, a CSRF token and when it was issued; it is checked against the store on
every request, so removing a user, a new password or a logout ends it at once, and it expires
``[dashboard] session_ttl`` after login. Every state-changing request must carry the session's
CSRF token (a form field ``csrf`` or the ``X-CSRF-Token`` header) and, when the browser says
where it comes from (``Origin``, else ``Referer``), come from this site.

On ``/api/v1`` only, ``Authorization: Bearer <token>`` names an API token instead (``tokens``):
such a request is judged on the token alone — cookies and the proxy header are ignored — and
needs no CSRF token or origin, since a browser never sends a bearer token on its own.
"""

from __future__ import annotations

import functools
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

from itsdangerous import BadSignature, URLSafeSerializer
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response

from ..errors import InputError, StoreError
from ..models import Role, User
from ..net import NetworkSet, parse_address
from .context import Web, store_failed
from .tokens import authenticate_token

log = logging.getLogger("banfeed.dashboard")

LOGIN_PATH = "/dashboard/login"
SESSION_COOKIE = "banfeed_session"
LOGIN_COOKIE = "banfeed_login"  # the CSRF token of the login form, before any session
LOGIN_TTL = 3600
CSRF_HEADER = "x-csrf-token"
WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
API_CHALLENGE = 'Bearer realm="banfeed api"'

# On every dashboard and API answer: no framing, no third-party anything, no caching.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Session:
    """Who is asking: a signed-in user (a cookie or the proxy header) or an API token."""

    name: str  # the user's, or the token's
    role: Role
    csrf: str = ""  # "" for a token: it carries no ambient authority to forge
    cookie: str | None = None  # a new cookie to set (a proxy-header login)
    token: bool = False

    @property
    def actor(self) -> str:
        """Who the audit events name: the user, or ``token:NAME``."""
        return f"token:{self.name}" if self.token else self.name

    @classmethod
    def of(cls, user: User, csrf: str, cookie: str | None = None) -> Session:
        return cls(user.name, user.role, csrf, cookie)


def _serializer(web: Web, salt: str) -> URLSafeSerializer:
    return URLSafeSerializer(web.secret, salt=salt)


def session_cookie(web: Web, user: User, csrf: str | None = None) -> tuple[str, str]:
    """A signed cookie value for ``user`` and its CSRF token."""
    csrf = csrf or secrets.token_urlsafe(32)
    payload = {"u": user.name, "e": user.session_epoch, "c": csrf, "t": web.now()}
    return str(_serializer(web, "banfeed-session").dumps(payload)), csrf


def _from_cookie(web: Web, request: Request) -> tuple[User, str] | None:
    raw = request.cookies.get(SESSION_COOKIE)
    if not raw:
        return None
    try:
        payload = _serializer(web, "banfeed-session").loads(raw)
        name, epoch, csrf, issued = payload["u"], payload["e"], payload["c"], payload["t"]
    except (BadSignature, KeyError, TypeError):
        return None
    if not isinstance(name, str) or not isinstance(csrf, str) or not isinstance(issued, int):
        return None
    if web.now() - issued >= web.host.config.dashboard.session_ttl or issued > web.now() + 60:
        return None
    with web.host.store.read() as tx:
        user = tx.get_user(name)
    if user is None or user.session_epoch != epoch:
        return None
    return user, csrf


_NOT_PROXIED = object()  # the request did not come through the trusted proxy with its header


def _from_proxy(web: Web, request: Request) -> User | None | object:
    """The proxy header's user (None: a name that is no user) when the request comes from a
    trusted proxy address with the header; else ``_NOT_PROXIED``."""
    dashboard = web.host.config.dashboard
    if not dashboard.proxy_header or request.client is None:
        return _NOT_PROXIED
    try:
        client = parse_address(request.client.host)
    except InputError:
        return _NOT_PROXIED
    if NetworkSet((n, True) for n in dashboard.proxy_from).match(client) is None:
        return _NOT_PROXIED
    name = request.headers.get(dashboard.proxy_header, "").strip()
    if not name:
        return _NOT_PROXIED
    with web.host.store.read() as tx:
        user = tx.get_user(name)
    if user is None:
        log.warning("proxy header names %r, who is not a dashboard user: refused", name[:64])
    return user


def current(web: Web, request: Request) -> Session | None:
    """The session of this request, or None (anonymous). Through the trusted proxy, its
    header decides who it is, whatever cookie comes along."""
    found = _from_cookie(web, request)
    proxied = _from_proxy(web, request)
    if isinstance(proxied, User):
        if found is not None and found[0].name == proxied.name:
            return Session.of(proxied, found[1])
        cookie, csrf = session_cookie(web, proxied)
        return Session.of(proxied, csrf, cookie)
    if proxied is None or found is None:
        return None
    return Session.of(*found)


def bearer(request: Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header; None without one. Other schemes are
    not ours (a browser may resend the status page's Basic credentials anywhere on the site)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def token_session(web: Web, presented: str) -> Session | None:
    """The session of a live API token, else None (unknown, revoked or expired)."""
    token = authenticate_token(web.host.store, presented, web.now())
    return None if token is None else Session(token.name, token.role, token=True)


def set_session(response: Response, request: Request, web: Web, value: str) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        value,
        max_age=web.host.config.dashboard.session_ttl,
        path="/",
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="lax",
    )


def same_origin(web: Web, request: Request) -> bool:
    """``Origin`` (else ``Referer``), when the browser sends one, names this site: the
    request's own scheme and host, or ``[server] public_url``. Absent both (a script), the
    CSRF token alone decides."""
    origin = request.headers.get("origin")
    if origin is None:
        referer = request.headers.get("referer")
        if referer is None:
            return True
        parts = urlsplit(referer)
        origin = f"{parts.scheme}://{parts.netloc}"
    if origin == "null":
        return False
    own = {f"{request.url.scheme}://{request.headers.get('host', '')}"}
    public = web.host.config.server.public_url
    if public:
        parts = urlsplit(public)
        own.add(f"{parts.scheme}://{parts.netloc}")
    return origin.rstrip("/") in own


def csrf_ok(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


Handler = Callable[[Request, Session], Awaitable[Response]]


def refusal(api: bool, status: int, message: str, challenge: str | None = None) -> Response:
    headers = dict(SECURITY_HEADERS)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    if api:
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return PlainTextResponse(message + "\n", status_code=status, headers=headers)


def guarded(
    web: Web, *, api: bool, role: Role = Role.VIEWER, write_role: Role = Role.ADMIN
) -> Callable[[Handler], Any]:
    """Wrap a handler: a session is required (``role`` at least); a state-changing request
    needs ``write_role`` (admin: only logout is open to viewers), this site's origin and the
    session's CSRF token. On the API an ``Authorization: Bearer`` token stands instead of the
    session (then neither origin nor CSRF token is asked)."""

    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            write = request.method in WRITE_METHODS
            presented = bearer(request) if api else None
            session = current(web, request) if presented is None else token_session(web, presented)
            if session is None and presented is not None:
                client = request.client.host if request.client else "?"
                log.warning("API request from %s with an unknown or expired token", client)
                challenge = f'{API_CHALLENGE}, error="invalid_token"'
                return refusal(api, 401, "unknown, revoked or expired API token", challenge)
            if session is None:
                if api:
                    message = "sign in (POST /dashboard/login) or send an API token"
                    return refusal(api, 401, message, API_CHALLENGE)
                if write:
                    return refusal(api, 401, "sign in first: POST /dashboard/login")
                target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
                return RedirectResponse(f"{LOGIN_PATH}?{urlencode({'next': target})}", 303)
            if write and not session.token:
                if not same_origin(web, request):
                    log.warning("cross-site %s %s refused", request.method, request.url.path)
                    return refusal(api, 403, "cross-site request refused")
                if api:
                    given = request.headers.get(CSRF_HEADER)
                else:
                    form = await request.form()
                    field = form.get("csrf")
                    given = field if isinstance(field, str) else None
                if not csrf_ok(session.csrf, given):
                    return refusal(api, 403, "missing or wrong CSRF token; reload the page")
            needed = write_role if write else role
            if needed is Role.ADMIN and session.role is not Role.ADMIN:
                scope = f'{API_CHALLENGE}, error="insufficient_scope"' if session.token else None
                message = f"{session.actor} is a viewer; this needs an admin"
                return refusal(api, 403, message, scope)
            try:
                response = await handler(request, session)
            except StoreError as exc:  # one a handler did not answer itself
                return refusal(api, 503, store_failed(exc))
            if session.cookie is not None:
                set_session(response, request, web, session.cookie)
            response.headers.update(SECURITY_HEADERS)
            return response

        return endpoint

    return wrap


def login_token(web: Web) -> tuple[str, str]:
    """A signed cookie and the token the login form carries (CSRF before any session)."""
    token = secrets.token_urlsafe(32)
    cookie = _serializer(web, "banfeed-login").dumps({"c": token, "t": web.now()})
    return str(cookie), token


def login_token_ok(web: Web, request: Request, given: str | None) -> bool:
    raw = request.cookies.get(LOGIN_COOKIE)
    if not raw:
        return False
    try:
        payload = _serializer(web, "banfeed-login").loads(raw)
        token, issued = payload["c"], payload["t"]
    except (BadSignature, KeyError, TypeError):
        return False
    fresh = isinstance(issued, int) and 0 <= web.now() - issued < LOGIN_TTL
    return fresh and isinstance(token, str) and csrf_ok(token, given)


def safe_next(target: str | None) -> str:
    """Where to go after login: a path of the dashboard only (no open redirect)."""
    if target and target.startswith("/dashboard/") and not target.startswith("//"):
        if "\\" not in target and "\n" not in target and "\r" not in target:
            return target
    return "/dashboard/"
