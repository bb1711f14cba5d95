"""The Feeds pages and ``/api/v1/feeds/NAME…`` on a real SQLite store, the whole app in
process: every feed with its definition and state, a held feed with its reason and an Approve
button for admins only, one feed's history and diff (capped on the page, whole in the
download, the same lines as `banfeed feeds diff`), and approve, rollback and release through
the confirmation page and the API — each writing its event with the user's name and note, and
changing what consumers are served — while viewers, anonymous and cross-site requests change
nothing, unknown feeds are 404, bad versions 400, and a failing store leaks nothing."""

from __future__ import annotations

import html
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from webkit import (
    ADMIN,
    ORIGIN,
    VIEWER,
    App,
    Client,
    csrf_of,
    open_app,
    seed,
    sign_in,
    write_site,
)

from banfeed import __version__
from banfeed.models import EventKind
from conftest import T0, Clock, cli

FIRST = [f"45.33.0.{i}" for i in range(1, 21)]
SECOND = [f"45.33.1.{i}" for i in range(1, 6)]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[App]:
    """Feed ``all`` published twice (20, then 25 lines), then held: an allowlist entry would
    take every line away, more than max_drop."""
    app = open_app(write_site(tmp_path), Clock(T0))
    seed(app, *((ip, "IPS", 2, 10) for ip in FIRST))
    app.daemon.cache.refresh()
    seed(app, *((ip, "IPS", 1, 5) for ip in SECOND))
    app.daemon.cache.refresh()
    admin = app.client()
    csrf = sign_in(admin, *ADMIN)
    allowed = admin.post(
        "/api/v1/allow",
        json={"target": "45.33.0.0/16", "note": "partner range"},
        headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
    )
    assert allowed.status_code == 200, allowed.text
    app.daemon.cache.refresh()
    admin.close()
    yield app
    app.daemon.store.close()


@pytest.fixture
def admin(site: App) -> Iterator[tuple[Client, str]]:
    browser = site.client()
    yield browser, sign_in(browser, *ADMIN)
    browser.close()


@pytest.fixture
def viewer(site: App) -> Iterator[tuple[Client, str]]:
    browser = site.client()
    yield browser, sign_in(browser, *VIEWER)
    browser.close()


def served(site: App, browser: Client) -> list[str]:
    """The lines consumers of feed ``all`` get now (after the server's next refresh)."""
    site.daemon.cache.refresh()
    answer = browser.get("/feeds/all.txt")
    assert answer.status_code == 200
    return answer.text.splitlines()


def feed_events(site: App) -> list[tuple[str, str, str]]:
    kinds = (EventKind.FEED_APPROVED, EventKind.FEED_PINNED, EventKind.FEED_RELEASED)
    with site.daemon.store.read() as tx:
        return [(e.kind.value, e.actor, e.detail) for e in tx.events_matching(kinds=kinds)]


def text(answer: object) -> str:
    """A page's words, tags dropped (what a reader sees)."""
    body = answer.text  # type: ignore[attr-defined]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body)))


# -- reading --------------------------------------------------------------------------------


def test_the_feeds_page_shows_definitions_states_and_the_held_feed(
    site: App, admin: tuple[Client, str], viewer: tuple[Client, str]
) -> None:
    page = admin[0].get("/dashboard/feeds")
    assert page.status_code == 200
    words = text(page)
    assert "1 feed is held by the mass-drop guard" in words
    assert "held since" in words and "25 of 25 published entries would disappear" in words
    assert "removed by allowlist" in words  # the reason, in the guard's words
    assert 'aria-current="page">Feeds' in page.text
    row = re.search(r'<tr class="held warn">(.*?)</tr>', page.text, re.S)
    assert row is not None and 'href="/dashboard/feeds/all"' in row.group(1)
    assert "Approve…" in row.group(1) and 'value="approve"' in row.group(1)
    dos = re.search(
        r'<tr class="[^"]*">\s*<td><a href="/dashboard/feeds/dos">(.*?)</tr>', page.text, re.S
    )
    assert dos is not None and "DoS" in dos.group(1)  # the definition: causes
    assert "Approve" not in dos.group(1)  # not held: no button
    as_viewer = viewer[0].get("/dashboard/feeds")
    assert as_viewer.status_code == 200 and "would disappear" in text(as_viewer)
    assert "Approve" not in as_viewer.text  # viewers see the state, not the button


def test_a_feed_page_has_history_newest_first_buttons_and_a_diff_form(
    site: App, admin: tuple[Client, str], viewer: tuple[Client, str]
) -> None:
    versions = admin[0].get("/api/v1/feeds/all/versions").json()["versions"]
    assert [v["version"] for v in versions] == [2, 1]
    assert [v["served"] for v in versions] == [True, False]  # held: the last good one served
    page = admin[0].get("/dashboard/feeds/all")
    assert page.status_code == 200
    words = text(page)
    assert words.index(versions[0]["etag"]) < words.index(versions[1]["etag"])
    assert page.text.count("Rollback to this version") == 1  # on version 1 only
    assert 'name="version" value="1"' in page.text
    assert "Approve…" in page.text and "Release the pin" not in page.text
    assert 'name="old" type="number" min="1" value="1"' in page.text  # previous vs current
    assert 'name="new" type="number" min="1" value="2"' in page.text
    assert "No consumer has fetched this feed yet" in words
    assert 'href="/feeds/all.stix.json"' in page.text
    found = re.search(r'<code id="taxii-collection">([^<]+)</code>', page.text)
    assert found is not None  # the collection the TAXII server lists for the feed
    listed = admin[0].get(
        "/taxii2/feeds/collections/", headers={"Accept": "application/taxii+json;version=2.1"}
    )
    assert listed.status_code == 200, listed.text
    by_title = {c["title"]: c["id"] for c in listed.json()["collections"]}
    assert found.group(1) == f"/taxii2/feeds/collections/{by_title['all']}/"
    capped = admin[0].get("/dashboard/feeds/all?limit=1")
    assert capped.text.count("Rollback to this version") == 0 and "more versions" in capped.text
    assert 'href="?limit=5"' in capped.text
    as_viewer = viewer[0].get("/dashboard/feeds/all")
    assert as_viewer.status_code == 200 and "would disappear" in text(as_viewer)
    assert "Rollback" not in as_viewer.text and "Approve" not in as_viewer.text


def test_the_diff_is_what_feeds_diff_prints_capped_on_the_page_whole_in_the_download(
    tmp_path: Path,
) -> None:
    app = open_app(write_site(tmp_path), Clock(T0))
    browser = app.client()
    try:
        seed(app, ("45.33.0.1", "IPS", 1, 10), ("45.33.0.2", "IPS", 1, 10))
        app.daemon.cache.refresh()
        many = [f"45.40.{i // 250}.{i % 250 + 1}" for i in range(600)]
        seed(app, *((ip, "IPS", 1, 5) for ip in many))
        with app.daemon.store.write() as tx:  # one offender gone behind the feed's back
            tx.unban_offenders(["45.33.0.2"], T0)
            tx.bump_version()
        app.daemon.cache.refresh()
        sign_in(browser, *ADMIN)
        answer = browser.get("/api/v1/feeds/all/diff")  # default: previous vs served
        assert answer.status_code == 200
        found = answer.json()
        assert (found["old"], found["new"]) == (1, 2)
        assert found["removed"] == ["45.33.0.2"] and len(found["added"]) == 600
        printed = cli("--config", str(app.path), "feeds", "diff", "all", "1", "2")
        assert printed.exit_code == 0
        lines = [x for x in printed.output.splitlines() if x[:1] in "+-"]
        assert lines == [f"-{x}" for x in found["removed"]] + [f"+{x}" for x in found["added"]]
        page = browser.get("/dashboard/feeds/all/diff?old=1&new=2")
        assert page.status_code == 200
        words = text(page)
        assert "600 added, 1 removed" in words and "… and 100 more" in words
        assert page.text.count("\n+45.40.") == 499  # 500 shown, the first after the <pre>
        assert "-45.33.0.2" in page.text
        download = browser.get("/dashboard/feeds/all/diff.txt?old=1&new=2")
        assert download.status_code == 200
        assert download.headers["content-type"].startswith("text/plain")
        assert 'filename="all-1-2.diff"' in download.headers["content-disposition"]
        assert download.text.splitlines() == lines
    finally:
        browser.close()
        app.daemon.store.close()


# -- writing --------------------------------------------------------------------------------


def test_approve_rollback_and_release_through_the_pages(
    site: App, admin: tuple[Client, str]
) -> None:
    browser, _ = admin
    assert len(served(site, browser)) == 25  # held: the last good version
    confirm = browser.get("/dashboard/feeds/all/confirm?action=approve")
    assert confirm.status_code == 200
    assert "25 of 25 published entries would disappear" in text(confirm)
    assert "disappear from every consumer" in text(confirm)
    done = browser.post(
        "/dashboard/feeds/all/approve",
        data={"csrf": csrf_of(confirm.text), "note": "partner confirmed, ticket 12"},
        headers={"Origin": ORIGIN},
    )
    assert (
        done.status_code == 303 and done.headers["location"] == "/dashboard/feeds/all?done=approve"
    )
    page = browser.get(done.headers["location"])
    assert "Done: the hold is released" in text(page)
    assert served(site, browser) == []  # the allowlisted range is gone from the feed
    assert feed_events(site)[0] == (
        "feed_approved",
        "alice",
        "released the hold on all — partner confirmed, ticket 12",
    )
    versions = browser.get("/api/v1/feeds/all/versions").json()["versions"]
    assert versions[0]["version"] == 3 and versions[0]["approver"] == "alice"

    confirm = browser.get("/dashboard/feeds/all/confirm?action=rollback&version=2")
    assert confirm.status_code == 200 and "served version 2 from its next fetch" in text(confirm)
    assert f"banfeed {__version__} ·" in text(confirm)  # the version to roll to is not banfeed's
    pinned = browser.post(
        "/dashboard/feeds/all/rollback",
        data={"csrf": csrf_of(confirm.text), "version": "2", "note": "allowlist was wrong"},
        headers={"Origin": ORIGIN},
    )
    assert pinned.status_code == 303
    assert served(site, browser) == FIRST + SECOND  # version 2's lines
    page = browser.get("/dashboard/feeds/all?done=rollback")
    assert "pinned to version 2 by alice" in text(page) and "Release the pin" in page.text
    assert feed_events(site)[0] == (
        "feed_pinned",
        "alice",
        "pinned all to version 2 — allowlist was wrong",
    )

    confirm = browser.get("/dashboard/feeds/all/confirm?action=release")
    assert confirm.status_code == 200 and "stops serving version 2" in text(confirm)
    released = browser.post(
        "/dashboard/feeds/all/release",
        data={"csrf": csrf_of(confirm.text), "note": ""},
        headers={"Origin": ORIGIN},
    )
    assert released.status_code == 303
    assert served(site, browser) == []
    assert feed_events(site)[0] == ("feed_released", "alice", "released the pin on all")
    again = browser.get("/dashboard/feeds/all/confirm?action=release")
    assert again.status_code == 400 and "not pinned" in text(again)


def test_the_api_reads_a_feed_and_acts_as_the_signed_in_admin(
    site: App, admin: tuple[Client, str]
) -> None:
    browser, csrf = admin
    feed = browser.get("/api/v1/feeds/dos")
    assert feed.status_code == 200
    assert feed.json()["definition"] == {
        "family": "any",
        "causes": ["DoS"],
        "devices": [],
        "vdoms": [],
        "min_offenses": 1,
        "seen_within": None,
        "limit": feed.json()["max_entries"],
        "shards": 1,
        "shard_urls": [],
        "aggregate": False,
        "auth": "none",
        "allow_from": [],
    }
    held = browser.get("/api/v1/feeds/all").json()
    assert held["held_since"] is not None and held["state"].startswith("held since")
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    approved = browser.post("/api/v1/feeds/all/approve", json={"note": "ok"}, headers=headers)
    assert approved.status_code == 200, approved.text
    assert approved.json()["actor"] == "alice" and "released the hold" in approved.json()["done"]
    assert served(site, browser) == []  # published: the hold is over
    twice = browser.post("/api/v1/feeds/all/approve", json={}, headers=headers)
    assert twice.status_code == 400 and "not held" in twice.json()["error"]
    pinned = browser.post("/api/v1/feeds/all/rollback", json={"version": 1}, headers=headers)
    assert pinned.status_code == 200 and pinned.json()["entries"] == 20
    assert served(site, browser) == FIRST
    released = browser.post("/api/v1/feeds/all/release", json={}, headers=headers)
    assert released.status_code == 200
    assert served(site, browser) == []
    assert [(k, a) for k, a, _ in feed_events(site)] == [
        ("feed_released", "alice"),
        ("feed_pinned", "alice"),
        ("feed_approved", "alice"),
    ]
    assert feed_events(site)[2][2] == "released the hold on all — ok"


def test_unknown_feeds_are_404_bad_versions_400(site: App, admin: tuple[Client, str]) -> None:
    browser, csrf = admin
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    for url in (
        "/dashboard/feeds/nope",
        "/dashboard/feeds/nope/diff",
        "/dashboard/feeds/nope/confirm?action=approve",
        "/api/v1/feeds/nope",
        "/api/v1/feeds/nope/versions",
        "/api/v1/feeds/nope/diff",
    ):
        assert browser.get(url).status_code == 404, url
    assert browser.post("/api/v1/feeds/nope/approve", json={}, headers=headers).status_code == 404
    for url in (
        "/dashboard/feeds/all/diff?old=x",
        "/dashboard/feeds/all/diff?old=0",
        "/dashboard/feeds/all/diff?old=99&new=2",
        "/dashboard/feeds/all/diff.txt?new=-1",
        "/dashboard/feeds/all?limit=100000",
        "/dashboard/feeds/all/confirm?action=rollback&version=99",
        "/dashboard/feeds/all/confirm?action=rollback",
        "/dashboard/feeds/all/confirm?action=explode",
        "/api/v1/feeds/all/diff?new=" + "9" * 40,
        "/api/v1/feeds/all/versions?limit=0",
        "/api/v1/feeds/-x-",
    ):
        assert browser.get(url).status_code == 400, url
    for body in ({"version": 99}, {}, {"version": "two"}, {"version": 1, "extra": 1}, [1]):
        answer = browser.post("/api/v1/feeds/all/rollback", json=body, headers=headers)
        assert answer.status_code == 400 and answer.json()["error"], body
    form = browser.post(
        "/dashboard/feeds/all/rollback",
        data={"csrf": csrf, "version": "99"},
        headers={"Origin": ORIGIN},
    )
    assert form.status_code == 400 and "no version 99" in text(form)
    assert feed_events(site) == []


def test_a_failing_store_is_503_without_its_url(
    site: App, admin: tuple[Client, str], tmp_path: Path
) -> None:
    browser, csrf = admin
    with sqlite3.connect(tmp_path / "b.db") as conn:
        conn.execute("DROP TABLE feed_versions")
    for answer in (
        browser.get("/dashboard/feeds/all"),
        browser.get("/dashboard/feeds/all/diff"),
        browser.get("/api/v1/feeds/all/versions"),
        browser.post(
            "/api/v1/feeds/all/rollback",
            json={"version": 1},
            headers={"X-CSRF-Token": csrf, "Origin": ORIGIN},
        ),
    ):
        assert answer.status_code == 503
        assert "the server log says why" in answer.text
        assert "sqlite" not in answer.text and str(tmp_path) not in answer.text


def test_viewers_anonymous_and_cross_site_requests_change_nothing(
    site: App, viewer: tuple[Client, str], admin: tuple[Client, str]
) -> None:
    (as_viewer, viewer_csrf), (as_admin, admin_csrf) = viewer, admin
    anonymous = site.client()
    try:
        assert as_viewer.get("/dashboard/feeds/all/confirm?action=approve").status_code == 403
        for action in ("approve", "rollback", "release"):
            form = {"csrf": viewer_csrf, "version": "1"}
            page = f"/dashboard/feeds/all/{action}"
            api = f"/api/v1/feeds/all/{action}"
            body = {"version": 1} if action == "rollback" else {}
            assert as_viewer.post(page, data=form, headers={"Origin": ORIGIN}).status_code == 403
            refused = as_viewer.post(
                api, json=body, headers={"X-CSRF-Token": viewer_csrf, "Origin": ORIGIN}
            )
            assert refused.status_code == 403 and "viewer" in refused.json()["error"]
            assert anonymous.post(page, data=form, headers={"Origin": ORIGIN}).status_code == 401
            assert anonymous.post(api, json=body).status_code == 401
            form = {"csrf": admin_csrf, "version": "1"}
            evil = {"Origin": "https://evil.test"}
            assert as_admin.post(page, data=form, headers=evil).status_code == 403
            assert as_admin.post(page, data={"version": "1"}).status_code == 403  # no token
            assert (
                as_admin.post(
                    api, json=body, headers=evil | {"X-CSRF-Token": admin_csrf}
                ).status_code
                == 403
            )
            assert as_admin.post(api, json=body, headers={"Origin": ORIGIN}).status_code == 403
        assert anonymous.get("/dashboard/feeds").status_code == 303
        assert anonymous.get("/api/v1/feeds/all").status_code == 401
    finally:
        anonymous.close()
    assert feed_events(site) == []
    assert as_admin.get("/api/v1/feeds/all").json()["held_since"] is not None  # still held


def test_a_rollback_to_a_version_without_its_shards_is_refused(tmp_path: Path) -> None:
    """The same rule as `banfeed feeds rollback` (``shards.check_rollback``): a version
    published before the feed had shards has none to serve, so the API refuses it."""
    path = write_site(tmp_path)
    app = open_app(path, Clock(T0))
    seed(app, *((ip, "IPS", 2, 10) for ip in FIRST))
    app.daemon.cache.refresh()  # version 1 of "all", unsharded
    app.daemon.store.close()
    text = path.read_text(encoding="utf-8")
    path.write_text(text.replace('name = "all"\n', 'name = "all"\nlimit = 8\nshards = 3\n', 1))
    app = open_app(path, Clock(T0 + 60))
    app.daemon.cache.refresh()  # version 2, with its three shards
    browser = app.client()
    csrf = sign_in(browser, *ADMIN)
    headers = {"X-CSRF-Token": csrf, "Origin": ORIGIN}
    definition = browser.get("/api/v1/feeds/all").json()["definition"]
    assert definition["limit"] == 8 and definition["shards"] == 3
    assert definition["shard_urls"] == [f"/feeds/all-{k}.txt" for k in (1, 2, 3)]
    assert 'href="/feeds/all-3.txt"' in browser.get("/dashboard/feeds/all").text
    refused = browser.post("/api/v1/feeds/all/rollback", json={"version": 1}, headers=headers)
    assert refused.status_code == 400
    assert "version 1 has no bytes kept for shard(s) 1, 2, 3" in refused.json()["error"]
    assert (
        browser.post("/api/v1/feeds/all/rollback", json={"version": 2}, headers=headers).status_code
        == 200
    )
    browser.close()
    app.daemon.store.close()
