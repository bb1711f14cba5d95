"""The Allowlist, Bans and Events pages, their API twins and the CSV download of the offenders
search (a real SQLite store, the whole app in process): rows rendered, filters, each write
through its confirmation with the user and the note in the audit event, the breadth guard,
refusals, keyset paging of the audit log, and a CSV of every match of a search bigger than a
page, quoted by RFC 4180 and safe to open in a spreadsheet."""

from __future__ import annotations

import asyncio
import csv
import io
import sqlite3
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from webkit import ADMIN, ORIGIN, VIEWER, App, Client, csrf_of, open_app, seed, sign_in, write_site

from banfeed import control
from banfeed.errors import StoreError
from banfeed.models import Ban, BanOrigin, Event, EventKind
from banfeed.policy import PrefixGuard
from banfeed.timeutil import iso
from banfeed.web import Web
from banfeed.web.search import (
    EXPORT_COLUMNS,
    MAX_LIMIT,
    OffenderQuery,
    csv_stream,
    export_query,
    search,
)
from conftest import T0, Clock

CONFIG = '[allowlist]\nnetworks = ["45.40.0.0/16"]\n[safety]\nprotect = ["45.41.0.0/24"]\n'
SAME_SITE = {"Origin": ORIGIN}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[App]:
    app = open_app(write_site(tmp_path, CONFIG), Clock(T0))
    seed(app, ("45.33.1.1", "IPS", 3, 10), ("45.33.1.2", "DoS", 1, 20), ("45.34.0.1", "AV", 2, 5))
    clients: list[Client] = []
    app.clients = clients  # type: ignore[attr-defined]
    yield app
    for made in clients:
        made.close()
    app.daemon.store.close()


def client(site: App, who: tuple[str, str] | None = None) -> tuple[Client, str]:
    made = site.client()
    site.clients.append(made)  # type: ignore[attr-defined]
    return made, sign_in(made, *who) if who else ""


def audit(site: App) -> list[Event]:
    """Every event, newest first."""
    with site.daemon.store.read() as tx:
        return tx.events_matching()


def allow_entry(site: App, network: str, actor: str = "bob", note: str | None = None) -> None:
    now = int(site.clock())
    guard = PrefixGuard()
    control.allow_add(
        site.daemon.store, network, expires=None, note=note, actor=actor, now=now, guard=guard
    )


def post(browser: Client, action: str, csrf: str, **fields: str) -> Any:
    return browser.post(
        f"/dashboard/lists/{action}", data={"csrf": csrf, **fields}, headers=SAME_SITE
    )


def searched(browser: Client, query: str) -> list[str]:
    answer = browser.get(f"/api/v1/offenders?{query}")
    assert answer.status_code == 200, answer.text
    return [o["ip"] for o in answer.json()["offenders"]]


# -- the allowlist ---------------------------------------------------------------------------


def test_the_allowlist_shows_config_and_store_entries_and_filters(site: App) -> None:
    allow_entry(site, "45.33.9.0/24", note="partner scanner")
    viewer, _ = client(site, VIEWER)
    page = viewer.get("/dashboard/allowlist")
    assert page.status_code == 200
    for text in ("45.40.0.0/16", "from banfeed.toml [allowlist]", "45.41.0.0/24", "protect"):
        assert text in page.text
    assert "45.33.9.0/24" in page.text and "bob" in page.text and "partner scanner" in page.text
    assert "Remove…" not in page.text and "/dashboard/lists/confirm" not in page.text  # viewer
    admin, _ = client(site, ADMIN)
    as_admin = admin.get("/dashboard/allowlist").text
    assert as_admin.count("Remove…") == 1  # the store's entry; the config's are read-only
    assert 'name="force"' in as_admin and "past the breadth guard" in as_admin
    only = admin.get("/dashboard/allowlist?q=partner").text
    assert "45.33.9.0/24" in only and "45.40.0.0/16" not in only
    inside = admin.get("/dashboard/allowlist?q=45.40.7.7").text
    assert "45.40.0.0/16" in inside and "45.33.9.0/24" not in inside
    assert "No entry matches." in admin.get("/dashboard/allowlist?q=nothing-like-it").text
    listed = admin.get("/api/v1/allowlist").json()["allowlist"]
    assert [(r["network"], r["source"], r["removable"]) for r in listed] == [
        ("45.40.0.0/16", "config", False),
        ("45.41.0.0/24", "protected", False),
        ("45.33.9.0/24", "store", True),
    ]
    assert listed[2]["actor"] == "bob" and listed[2]["note"] == "partner scanner"
    assert admin.get("/api/v1/allowlist?q=45.41.0.9").json()["allowlist"][0]["source"] == (
        "protected"
    )
    assert admin.get("/api/v1/allowlist?x=1").status_code == 400


def test_an_allowlist_entry_is_added_through_its_confirmation(site: App) -> None:
    admin, csrf = client(site, ADMIN)
    asked = {"action": "allow", "target": "45.33.1.0/24", "expires": "30d", "note": "partner"}
    confirm = admin.get(f"/dashboard/lists/confirm?{urlencode(asked)}")
    assert confirm.status_code == 200
    assert "No feed publishes it while the entry lasts" in confirm.text
    assert 'action="/dashboard/lists/allow"' in confirm.text
    assert 'value="45.33.1.0/24"' in confirm.text and 'value="30d"' in confirm.text
    assert searched(admin, "q=45.33.1.1") == ["45.33.1.1"]
    done = post(
        admin, "allow", csrf_of(confirm.text), **{k: asked[k] for k in asked if k != "action"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/dashboard/allowlist?done=allow&target=45.33.1.0%2F24"
    shown = admin.get(done.headers["location"]).text
    assert "Done: allowlisted 45.33.1.0/24" in shown
    assert str(iso(T0 + 30 * 86400))[:10] in shown and "alice" in shown
    event = audit(site)[0]
    assert (event.kind, event.actor, event.ip) == (
        EventKind.ALLOWLIST_ADDED,
        "alice",
        "45.33.1.0/24",
    )
    assert "partner" in event.detail and "until" in event.detail
    assert searched(admin, "q=45.33.1.1") == []  # carved out: no longer active
    assert searched(admin, "q=45.33.1.1&state=suppressed") == ["45.33.1.1"]
    assert csrf  # the session's token is the one each form carries
    assert csrf_of(shown) == csrf


def test_the_breadth_guard_refuses_a_slash_4_unless_ticked(site: App) -> None:
    admin, csrf = client(site, ADMIN)
    before = audit(site)
    for action in ("allow", "ban"):
        refused = post(admin, action, csrf, target="16.0.0.0/4", note="too wide")
        assert refused.status_code == 400, action
        assert "broader than /16" in refused.text and 'name="force"' in refused.text
        assert 'value="16.0.0.0/4"' in refused.text  # the form is kept to tick and resend
    assert audit(site) == before
    forced = post(admin, "allow", csrf, target="16.0.0.0/4", note="on purpose", force="on")
    assert forced.status_code == 303
    event = audit(site)[0]
    assert event.actor == "alice" and "--force" in event.detail and "on purpose" in event.detail
    api = admin.post(
        "/api/v1/allow",
        json={"target": "32.0.0.0/4"},
        headers={"X-CSRF-Token": csrf, **SAME_SITE},
    )
    assert api.status_code == 400 and "broader" in api.json()["error"]


def test_a_store_entry_is_removed_and_a_config_entry_is_not(site: App) -> None:
    allow_entry(site, "45.33.1.0/24")
    admin, csrf = client(site, ADMIN)
    assert searched(admin, "q=45.33.1.1") == []
    confirm = admin.get("/dashboard/lists/confirm?action=remove&target=45.33.1.0/24")
    assert "Feeds may publish it again" in confirm.text and "readonly" in confirm.text
    done = post(admin, "remove", csrf, target="45.33.1.0/24")
    assert done.status_code == 303 and "done=remove" in done.headers["location"]
    assert (
        "Done: removed from the allowlist: 45.33.1.0/24" in admin.get(done.headers["location"]).text
    )
    event = audit(site)[0]
    assert (event.kind, event.actor, event.ip) == (
        EventKind.ALLOWLIST_REMOVED,
        "alice",
        "45.33.1.0/24",
    )
    assert searched(admin, "q=45.33.1.1") == ["45.33.1.1"]  # published again
    kept = post(admin, "remove", csrf, target="45.40.0.0/16")
    assert kept.status_code == 400 and "config entries stay" in kept.text
    allow_entry(site, "45.34.0.0/24")
    headers = {"X-CSRF-Token": csrf, **SAME_SITE}
    noted = admin.post(
        "/api/v1/allowlist/remove", json={"target": "45.34.0.0/24", "note": "x"}, headers=headers
    )
    assert noted.status_code == 400 and "records no note" in noted.json()["error"]
    api = admin.post("/api/v1/allowlist/remove", json={"target": "45.34.0.0/24"}, headers=headers)
    assert api.status_code == 200 and api.json()["actor"] == "alice"
    assert admin.get("/api/v1/allowlist").json()["allowlist"][-1]["source"] == "protected"


# -- bans ------------------------------------------------------------------------------------


def test_bans_are_listed_filtered_and_paged(site: App) -> None:
    store = site.daemon.store
    with store.write() as tx:
        tx.save_ban(
            Ban(ip_network("45.50.0.0/24"), T0 - 50, T0 + 86400, BanOrigin.MANUAL, "bob", "scanner")
        )
        tx.save_ban(
            Ban(ip_network("45.51.0.9/32"), T0 - 40, None, BanOrigin.IMPORTED, "carol", "old list")
        )
        tx.save_ban(
            Ban(ip_network("45.52.0.0/24"), T0 - 900, T0 - 60, BanOrigin.MANUAL, "bob", "gone")
        )
    viewer, _ = client(site, VIEWER)
    page = viewer.get("/dashboard/bans").text
    assert "45.50.0.0/24" in page and "scanner" in page and "45.51.0.9/32" in page
    assert "45.52.0.0/24" not in page and "Unban…" not in page and "Ban…" not in page
    expired = viewer.get("/dashboard/bans?state=expired").text
    assert "45.52.0.0/24" in expired and "45.50.0.0/24" not in expired

    def networks(query: str) -> list[str]:
        answer = viewer.get(f"/api/v1/bans?{query}")
        assert answer.status_code == 200, answer.text
        return [b["network"] for b in answer.json()["bans"]]

    assert networks("") == ["45.50.0.0/24", "45.51.0.9/32"]
    assert networks("origin=imported") == ["45.51.0.9/32"]
    assert networks("state=all&origin=manual") == ["45.50.0.0/24", "45.52.0.0/24"]
    assert networks("network=45.50.0.7") == ["45.50.0.0/24"]  # containing it
    assert networks("network=45.0.0.0/8&state=all") == [
        "45.50.0.0/24",
        "45.51.0.9/32",
        "45.52.0.0/24",
    ]
    first = viewer.get("/api/v1/bans?limit=1").json()
    assert first["total"] == 2 and first["next"] == 1 and len(first["bans"]) == 1
    assert viewer.get("/api/v1/bans?limit=1&offset=1").json()["next"] is None
    assert "next page" in viewer.get("/dashboard/bans?limit=1").text
    for bad in ("state=gone", "network=45.50.0.1/24", "limit=0"):
        assert viewer.get(f"/api/v1/bans?{bad}").status_code == 400, bad
        assert viewer.get(f"/dashboard/bans?{bad}").status_code == 400, bad


def test_a_ban_and_its_unban_go_through_confirmation(site: App) -> None:
    admin, csrf = client(site, ADMIN)
    page = admin.get("/dashboard/bans").text
    assert 'action="/dashboard/lists/confirm"' in page and 'name="ttl"' in page
    confirm = admin.get("/dashboard/lists/confirm?action=ban&target=45.60.0.0/24&ttl=7d")
    assert "Every feed publishes it" in confirm.text and 'value="7d"' in confirm.text
    done = post(admin, "ban", csrf, target="45.60.0.0/24", ttl="7d", note="scanner farm")
    assert done.status_code == 303
    assert done.headers["location"] == "/dashboard/bans?done=ban&target=45.60.0.0%2F24"
    listed = admin.get(done.headers["location"]).text
    assert "Done: banned 45.60.0.0/24" in listed and "scanner farm" in listed and "alice" in listed
    event = audit(site)[0]
    assert (event.kind, event.actor) == (
        EventKind.BANNED,
        "alice",
    ) and "scanner farm" in event.detail
    confirm = admin.get("/dashboard/lists/confirm?action=unban&target=45.60.0.0/24")
    assert "Bans inside the network are removed with it" in confirm.text
    gone = post(admin, "unban", csrf, target="45.60.0.0/24", note="ticket 12")
    assert gone.status_code == 303 and "done=unban" in gone.headers["location"]
    event = audit(site)[0]
    assert (event.kind, event.actor, event.ip) == (EventKind.UNBANNED, "alice", "45.60.0.0/24")
    assert "ticket 12" in event.detail
    assert admin.get("/api/v1/bans?state=all").json()["bans"] == []
    private = post(admin, "ban", csrf, target="10.0.0.1")
    assert private.status_code == 400 and "not publishable" in private.text


def test_list_writes_refuse_viewers_anonymous_and_cross_site_requests(site: App) -> None:
    anonymous, _ = client(site)
    viewer, viewer_csrf = client(site, VIEWER)
    admin, admin_csrf = client(site, ADMIN)
    allow_entry(site, "45.33.1.0/24")
    before = audit(site)
    assert (
        viewer.get("/dashboard/lists/confirm?action=allow&target=45.33.2.0/24").status_code == 403
    )
    for action in ("allow", "remove", "ban", "unban"):
        fields = {"target": "45.33.1.0/24"}
        assert post(anonymous, action, "forged", **fields).status_code == 401, action
        assert post(viewer, action, viewer_csrf, **fields).status_code == 403, action
        assert post(admin, action, "wrong", **fields).status_code == 403, action
        foreign = admin.post(
            f"/dashboard/lists/{action}",
            data={"csrf": admin_csrf, **fields},
            headers={"Origin": "https://evil.test"},
        )
        assert foreign.status_code == 403, action
    headers = {"X-CSRF-Token": viewer_csrf, **SAME_SITE}
    refused = viewer.post(
        "/api/v1/allowlist/remove", json={"target": "45.33.1.0/24"}, headers=headers
    )
    assert refused.status_code == 403
    assert audit(site) == before
    assert anonymous.get("/api/v1/events").status_code == 401
    assert anonymous.get("/dashboard/events").status_code == 303


# -- events ----------------------------------------------------------------------------------


def test_the_audit_log_filters_and_pages_newest_first_without_gaps(site: App) -> None:
    kinds = [EventKind.BANNED, EventKind.UNBANNED, EventKind.ALLOWLIST_ADDED]
    made = [
        Event(
            T0 - 3000 + i // 3,
            kinds[i % 3],
            f"45.33.{i % 4}.{i % 7}",
            ("bob", "carol")[i % 2],
            f"e{i}",
        )
        for i in range(250)  # three to a second: pages must split seconds without a gap
    ]
    made.append(Event(T0 - 100, EventKind.BANNED, "45.33.0.0/16", "dave", "a network"))
    with site.daemon.store.write() as tx:
        tx.insert_events(made)
    viewer, _ = client(site, VIEWER)
    everything = [e.detail for e in audit(site)]  # the store's order: newest first

    def details(query: str) -> list[str]:
        seen: list[str] = []
        url = f"/api/v1/events?{query}"
        for _ in range(len(made) + 2):  # a cursor that does not advance fails, not hangs
            answer = viewer.get(url)
            assert answer.status_code == 200, answer.text
            page = answer.json()
            seen += [e["detail"] for e in page["events"]]
            if page["next"] is None:
                return seen
            url = f"/api/v1/events?{query}&cursor={page['next']}"
        raise AssertionError(f"{query}: the cursor did not reach the end")

    for size in (1, 2, 7):  # a second over two or three pages, and pages of several seconds
        assert details(f"limit={size}") == everything, size
    assert details("limit=40&actor=bob") == [e.detail for e in made[::-1] if e.actor == "bob"]
    assert details("kind=unbanned&kind=allowlist_added") == [
        e.detail for e in made[::-1] if e.kind is not EventKind.BANNED
    ]
    about = details("address=45.33.1.2&limit=5")
    assert about[0] == "a network" and set(about[1:]) == {
        e.detail for e in made if e.ip == "45.33.1.2"
    }
    since, until = T0 - 3000 + 10, T0 - 3000 + 20
    window = [e.detail for e in made[::-1] if since <= e.time <= until]
    assert details(f"since={since}&until={iso(until)}&limit=4") == window and len(window) == 33
    first = viewer.get("/api/v1/events?limit=2").json()
    assert [e["actor"] for e in first["events"]][0] == "dave" and first["window_full"] is False
    page = viewer.get("/dashboard/events?actor=dave").text
    assert "a network" in page and "e249" not in page and "older »" not in page
    assert "older »" in viewer.get("/dashboard/events?limit=3").text
    for bad in (
        "since=yesterday",
        "kind=nothing",
        "address=45.33.1.2/24",
        "cursor=zz",
        "limit=501",
    ):
        assert viewer.get(f"/api/v1/events?{bad}").status_code == 400, bad
        assert viewer.get(f"/dashboard/events?{bad}").status_code == 400, bad


# -- CSV of the offenders search -------------------------------------------------------------

TRICKY = [
    ("45.90.0.1", 'IPS, "quoted"'),
    ("45.90.0.2", '=HYPERLINK("http://evil.test")'),
    ("45.90.0.3", "@SUM(A1)"),
    ("45.90.0.4", "+1"),
    ("45.90.0.5", "-1"),
    ("45.90.0.6", "\tTab"),
    ("45.90.0.7", "line\nbreak"),
]


def test_the_csv_holds_every_match_of_a_search_bigger_than_a_page(site: App) -> None:
    many = [(f"45.70.{i // 250}.{i % 250}", "IPS", 1 + i % 9, i % 600) for i in range(1234)]
    seed(site, *many, *((ip, cause, 1, 1) for ip, cause in TRICKY))
    viewer, _ = client(site, VIEWER)
    answer = viewer.get("/dashboard/offenders.csv?state=any&sort=-offense_count&limit=5&offset=3")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    disposition = answer.headers["content-disposition"]
    assert disposition.startswith("attachment;") and 'filename="banfeed-offenders-' in disposition
    assert answer.text.startswith(",".join(EXPORT_COLUMNS) + "\r\n") and answer.text.endswith(
        "\r\n"
    )
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    body = rows[1:]
    assert len(body) == 3 + 1234 + len(TRICKY) > 2 * MAX_LIMIT  # every row, not one page
    ips = [r[0] for r in body]
    assert len(set(ips)) == len(ips)
    counts = [int(r[EXPORT_COLUMNS.index("offense_count")]) for r in body]
    assert counts == sorted(counts, reverse=True)  # in the search's order, page after page
    assert (
        viewer.get("/api/v1/offenders.csv?state=any&sort=-offense_count").content == answer.content
    )


def test_the_csv_quotes_by_rfc_4180_and_defuses_formulas(site: App) -> None:
    seed(site, *((ip, cause, 1, 1) for ip, cause in TRICKY))
    viewer, _ = client(site, VIEWER)
    answer = viewer.get("/dashboard/offenders.csv?q=45.90.0.0/24")
    assert answer.status_code == 200
    assert '"IPS, ""quoted"""' in answer.text and '"line\nbreak"' in answer.text
    rows = list(csv.reader(io.StringIO(answer.text, newline="")))
    sources = {r[0]: r[EXPORT_COLUMNS.index("sources")] for r in rows[1:]}
    assert sources == {
        "45.90.0.1": 'IPS, "quoted"',
        "45.90.0.2": "'" + '=HYPERLINK("http://evil.test")',
        "45.90.0.3": "'@SUM(A1)",
        "45.90.0.4": "'+1",
        "45.90.0.5": "'-1",
        "45.90.0.6": "'\tTab",
        "45.90.0.7": "line\nbreak",
    }
    offenders = viewer.get("/dashboard/offenders?q=45.90.0.0/24&sort=-ip").text
    assert 'href="/dashboard/offenders.csv?q=45.90.0.0%2F24&amp;sort=-ip"' in offenders
    assert viewer.get("/dashboard/offenders.csv?state=gone").status_code == 400
    assert viewer.get("/api/v1/offenders.csv?q=x").status_code == 400
    empty = viewer.get("/api/v1/offenders.csv?q=45.91.0.0/24")
    assert empty.status_code == 200 and empty.text == ",".join(EXPORT_COLUMNS) + "\r\n"
    anonymous, _ = client(site)
    assert anonymous.get("/api/v1/offenders.csv").status_code == 401
    assert anonymous.get("/dashboard/offenders.csv").status_code == 303


def test_a_store_failing_after_the_first_page_ends_the_csv_with_an_error(site: App) -> None:
    seed(site, *((f"45.71.{i // 250}.{i % 250}", "IPS", 1, 1) for i in range(MAX_LIMIT + 20)))
    web = Web(site.daemon, "test secret")
    first = search(web, export_query(OffenderQuery()))
    assert first.next is not None and len(first.rows) == MAX_LIMIT

    async def read_on() -> bytes:
        pieces = csv_stream(web, first)
        head = await anext(pieces)
        with sqlite3.connect(site.path.parent / "b.db") as db:  # the store loses its table
            db.execute("ALTER TABLE offenders RENAME TO offenders_gone")
        with pytest.raises(StoreError):
            await anext(pieces)
        return head

    head = asyncio.run(read_on())
    assert head.count(b"\r\n") == 1 + MAX_LIMIT  # the first page went out, then an error
