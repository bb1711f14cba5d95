"""Who may use the dashboard and the API: users and their hashes, sign-in, sessions, the proxy
header, and a walk over every route of the app proving each write refuses anonymous requests,
viewers (signed in or by API token), cross-site cookie requests, missing or wrong CSRF tokens and
wrong, revoked or expired API tokens (on a real SQLite store, the whole app in process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from starlette.routing import Mount, Route
from webkit import (
    ADMIN,
    ORIGIN,
    VIEWER,
    App,
    Client,
    cli_input,
    csrf_of,
    events,
    open_app,
    seed,
    sign_in,
    write_site,
)

from banfeed.models import Role
from banfeed.store import open_store
from banfeed.web import accounts, tokens
from conftest import T0, Clock, cli


@pytest.fixture
def site(tmp_path: Path) -> Iterator[App]:
    app = open_app(write_site(tmp_path), Clock(T0))
    seed(app, ("45.33.1.1", "IPS", 3, 10), ("45.33.1.2", "DoS", 1, 20))
    clients: list[Client] = []
    app.clients = clients  # type: ignore[attr-defined]
    yield app
    for client in clients:
        client.close()
    app.daemon.store.close()


def client(site: App, address: str = "127.0.0.1") -> Client:
    made = site.client(address)
    site.clients.append(made)  # type: ignore[attr-defined]
    return made


# -- users ----------------------------------------------------------------------------------


def test_users_are_kept_as_argon2_hashes_on_both_databases(store_url: str) -> None:
    store = open_store(store_url, create=True)
    try:
        accounts.add_user(store, "alice", Role.ADMIN, "correct horse battery", actor="t", now=1)
        with store.read() as tx:
            user = tx.get_user("alice")
        assert user is not None and user.password_hash.startswith("$argon2id$")
        assert "correct horse" not in user.password_hash and "correct" not in repr(user)
        assert accounts.authenticate(store, "alice", "correct horse battery") == user
        assert accounts.authenticate(store, "alice", "wrong horse battery") is None
        assert accounts.authenticate(store, "nobody", "correct horse battery") is None
        accounts.end_sessions(store, "alice")
        with store.read() as tx:
            assert tx.get_user("alice").session_epoch == 1  # type: ignore[union-attr]
        accounts.remove_user(store, "alice")
        assert accounts.list_users(store) == []
    finally:
        store.close()


def test_user_commands_read_stdin_refuse_weak_and_duplicate_and_list_no_hash(
    tmp_path: Path,
) -> None:
    path = write_site(tmp_path)
    short = cli_input(path, "short\n", "user", "add", "bob", "--role", "viewer")
    assert short.exit_code == 2 and "too short" in short.output  # type: ignore[attr-defined]
    again = cli_input(path, "another long one\n", "user", "add", "alice", "--role", "viewer")
    assert again.exit_code == 2 and "--replace" in again.output  # type: ignore[attr-defined]
    bad = cli_input(path, "another long one\n", "user", "add", "-x y", "--role", "viewer")
    assert bad.exit_code != 0
    replaced = cli_input(
        path, "a brand new password\n", "user", "add", "alice", "--role", "viewer", "--replace"
    )
    assert replaced.exit_code == 0, replaced.output  # type: ignore[attr-defined]
    listed = cli("--config", str(path), "user", "list", "--format", "json")
    rows = json.loads(listed.output)
    assert [(r["name"], r["role"]) for r in rows] == [("alice", "viewer"), ("victor", "viewer")]
    assert "argon2" not in listed.output
    assert cli("--config", str(path), "user", "remove", "victor").exit_code == 0
    gone = cli("--config", str(path), "user", "remove", "victor")
    assert gone.exit_code == 2 and "no user named" in gone.output


# -- sign-in and sessions -------------------------------------------------------------------


def test_pages_send_anonymous_users_to_the_login_form(site: App) -> None:
    answer = client(site).get("/dashboard/offenders?q=45.33.1.1")
    assert answer.status_code == 303
    expected = "/dashboard/login?next=%2Fdashboard%2Foffenders%3Fq%3D45.33.1.1"
    assert answer.headers["location"] == expected
    assert client(site).get("/api/v1/offenders").status_code == 401


def test_sign_in_then_wrong_passwords_are_refused_and_throttled(site: App) -> None:
    browser = client(site)
    sign_in(browser, *ADMIN)
    page = browser.get("/dashboard/")
    assert page.status_code == 200 and "alice" in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    cookie = browser.http.cookies.get("banfeed_session")
    assert cookie and "alice" not in cookie.split(".")[-1]  # signed, and says who only inside
    stranger = client(site, "198.51.100.9")
    for _ in range(5):
        form = stranger.get("/dashboard/login")
        wrong = stranger.post(
            "/dashboard/login",
            data={"csrf": csrf_of(form.text), "username": "alice", "password": "guess 1234567"},
            headers={"Origin": ORIGIN},
        )
        assert wrong.status_code == 401 and "wrong user name or password" in wrong.text
        assert "banfeed_session" not in wrong.headers.get("set-cookie", "")
    form = stranger.get("/dashboard/login")
    right = stranger.post(
        "/dashboard/login",
        data={"csrf": csrf_of(form.text), "username": ADMIN[0], "password": ADMIN[1]},
        headers={"Origin": ORIGIN},
    )
    assert right.status_code == 429  # even the right password, from that address, for now


def test_a_login_form_without_its_token_or_from_another_site_is_refused(site: App) -> None:
    browser = client(site)
    form = browser.get("/dashboard/login")
    data = {"csrf": csrf_of(form.text), "username": ADMIN[0], "password": ADMIN[1]}
    foreign = browser.post("/dashboard/login", data=data, headers={"Origin": "https://evil.test"})
    assert foreign.status_code == 403
    forged = browser.post("/dashboard/login", data=data | {"csrf": "x"}, headers={"Origin": ORIGIN})
    assert forged.status_code == 403
    fresh = client(site)  # no login cookie: a form posted from elsewhere
    assert fresh.post("/dashboard/login", data=data).status_code == 403


def test_login_goes_only_to_dashboard_paths(site: App) -> None:
    browser = client(site)
    form = browser.get("/dashboard/login?next=https://evil.test/")
    answer = browser.post(
        "/dashboard/login",
        data={
            "csrf": csrf_of(form.text),
            "username": ADMIN[0],
            "password": ADMIN[1],
            "next": "//evil.test/x",
        },
        headers={"Origin": ORIGIN},
    )
    assert answer.headers["location"] == "/dashboard/"


def test_sessions_expire_and_end_at_logout_and_when_the_user_goes(site: App) -> None:
    browser = client(site)
    csrf = sign_in(browser, *ADMIN)
    site.clock.now += 8 * 3600  # the default session_ttl
    assert browser.get("/api/v1/me").status_code == 401
    site.clock.now = T0
    assert browser.get("/api/v1/me").status_code == 200
    stolen = browser.http.cookies.get("banfeed_session")
    out = browser.post("/dashboard/logout", data={"csrf": csrf}, headers={"Origin": ORIGIN})
    assert out.status_code == 303
    thief = client(site)
    thief.http.cookies.set("banfeed_session", stolen or "")
    assert thief.get("/api/v1/me").status_code == 401  # the cookie copied before logout is void
    other = client(site)
    sign_in(other, *VIEWER)
    accounts.remove_user(site.daemon.store, VIEWER[0])
    assert other.get("/api/v1/me").status_code == 401


def test_a_trusted_proxy_header_signs_in_its_user_and_no_one_else(tmp_path: Path) -> None:
    extra = 'proxy_header = "X-Remote-User"\nproxy_from = ["192.0.2.10/32"]\n'
    app = open_app(write_site(tmp_path, extra), Clock(T0))
    proxy = app.client("192.0.2.10")
    direct = app.client("198.51.100.7")
    try:
        me = proxy.get("/api/v1/me", headers={"X-Remote-User": "victor"})
        assert me.status_code == 200 and me.json()["role"] == "viewer"
        csrf = me.json()["csrf"]
        again = proxy.get("/api/v1/me", headers={"X-Remote-User": "victor"})
        assert again.json()["csrf"] == csrf  # one session, kept by its cookie
        assert direct.get("/api/v1/me", headers={"X-Remote-User": "alice"}).status_code == 401
        assert proxy.get("/api/v1/me", headers={"X-Remote-User": "mallory"}).status_code == 401
    finally:
        proxy.close()
        direct.close()
        app.daemon.store.close()


def test_proxy_header_without_proxy_addresses_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[dashboard]\nenabled = true\nproxy_header = "X-Remote-User"\n')
    result = cli("--config", str(path), "check")
    assert result.exit_code == 2 and "proxy_from" in result.output


# -- every route ----------------------------------------------------------------------------

OPEN_READS = {
    "/healthz",
    "/readyz",
    "/metrics",
    "/",
    "/feeds/{name}.{fmt}",
    "/dashboard",
    "/dashboard/login",
    "/api/v1/openapi.json",
}
SESSION_WRITES = {"/dashboard/login", "/dashboard/logout"}  # not data: own rules, tested above
WRITES = {"POST", "PUT", "PATCH", "DELETE"}


def app_routes(site: App) -> list[tuple[str, str]]:
    """(method, path) of every route of the whole app, feeds and dashboard."""
    found = []
    for route in site.app.routes:
        if isinstance(route, Route):
            for method in sorted(route.methods or ()):
                if method != "HEAD":
                    found.append((method, route.path))
        elif isinstance(route, Mount):
            found.append(("GET", route.path + "/{path}"))
    return found


def concrete(path: str) -> str:
    return (
        path.replace("{ip}", "45.33.1.1")
        .replace("{name}.{fmt}", "all.txt")
        .replace("{name}", "all")
        .replace("{path}", "style.css")
    )


def attempt(browser: Client, method: str, path: str, csrf: str | None, origin: str | None) -> int:
    headers = {"Origin": origin} if origin else {}
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    body = {"target": "45.33.1.1", "note": "route walk"}
    if path.startswith("/api/"):
        return browser.request(method, concrete(path), json=body, headers=headers).status_code
    form = body | ({"csrf": csrf} if csrf is not None else {})
    return browser.request(method, concrete(path), data=form, headers=headers).status_code


def test_the_route_walk_sees_the_dashboard_and_api(site: App) -> None:
    routes = app_routes(site)
    writes = [r for r in routes if r[0] in WRITES]
    assert ("POST", "/api/v1/unban") in writes and ("POST", "/dashboard/actions/allow") in writes
    assert len([w for w in writes if w[1] not in SESSION_WRITES]) >= 6


def write_routes(site: App) -> list[tuple[str, str]]:
    """Every state-changing route but sign-in and sign-out."""
    return [(m, p) for m, p in app_routes(site) if m in WRITES and p not in SESSION_WRITES]


def api(path: str) -> bool:
    return path.startswith("/api/")


def token_attempt(browser: Client, method: str, path: str, token: str) -> httpx.Response:
    """A script's request: an ``Authorization: Bearer`` token, no cookie, CSRF token or Origin."""
    body = {"target": "45.33.1.1", "note": "route walk"}
    headers = {"Authorization": f"Bearer {token}"}
    if api(path):
        return browser.request(method, concrete(path), json=body, headers=headers)
    return browser.request(method, concrete(path), data=body, headers=headers)


@contextmanager
def nothing_done(site: App) -> Iterator[None]:
    """The walk inside changes nothing: no event, no new store version."""
    before = events(site)
    with site.daemon.store.read() as tx:
        version = tx.store_version()
    yield
    assert events(site) == before
    with site.daemon.store.read() as tx:
        assert tx.store_version() == version


def token(site: App, name: str, role: Role, expires_in: int | None = None) -> str:
    _, secret = tokens.add_token(
        site.daemon.store, name, role, expires_in=expires_in, note=None, actor="t", now=T0
    )
    return secret


def test_every_write_route_refuses_anonymous_requests(site: App) -> None:
    anonymous = client(site)
    with nothing_done(site):
        for method, path in write_routes(site):
            where = f"{method} {path}"
            assert attempt(anonymous, method, path, None, ORIGIN) == 401, where
            assert attempt(anonymous, method, path, "forged", ORIGIN) == 401, where
            answer = token_attempt(anonymous, method, path, "")  # "Bearer " and nothing
            assert answer.status_code == 401, where


def test_every_write_route_refuses_viewers_signed_in_or_by_token(site: App) -> None:
    viewer = client(site)
    viewer_csrf = sign_in(viewer, *VIEWER)
    script = client(site, "198.51.100.20")
    secret = token(site, "grafana", Role.VIEWER)
    with nothing_done(site):
        for method, path in write_routes(site):
            where = f"{method} {path}"
            assert attempt(viewer, method, path, viewer_csrf, ORIGIN) == 403, where
            # a token counts on the API only: on a page it is no sign-in at all
            expected = 403 if api(path) else 401
            assert token_attempt(script, method, path, secret).status_code == expected, where


def test_every_write_route_refuses_cross_site_cookie_requests(site: App) -> None:
    admin = client(site)
    admin_csrf = sign_in(admin, *ADMIN)
    with nothing_done(site):
        for method, path in write_routes(site):
            where = f"{method} {path}"
            assert attempt(admin, method, path, admin_csrf, "https://evil.test") == 403, where
            assert attempt(admin, method, path, admin_csrf, "null") == 403, where


def test_every_write_route_refuses_a_missing_or_wrong_csrf_token(site: App) -> None:
    admin = client(site)
    admin_csrf = sign_in(admin, *ADMIN)
    viewer_csrf = sign_in(client(site), *VIEWER)
    with nothing_done(site):
        for method, path in write_routes(site):
            where = f"{method} {path}"
            assert attempt(admin, method, path, None, ORIGIN) == 403, where  # no token
            assert attempt(admin, method, path, "x" + admin_csrf, ORIGIN) == 403, where
            assert attempt(admin, method, path, viewer_csrf, ORIGIN) == 403, where  # another's


def test_every_write_route_refuses_wrong_revoked_and_expired_tokens(site: App) -> None:
    script = client(site, "198.51.100.20")
    revoked = token(site, "old", Role.ADMIN)
    tokens.revoke_token(site.daemon.store, "old")
    expired = token(site, "brief", Role.ADMIN, expires_in=60)
    site.clock.now = T0 + 60
    with nothing_done(site):
        for method, path in write_routes(site):
            for secret in ("bft_" + "A" * 43, revoked, expired):
                answer = token_attempt(script, method, path, secret)
                assert answer.status_code == 401, f"{method} {path}"
                if api(path):
                    assert answer.headers["www-authenticate"].startswith("Bearer "), path


def test_a_token_request_with_an_admin_cookie_is_judged_on_the_token(site: App) -> None:
    admin = client(site)
    admin_csrf = sign_in(admin, *ADMIN)
    secret = token(site, "grafana", Role.VIEWER)
    headers = {"Authorization": f"Bearer {secret}", "X-CSRF-Token": admin_csrf, "Origin": ORIGIN}
    with nothing_done(site):
        for method, path in write_routes(site):
            if api(path):
                body = {"target": "45.33.1.1"}
                answer = admin.request(method, concrete(path), json=body, headers=headers)
                assert answer.status_code == 403, path


def test_every_write_route_is_done_for_a_signed_in_admin(site: App) -> None:
    admin = client(site)
    admin_csrf = sign_in(admin, *ADMIN)
    # The requests refused above, from the admin, same-site, with the CSRF token, are done:
    for method, path in write_routes(site):
        assert attempt(admin, method, path, admin_csrf, ORIGIN) in (200, 303, 400), path
    assert {(kind, actor) for kind, actor, _ in events(site)} >= {("unbanned", "alice")}


def test_every_api_write_is_done_for_an_admin_token(site: App) -> None:
    script = client(site, "198.51.100.20")
    secret = token(site, "ci", Role.ADMIN)
    for method, path in write_routes(site):
        if api(path):
            answer = token_attempt(script, method, path, secret)
            assert answer.status_code in (200, 400), f"{path}: {answer.text}"
    assert ("unbanned", "token:ci", "45.33.1.1") in events(site)


def test_every_read_route_needs_a_session_but_health_and_feeds_stay_open(site: App) -> None:
    anonymous = client(site)
    for method, path in app_routes(site):
        if method != "GET":
            continue
        status = anonymous.get(concrete(path)).status_code
        # TAXII, like /feeds/, is read with each feed's own auth (tests/test_taxii.py), no session
        if path in OPEN_READS or path.startswith(("/dashboard/static", "/taxii2/")):
            assert status not in (401, 403), path
        else:
            assert status in (401, 303), path
    assert anonymous.get("/healthz").status_code == 200
    assert anonymous.get("/readyz").status_code in (200, 503)


def test_logout_refuses_cross_site_and_tokenless_requests(site: App) -> None:
    browser = client(site)
    csrf = sign_in(browser, *VIEWER)
    for data, origin in (({"csrf": csrf}, "https://evil.test"), ({}, ORIGIN)):
        refused = browser.post("/dashboard/logout", data=data, headers={"Origin": origin})
        assert refused.status_code == 403
    assert browser.get("/api/v1/me").status_code == 200  # still signed in
    done = browser.post("/dashboard/logout", data={"csrf": csrf}, headers={"Origin": ORIGIN})
    assert done.status_code == 303 and browser.get("/api/v1/me").status_code == 401
