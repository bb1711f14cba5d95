"""``/api/v1``: its OpenAPI document against the routes, the offenders search (filters, sorts,
paging), the detail `banfeed show` prints, feeds, devices and the actions (real SQLite store,
the whole app in process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.routing import Route
from webkit import ADMIN, ORIGIN, VIEWER, App, Client, events, open_app, seed, sign_in, write_site

from conftest import T0, Clock, cli

ROWS = [
    ("45.33.1.1", "IPS", 3, 10),
    ("45.33.1.2", "DoS", 1, 20),
    ("45.33.2.9", "IPS", 7, 30),
    ("45.34.0.1", "AV", 2, 40),
    ("2a00:1450:4001:81c::200e", "DoS", 4, 50),
    ("9.9.9.9", "APP", 1, 60),
]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[App, Client, str]]:
    app = open_app(write_site(tmp_path), Clock(T0))
    seed(app, *ROWS)
    browser = app.client()
    csrf = sign_in(browser, *ADMIN)
    yield app, browser, csrf
    browser.close()
    app.daemon.store.close()


def ips(answer: Any) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [o["ip"] for o in answer.json()["offenders"]]


def test_openapi_lists_exactly_the_api_routes(api: tuple[App, Client, str]) -> None:
    app, browser, _ = api
    routes = {
        (method.lower(), route.path)
        for route in app.app.routes
        if isinstance(route, Route) and route.path.startswith("/api/")
        for method in route.methods or ()
        if method != "HEAD"
    }
    document = client_json(browser, "/api/v1/openapi.json")
    assert document["openapi"].startswith("3.")
    listed = {(m, path) for path, item in document["paths"].items() for m in item}
    assert listed == routes
    assert len(routes) >= 10


def client_json(browser: Client, url: str) -> Any:
    answer = browser.get(url)
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_search_filters_like_list(api: tuple[App, Client, str]) -> None:
    _, browser, _ = api
    assert ips(browser.get("/api/v1/offenders?q=45.33.0.0/16")) == [
        "45.33.1.1",
        "45.33.1.2",
        "45.33.2.9",
    ]
    assert ips(browser.get("/api/v1/offenders?q=45.33.1.2")) == ["45.33.1.2"]
    assert ips(browser.get("/api/v1/offenders?cause=dos")) == ["45.33.1.2", ROWS[4][0]]
    assert ips(browser.get("/api/v1/offenders?cause=AV&cause=APP")) == ["9.9.9.9", "45.34.0.1"]
    assert ips(browser.get("/api/v1/offenders?min_offenses=3")) == [
        "45.33.1.1",
        "45.33.2.9",
        ROWS[4][0],
    ]
    assert ips(browser.get("/api/v1/offenders?device=fw-2")) == []
    assert ips(browser.get("/api/v1/offenders?vdom=root&q=9.9.9.9")) == ["9.9.9.9"]
    assert ips(browser.get("/api/v1/offenders?state=unbanned")) == []
    for bad in ("q=999.1.1.1", "state=gone", "limit=0", "sort=note", "cursor=zzz", "x=1"):
        answer = browser.get(f"/api/v1/offenders?{bad}")
        assert answer.status_code == 400 and answer.json()["error"], bad


def test_search_sorts_and_pages_by_cursor_without_gaps(api: tuple[App, Client, str]) -> None:
    _, browser, _ = api
    most = ips(browser.get("/api/v1/offenders?sort=-offense_count"))
    assert most[:2] == ["45.33.2.9", ROWS[4][0]]
    newest = ips(browser.get("/api/v1/offenders?sort=-last_offense"))
    assert newest == [r[0] for r in ROWS]  # seeded newest first
    for sort in ("ip", "-ip", "offense_count", "-last_offense"):
        seen: list[str] = []
        url = f"/api/v1/offenders?sort={sort}&limit=2"
        while True:
            page = client_json(browser, url)
            seen += [o["ip"] for o in page["offenders"]]
            if page["next"] is None:
                break
            url = f"/api/v1/offenders?sort={sort}&limit=2&cursor={page['next']}"
        assert seen == ips(browser.get(f"/api/v1/offenders?sort={sort}")), sort
    assert ips(browser.get("/api/v1/offenders?offset=4")) == ["45.34.0.1", ROWS[4][0]]


def test_detail_is_what_show_prints(api: tuple[App, Client, str]) -> None:
    app, browser, _ = api
    detail = client_json(browser, "/api/v1/offenders/45.33.1.1")
    shown = cli("--config", str(app.path), "show", "45.33.1.1", "--format", "json")
    printed = json.loads(shown.output)
    for record in (detail, printed):
        record.pop("feeds")  # the CLI reads the clock; the verdicts are compared below
    assert detail == printed
    feeds = client_json(browser, "/api/v1/offenders/45.33.1.1")["feeds"]
    assert set(feeds) == {"all", "dos"} and feeds["dos"]["why"] == "filtered"
    assert browser.get("/api/v1/offenders/45.99.99.99").status_code == 404
    assert browser.get("/api/v1/offenders/not-an-ip").status_code == 400


def test_feeds_and_devices(api: tuple[App, Client, str]) -> None:
    _, browser, _ = api
    feeds = client_json(browser, "/api/v1/feeds")
    assert [f["feed"] for f in feeds] == ["all", "dos"]
    assert feeds[0]["state"].startswith("not published yet")
    assert client_json(browser, "/api/v1/devices") == []
    overview = client_json(browser, "/api/v1/overview")
    assert overview["active"] == {"ipv4": 5, "ipv6": 1}


def test_actions_act_as_the_signed_in_admin(api: tuple[App, Client, str]) -> None:
    app, browser, csrf = api
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    body = {"target": "45.33.1.1", "note": "fp"}
    done = browser.post("/api/v1/unban", json=body, headers=headers)
    assert done.status_code == 200 and done.json()["offenders"] == ["45.33.1.1"]
    assert ips(browser.get("/api/v1/offenders?q=45.33.1.1")) == []
    assert ips(browser.get("/api/v1/offenders?q=45.33.1.1&state=unbanned")) == ["45.33.1.1"]
    ban = browser.post("/api/v1/ban", json={"target": "45.35.0.0/24", "ttl": "7d"}, headers=headers)
    assert ban.status_code == 200 and ban.json()["expires"] is not None
    allow = browser.post("/api/v1/allow", json={"target": "45.34.0.1"}, headers=headers)
    assert allow.status_code == 200
    assert ips(browser.get("/api/v1/offenders?q=45.34.0.1&state=suppressed")) == ["45.34.0.1"]
    assert [(k, a) for k, a, _ in events(app)][:3] == [
        ("allowlist_added", "alice"),
        ("banned", "alice"),
        ("unbanned", "alice"),
    ]
    wide = browser.post("/api/v1/ban", json={"target": "45.0.0.0/8"}, headers=headers)
    assert wide.status_code == 400 and "broader" in wide.json()["error"]
    private = browser.post("/api/v1/ban", json={"target": "10.0.0.1"}, headers=headers)
    assert private.status_code == 400 and "not publishable" in private.json()["error"]
    for body in ({}, {"target": "x", "extra": 1}, [1]):
        assert browser.post("/api/v1/ban", json=body, headers=headers).status_code == 400
    missing = browser.post("/api/v1/unban", json={"target": "45.99.0.1"}, headers=headers)
    assert missing.status_code == 400


def test_a_viewer_reads_but_cannot_act(api: tuple[App, Client, str]) -> None:
    app, _, _ = api
    viewer = app.client()
    try:
        csrf = sign_in(viewer, *VIEWER)
        assert ips(viewer.get("/api/v1/offenders?q=45.33.1.1")) == ["45.33.1.1"]
        refused = viewer.post(
            "/api/v1/unban",
            json={"target": "45.33.1.1"},
            headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
        )
        assert refused.status_code == 403 and "viewer" in refused.json()["error"]
    finally:
        viewer.close()


def test_a_failing_store_is_a_503_that_names_no_path(
    api: tuple[App, Client, str], caplog: pytest.LogCaptureFixture
) -> None:
    app, browser, _ = api
    with app.daemon.store.write() as tx:
        tx.conn.exec_driver_sql("ALTER TABLE offenders RENAME TO offenders_gone")
        tx.conn.exec_driver_sql("ALTER TABLE bans RENAME TO bans_gone")
    for url in ("/api/v1/offenders", "/api/v1/bans", "/dashboard/offenders"):
        answer = browser.get(url)
        assert answer.status_code == 503, url
        assert "server log" in answer.text and "b.db" not in answer.text, answer.text
        assert "sqlite" not in answer.text.lower() and "offenders_gone" not in answer.text
    assert any("no such table: offenders" in r.getMessage() for r in caplog.records)


def test_an_unknown_api_route_answers_in_the_documented_shape(
    api: tuple[App, Client, str],
) -> None:
    _, browser, _ = api
    for url in ("/api/v1/nothing", "/api/v1/feeds/a%2Fb", "/api/v2/offenders"):
        answer = browser.get(url)
        assert answer.status_code == 404 and "openapi.json" in answer.json()["error"], url
    assert browser.get("/nothing").text == "Not Found"
