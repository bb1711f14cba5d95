"""API tokens: `banfeed token add|list|revoke`, the hashes the store keeps (on both databases),
and `Authorization: Bearer` on /api/v1 — accepted there only, judged on the token alone, with
every refusal (missing, wrong, revoked, expired, viewer) answered as it should (real SQLite store,
the whole app in process)."""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from webkit import (
    ADMIN,
    ORIGIN,
    App,
    Client,
    cli_input,
    events,
    open_app,
    seed,
    sign_in,
    write_site,
)

from banfeed.models import Role
from banfeed.store import open_store
from banfeed.web import tokens
from conftest import T0, Clock, cli


@pytest.fixture
def site(tmp_path: Path) -> Iterator[App]:
    app = open_app(write_site(tmp_path), Clock(T0))
    seed(app, ("45.33.1.1", "IPS", 3, 10), ("45.33.1.2", "DoS", 1, 20))
    yield app
    app.daemon.store.close()


def add(site: App, name: str, role: Role, expires_in: int | None = None) -> str:
    _, secret = tokens.add_token(
        site.daemon.store, name, role, expires_in=expires_in, note=None, actor="t", now=T0
    )
    return secret


def bearer(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


@pytest.fixture
def script(site: App) -> Iterator[Client]:
    """A client with no cookie: what a script is."""
    made = site.client("198.51.100.20")
    yield made
    made.close()


# -- the commands and the store ---------------------------------------------------------------


def test_token_add_prints_it_once_and_the_store_keeps_only_its_sha256(tmp_path: Path) -> None:
    path = write_site(tmp_path)
    added = cli_input(path, "", "token", "add", "grafana", "--role", "viewer", "--expires", "90d")
    assert added.exit_code == 0, added.output  # type: ignore[attr-defined]
    secret = added.stdout.strip()  # type: ignore[attr-defined]
    assert secret.startswith("bft_") and len(secret) >= 4 + 43  # 256 random bits
    assert "shown only now" in added.stderr  # type: ignore[attr-defined]
    with sqlite3.connect(tmp_path / "b.db") as conn:
        rows = conn.execute("SELECT name, role, token_hash, expires FROM api_tokens").fetchall()
    assert rows == [("grafana", "viewer", hashlib.sha256(secret.encode()).hexdigest(), rows[0][3])]
    assert rows[0][3] is not None and rows[0][3] > T0 + 89 * 86400
    assert secret.encode() not in (tmp_path / "b.db").read_bytes()
    listed = cli("--config", str(path), "token", "list", "--format", "json")
    (row,) = json.loads(listed.output)
    assert row["name"] == "grafana" and row["role"] == "viewer" and row["last_used"] is None
    assert (
        row["expired"] is False and secret not in listed.output and rows[0][2] not in listed.output
    )
    again = cli_input(path, "", "token", "add", "grafana", "--role", "admin")
    assert again.exit_code == 2 and "revoke it first" in again.output  # type: ignore[attr-defined]
    assert cli("--config", str(path), "token", "revoke", "grafana").exit_code == 0
    gone = cli("--config", str(path), "token", "revoke", "grafana")
    assert gone.exit_code == 2 and "no token named" in gone.output
    bad = cli_input(path, "", "token", "add", "-x y", "--role", "viewer")
    assert bad.exit_code != 0  # type: ignore[attr-defined]


def test_tokens_are_found_by_hash_and_used_at_most_once_a_minute(store_url: str) -> None:
    store = open_store(store_url, create=True)
    try:
        token, secret = tokens.add_token(
            store, "ci", Role.ADMIN, expires_in=3600, note="deploys", actor="root", now=100
        )
        assert secret not in repr(token) and token.token_hash not in repr(token)
        assert tokens.authenticate_token(store, secret, 110) == token
        with store.read() as tx:
            assert tx.get_token("ci").last_used == 110  # type: ignore[union-attr]
        tokens.authenticate_token(store, secret, 169)  # within the minute: not written
        with store.read() as tx:
            assert tx.get_token("ci").last_used == 110  # type: ignore[union-attr]
        tokens.authenticate_token(store, secret, 170)
        with store.read() as tx:
            assert tx.get_token("ci").last_used == 170  # type: ignore[union-attr]
        wrong = secret[:-1] + ("B" if secret.endswith("A") else "A")  # never the secret itself
        assert tokens.authenticate_token(store, wrong, 171) is None
        assert tokens.authenticate_token(store, "ci", 171) is None
        assert tokens.authenticate_token(store, secret, 100 + 3600) is None  # expired
        tokens.revoke_token(store, "ci")
        assert tokens.list_tokens(store) == []
        assert tokens.authenticate_token(store, secret, 171) is None
    finally:
        store.close()


# -- Authorization: Bearer --------------------------------------------------------------------


def test_an_admin_token_acts_without_csrf_and_is_the_actor(site: App, script: Client) -> None:
    secret = add(site, "ci", Role.ADMIN)
    me = script.get("/api/v1/me", headers=bearer(secret))
    assert me.status_code == 200
    assert me.json() == {"user": "token:ci", "role": "admin", "csrf": None, "token": True}
    done = script.post(
        "/api/v1/unban", json={"target": "45.33.1.1", "note": "ticket 7"}, headers=bearer(secret)
    )
    assert done.status_code == 200, done.text
    assert done.json()["actor"] == "token:ci"
    assert ("unbanned", "token:ci", "45.33.1.1") in events(site)
    assert "set-cookie" not in done.headers  # a token gets no session


def test_a_viewer_token_reads_but_may_not_write(site: App, script: Client) -> None:
    secret = add(site, "grafana", Role.VIEWER)
    assert script.get("/api/v1/offenders", headers=bearer(secret)).status_code == 200
    before = events(site)
    refused = script.post("/api/v1/ban", json={"target": "45.33.9.9"}, headers=bearer(secret))
    assert refused.status_code == 403
    assert "token:grafana is a viewer" in refused.json()["error"]
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
    assert events(site) == before


def test_missing_wrong_revoked_and_expired_tokens_are_401_with_a_bearer_challenge(
    site: App, script: Client
) -> None:
    secret = add(site, "short", Role.ADMIN, expires_in=3600)
    missing = script.get("/api/v1/me")
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="banfeed api"'
    for wrong in (
        b"",
        b"bft_nope",
        (secret + "x").encode(),
        b"x" * 5000,
        "bft_\u00e9".encode("latin-1"),
    ):
        answer = script.get("/api/v1/me", headers={"Authorization": b"Bearer " + wrong})
        assert answer.status_code == 401, wrong
        assert answer.headers["www-authenticate"].startswith('Bearer realm="banfeed api"')
    assert script.get("/api/v1/me", headers=bearer(secret)).status_code == 200
    site.clock.now = T0 + 3600
    expired = script.get("/api/v1/me", headers=bearer(secret))
    assert (
        expired.status_code == 401
        and 'error="invalid_token"' in expired.headers["www-authenticate"]
    )
    site.clock.now = T0
    tokens.revoke_token(site.daemon.store, "short")
    assert script.get("/api/v1/me", headers=bearer(secret)).status_code == 401


def test_a_token_with_a_cookie_is_judged_on_the_token_alone(site: App) -> None:
    browser = site.client()
    try:
        csrf = sign_in(browser, *ADMIN)
        viewer_token = add(site, "grafana", Role.VIEWER)
        headers = bearer(viewer_token) | {"X-CSRF-Token": csrf, "Origin": ORIGIN}
        as_viewer = browser.post("/api/v1/unban", json={"target": "45.33.1.1"}, headers=headers)
        assert as_viewer.status_code == 403  # the admin's cookie does not lend its role
        bad = headers | {"Authorization": "Bearer bft_wrong"}
        assert (
            browser.post("/api/v1/unban", json={"target": "45.33.1.1"}, headers=bad).status_code
            == 401
        )
        me = browser.get("/api/v1/me", headers=bearer(viewer_token))
        assert me.json()["user"] == "token:grafana"
        # Basic credentials a browser resends (the status page's) are not ours: the session
        # cookie decides.
        basic = browser.get("/api/v1/me", headers={"Authorization": "Basic dTpw"})
        assert basic.status_code == 200 and basic.json()["user"] == ADMIN[0]
    finally:
        browser.close()


def test_dashboard_pages_do_not_accept_tokens(site: App, script: Client) -> None:
    secret = add(site, "ci", Role.ADMIN)
    page = script.get("/dashboard/offenders", headers=bearer(secret))
    assert page.status_code == 303 and page.headers["location"].startswith("/dashboard/login")
    form = {"target": "45.33.1.1", "csrf": "x"}
    action = script.post("/dashboard/actions/unban", data=form, headers=bearer(secret))
    assert action.status_code == 401
    assert ("unbanned", "token:ci", "45.33.1.1") not in events(site)


def test_no_token_text_is_ever_logged(
    site: App, script: Client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = add(site, "ci", Role.ADMIN, expires_in=60)
    script.get("/api/v1/me", headers=bearer(secret))
    script.get("/api/v1/me", headers=bearer(secret + "x"))
    site.clock.now = T0 + 60
    script.get("/api/v1/me", headers=bearer(secret))
    assert "unknown or expired token" in caplog.text and "API token ci expired" in caplog.text
    assert secret not in caplog.text and secret[4:20] not in caplog.text
