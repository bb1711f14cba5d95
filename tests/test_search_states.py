"""The dashboard's search and `list` by state, against every row's state decided one by one:
a suppressed search reads only the never-block, protected and allowlisted ranges in SQL
(``OffenderFilter.store_filters``), and must find exactly what ``policy.state`` calls
suppressed — never fewer, never more — in every sort, across pages (a real SQLite store)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from webkit import ADMIN, App, Client, open_app, sign_in, write_site

from banfeed import compose, control, reports
from banfeed.models import Offender, OffenderState
from banfeed.policy import PrefixGuard, state
from conftest import T0, Clock

ALLOW = '[allowlist]\nnetworks = ["45.60.0.0/16"]\n[safety]\nprotect = ["2a02:c7f::/32"]\n'
ADDRESSES = [
    *(f"45.60.{i}.{i + 1}" for i in range(6)),  # config allowlist
    *(f"2a02:c7f:{i:x}::1" for i in range(4)),  # protected
    "77.77.1.1",  # a store allow entry
    "77.77.1.2",
    "10.1.2.3",  # never-block: private, loopback, documentation, link-local …
    "127.0.0.9",
    "192.0.2.44",
    "100.64.3.3",
    "fe80::7",
    "2001:db8::77",
    "::ffff:8.8.8.8",
    *(f"45.{33 + i % 5}.{i}.9" for i in range(30)),  # ordinary
    *(f"2a00:1450:40{i:02d}::1" for i in range(10)),
]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[App, Client]]:
    app = open_app(write_site(tmp_path, ALLOW), Clock(T0))
    rng = random.Random(7)
    now = int(app.clock())
    rows = []
    for i, text in enumerate(ADDRESSES):
        last = now - rng.randrange(1, 40_000)
        until = rng.choice([None, last + 86_400, now - 10])  # forever, active, expired
        status = "unbanned" if i % 11 == 3 else "listed"
        rows.append(
            Offender(
                ip_address(text),
                last - 50,
                last,
                rng.randrange(1, 30),
                ("IPS",),
                ("fw-1",),
                ("fw-1/root",),
                until,
                status,  # type: ignore[arg-type]
            )
        )
    with app.daemon.store.write() as tx:
        tx.insert_offenders(rows, now)
        tx.bump_version()
    control.allow_add(
        app.daemon.store,
        "77.77.1.0/30",
        expires=None,
        note="partner",
        actor="alice",
        now=now,
        guard=PrefixGuard(),
    )
    browser = app.client()
    sign_in(browser, *ADMIN)
    yield app, browser
    browser.close()
    app.daemon.store.close()


def runtime(app: App) -> compose.Runtime:
    return compose.Runtime(app.daemon.config, app.daemon.store, app.clock)


def expected(app: App, wanted: str) -> set[str]:
    now = int(app.clock())
    with app.daemon.store.read() as tx:
        allow = reports.effective_allowlist(runtime(app), tx)
        every = list(tx.iter_offenders_matching())
    return {str(o.ip) for o in every if wanted == "any" or state(o, now, allow).value == wanted}


def paged(browser: Client, query: str) -> list[str]:
    seen: list[str] = []
    url = f"/api/v1/offenders?{query}&limit=3"
    while True:
        answer = browser.get(url)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [o["ip"] for o in page["offenders"]]
        if page["next"] is None:
            return seen
        url = f"/api/v1/offenders?{query}&limit=3&cursor={page['next']}"


@pytest.mark.parametrize("wanted", [s.value for s in OffenderState] + ["any"])
@pytest.mark.parametrize("sort", ["ip", "-ip", "-last_offense", "offense_count"])
def test_each_state_finds_exactly_its_rows_in_every_sort(
    site: tuple[App, Client], wanted: str, sort: str
) -> None:
    app, browser = site
    truth = expected(app, wanted)
    if wanted == "suppressed":
        assert len(truth) >= 15  # config, protected, store entry and never-block rows
    found = paged(browser, f"state={wanted}&sort={sort}")
    assert len(found) == len(set(found)) and set(found) == truth


def test_list_by_state_is_the_same_set(site: tuple[App, Client]) -> None:
    app, _ = site
    now = int(app.clock())
    for wanted in OffenderState:
        where = reports.OffenderFilter(states=frozenset({wanted}))
        with app.daemon.store.read() as tx:
            allow = reports.effective_allowlist(runtime(app), tx)
            listed = {str(o.ip) for o in reports.listed_offenders(tx, now, allow, where=where)}
        assert listed == expected(app, wanted.value), wanted


@pytest.mark.parametrize(
    ("query", "holds"),
    [
        ("last_since=3h", lambda o, now: o.last_offense >= now - 3 * 3600),
        ("last_until=5h", lambda o, now: o.last_offense <= now - 5 * 3600),
        (
            "first_since=2h&first_until=1h",
            lambda o, now: now - 7200 <= o.first_offense <= now - 3600,
        ),
        (f"first_since={T0 - 30_000}", lambda o, now: o.first_offense >= T0 - 30_000),
        ("last_since=2026-01-01", lambda o, now: o.last_offense >= 1767225600),
    ],
)
def test_first_and_last_seen_filters_find_exactly_their_rows(
    site: tuple[App, Client], query: str, holds: Any
) -> None:
    app, browser = site
    now = int(app.clock())
    with app.daemon.store.read() as tx:
        every = list(tx.iter_offenders_matching())
    truth = {str(o.ip) for o in every if holds(o, now)} & expected(app, "any")
    assert 0 < len(truth) < len(every) or query.startswith("last_since=2026")
    for sort in ("ip", "-first_offense", "last_offense"):
        assert set(paged(browser, f"state=any&sort={sort}&{query}")) == truth, (query, sort)


def test_a_time_filter_that_is_no_time_is_refused(site: tuple[App, Client]) -> None:
    _, browser = site
    answer = browser.get("/api/v1/offenders?first_since=yesterday")
    assert answer.status_code == 400 and "first_since 'yesterday'" in answer.json()["error"]


def test_time_filters_include_their_bounds(site: tuple[App, Client]) -> None:
    app, browser = site
    with app.daemon.store.read() as tx:
        one = next(iter(tx.iter_offenders_matching()))
    for key, value in (("first", one.first_offense), ("last", one.last_offense)):
        query = f"state=any&{key}_since={value}&{key}_until={value}"
        assert str(one.ip) in paged(browser, query), query
