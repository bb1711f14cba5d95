"""The overview page and its API in process (real SQLite store, the whole app): the series of
offenses, new offenders and expiries per bucket (edges included) for 24 h, 7 d and 30 d, the top
causes, devices and VDOMs, consumers and whether each holds the served version, the last cycles
of a real collection against simulated FortiGates, and the page complete without JavaScript."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest
from webkit import ADMIN, App, Client, open_app, seed, sign_in, write_site

from banfeed import simulator
from banfeed.compose import Runtime
from banfeed.models import Offender, Offense
from banfeed.web import overview
from conftest import T0, Clock, fortigate_toml

HOUR, DAY = 3600, 86400
NOW = T0 // HOUR * HOUR + 1800  # half past the hour: the current hourly bucket holds it


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[App, Client]]:
    app = open_app(write_site(tmp_path), Clock(NOW))
    browser = app.client()
    sign_in(browser, *ADMIN)
    yield app, browser
    browser.close()
    app.daemon.store.close()


def json_of(browser: Client, url: str) -> Any:
    answer = browser.get(url)
    assert answer.status_code == 200, answer.text
    return answer.json()


def add_offenses(app: App, *rows: tuple[str, int, str, str, str]) -> None:
    """Offenses (ip, created, cause, device, vdom) and each address's offender, first offense
    at its earliest offense, active for a day after its last."""
    by_ip: dict[str, list[tuple[str, int, str, str, str]]] = {}
    for row in rows:
        by_ip.setdefault(row[0], []).append(row)
    with app.daemon.store.write() as tx:
        tx.insert_offenses(
            [(Offense(d, v, ip_address(ip), t, None, c), ip) for ip, t, c, d, v in rows], NOW
        )
        tx.insert_offenders(
            [
                Offender(
                    ip_address(ip),
                    min(r[1] for r in got),
                    max(r[1] for r in got),
                    len(got),
                    tuple(sorted({r[2] for r in got})),
                    tuple(sorted({r[3] for r in got})),
                    tuple(sorted({f"{r[3]}/{r[4]}" for r in got})),
                    max(r[1] for r in got) + DAY,
                    "listed",
                )
                for ip, got in by_ip.items()
            ],
            NOW,
        )
        tx.bump_version()


HOUR_START = NOW // HOUR * HOUR  # the current bucket of 24h starts here
ROWS = [
    ("45.33.1.1", HOUR_START, "IPS", "fw-1", "root"),  # the current hour's first second
    ("45.33.1.1", HOUR_START - 1, "IPS", "fw-1", "root"),  # the hour before's last second
    ("45.33.1.2", HOUR_START - 1, "DoS", "fw-2", "dmz"),
    ("45.33.1.3", HOUR_START - 23 * HOUR, "DoS", "fw-2", "root"),  # the oldest hourly bucket
    ("45.33.1.4", HOUR_START - 23 * HOUR - 1, "AV", "fw-1", "root"),  # outside 24h, in 7d
    ("45.33.1.5", NOW - 2 * DAY + 2 * HOUR, "APP", "fw-3", "root"),  # expired 22 hours ago
]


def test_series_counts_each_bucket_with_its_edges(site: tuple[App, Client]) -> None:
    app, browser = site
    add_offenses(app, *ROWS)
    s = json_of(browser, "/api/v1/overview/series?range=24h")
    assert s["range"] == "24h" and s["step"] == HOUR and len(s["time"]) == 24
    assert s["time"][-1] == HOUR_START and s["time"][0] == HOUR_START - 23 * HOUR
    assert s["to"] == overview.iso(HOUR_START + HOUR)
    assert s["offenses"][-1] == 1 and s["offenses"][-2] == 2 and s["offenses"][0] == 1
    assert sum(s["offenses"]) == 4
    # new offenders: 45.33.1.1 first offended an hour ago (its older offense), .2 then too
    assert (
        s["new_offenders"][-2] == 2 and s["new_offenders"][0] == 1 and sum(s["new_offenders"]) == 3
    )
    # expiries: 45.33.1.5, active until a day after its offense (22 hours ago: bucket 1); the
    # others are active still
    assert s["expiries"][1] == 1 and sum(s["expiries"]) == 1
    assert s["top"]["causes"] == [{"name": "DoS", "offenses": 2}, {"name": "IPS", "offenses": 2}]
    assert s["top"]["devices"][0] == {"name": "fw-1", "offenses": 2}
    assert {"name": "fw-2/dmz", "offenses": 1} in s["top"]["vdoms"]

    week = json_of(browser, "/api/v1/overview/series?range=7d")
    assert week["step"] == 6 * HOUR and len(week["time"]) == 28
    assert sum(week["offenses"]) == 6 and week["top"]["causes"][0] == {"name": "DoS", "offenses": 2}
    month = json_of(browser, "/api/v1/overview/series?range=30d")
    assert month["step"] == DAY and len(month["time"]) == 30 and month["time"][-1] % DAY == 0
    assert sum(month["offenses"]) == 6 and sum(month["new_offenders"]) == 5
    bad = browser.get("/api/v1/overview/series?range=1y")
    assert bad.status_code == 400 and "choose 24h, 7d, 30d" in bad.json()["error"]


def test_a_series_is_computed_again_when_the_store_changes(site: tuple[App, Client]) -> None:
    app, browser = site
    add_offenses(app, ROWS[0])
    assert sum(json_of(browser, "/api/v1/overview/series")["offenses"]) == 1
    add_offenses(app, ("45.33.9.9", NOW - 60, "IPS", "fw-1", "root"))  # bumps the version
    assert sum(json_of(browser, "/api/v1/overview/series")["offenses"]) == 2
    app.clock.now = NOW + HOUR  # the same store an hour on: the buckets moved
    moved = json_of(browser, "/api/v1/overview/series")
    assert moved["time"][-1] == HOUR_START + HOUR and moved["offenses"][-1] == 0


def table(html: str, marker: str) -> str:
    """The body of the first table at or after ``marker``."""
    start = html.index("<tbody>", html.index(marker))
    return html[start : html.index("</tbody>", start)]


def cells(row_html: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", row_html)]


def test_the_page_without_javascript_has_the_series_tops_and_range_links(
    site: tuple[App, Client],
) -> None:
    app, browser = site
    add_offenses(app, *ROWS)
    page = browser.get("/dashboard/")
    assert page.status_code == 200
    html = page.text
    assert 'href="/dashboard/?range=7d"' in html and 'href="/dashboard/?range=30d"' in html
    assert re.search(r'data-range="24h" aria-current="true">24h<', html)
    series = table(html, 'id="series-table"')
    rows = re.findall(r"<tr>(.*?)</tr>", series, re.S)
    assert len(rows) == 24
    newest = cells(rows[0])
    assert newest[0] == overview.iso(HOUR_START)[:16].replace("T", " ")  # type: ignore[index]
    assert newest[1:] == ["1", "0", "0"] and cells(rows[1])[1:3] == ["2", "2"]
    causes = table(html, 'data-top="causes"')
    assert [cells(r) for r in re.findall(r"<tr>(.*?)</tr>", causes, re.S)] == [
        ["DoS", "2"],
        ["IPS", "2"],
    ]
    assert "fw-2/dmz" in table(html, 'data-top="vdoms"')
    assert '<script src="/dashboard/static/overview.js" defer>' in html
    assert "uPlot.iife.min.js" in html and "cdn" not in html.lower()

    week = browser.get("/dashboard/?range=7d").text
    assert re.search(r'data-range="7d" aria-current="true">7d<', week)
    assert len(re.findall(r"<tr>", table(week, 'id="series-table"'))) == 28
    assert "45.33.1.4" not in week and "AV" in table(week, 'data-top="causes"')
    odd = browser.get("/dashboard/?range=1y")
    assert (
        odd.status_code == 200
        and "range &#39;1y&#39;: choose 24h, 7d, 30d; showing 24h" in odd.text
    )


def test_the_vendored_chart_library_and_script_are_served(site: tuple[App, Client]) -> None:
    _, browser = site
    for path, kind in (
        ("vendor/uplot/uPlot.iife.min.js", "javascript"),
        ("vendor/uplot/uPlot.min.css", "css"),
        ("vendor/uplot/LICENSE", ""),  # as it came in the package
        ("overview.js", "javascript"),
    ):
        answer = browser.get(f"/dashboard/static/{path}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"], path
    assert "v1.6.32" in browser.get("/dashboard/static/vendor/uplot/uPlot.iife.min.js").text
    assert "MIT License" in browser.get("/dashboard/static/vendor/uplot/LICENSE").text


def fetch_feed(app: App, address: str, agent: str) -> None:
    client = app.client(address)
    try:
        assert client.get("/feeds/all.txt", headers={"User-Agent": agent}).status_code == 200
    finally:
        client.close()
    fetches = app.daemon.state.fetches
    with app.daemon.store.write() as tx:
        fetches.write(tx, fetches.take(), int(app.clock()))


def test_consumers_say_whether_they_hold_the_served_version(site: tuple[App, Client]) -> None:
    app, browser = site
    seed(app, ("45.33.1.1", "IPS", 1, 10))
    app.daemon.state.cache.refresh(force=True)
    fetch_feed(app, "192.0.2.10", "FortiGate/7.4 old")
    seed(app, ("45.33.1.2", "IPS", 1, 10))
    app.clock.now += 5
    app.daemon.state.cache.refresh(force=True)  # version 2 of "all"
    fetch_feed(app, "192.0.2.20", "FortiGate/7.4 new")
    found = json_of(browser, "/api/v1/overview")
    feed = next(f for f in found["feeds"] if f["feed"] == "all")
    current = {c["address"]: c["current"] for c in feed["consumers"]}
    assert feed["version"] == 2 and current == {"192.0.2.10": False, "192.0.2.20": True}
    html = table(browser.get("/dashboard/").text, 'id="consumers"')
    rows = {cells(r)[1]: cells(r) for r in re.findall(r"<tr[^>]*>(.*?)</tr>", html, re.S)}
    assert rows["192.0.2.20"][2:5:2] == ["FortiGate/7.4 new", "yes"]
    assert rows["192.0.2.10"][4] == "no: an older version"
    assert list(rows) == ["192.0.2.20", "192.0.2.10"]  # the latest fetch first


def test_a_real_cycle_is_kept_and_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock(T0)
    fleet = simulator.SimFleet(seed=3, clock=clock)
    fleet.add_device("edge-1", token="t1", entries=6)
    fleet.add_device("edge-2", token="right", entries=4)
    monkeypatch.setenv("TOKEN_1", "t1")
    monkeypatch.setenv("TOKEN_2", "wrong")  # refused: a failed poll
    with simulator.start(fleet) as sim:
        devices = "".join(
            fortigate_toml(name, url, f"TOKEN_{i}")
            for i, (name, url) in enumerate(sim.urls.items(), 1)
        )
        app = open_app(write_site(tmp_path, devices), clock)
        try:
            runtime = Runtime(app.daemon.config, app.daemon.store, clock)
            report = asyncio.run(runtime.collector().cycle())
            assert report.new_offenses == 6 and len(report.failed) == 1
            browser = app.client()
            sign_in(browser, *ADMIN)
            found = json_of(browser, "/api/v1/overview")
            (kept,) = found["cycles"]
            assert kept["started"] == overview.iso(T0)
            assert (kept["polls_ok"], kept["polls_failed"], kept["new_offenses"]) == (1, 1, 6)
            assert kept["new_offenders"] == 6 and kept["failed"] == ["edge-2/root auth"]
            assert kept["duration_s"] > 0
            html = table(browser.get("/dashboard/").text, 'id="cycles"')
            (row,) = re.findall(r'<tr class="bad">(.*?)</tr>', html, re.S)
            assert cells(row)[2:7] == ["1", "1", "6", "6", "0"] and "edge-2/root auth" in row
            browser.close()
        finally:
            app.daemon.store.close()


def test_alerts_firing_and_recent_on_the_overview_and_the_api(site: tuple[App, Client]) -> None:
    """What `banfeed run`'s alerting kept in the store (meta "alerts", oldest first): the
    overview shows what fires now (a device whose newest notice is "resolved" does not)."""
    import json

    from banfeed.alerts.model import Alert
    from banfeed.config.alerts import AlertKind, Severity

    app, browser = site
    held = Alert(AlertKind.FEED_HELD, "all", Severity.CRITICAL, "all is held: a drop", T0 - 300)
    failing = Alert(AlertKind.DEVICE_FAILING, "fw-1/root", Severity.WARNING, "fw-1 fails", T0 - 200)
    healed = Alert(
        AlertKind.DEVICE_FAILING, "fw-1/root", Severity.WARNING, "fw-1 ok", T0 - 100, resolved=True
    )
    with app.daemon.store.write() as tx:
        tx.set_meta("alerts", json.dumps([a.stored() for a in (held, failing, healed)]))
    found = json_of(browser, "/api/v1/alerts")
    assert [a["subject"] for a in found["firing"]] == ["all"]
    assert [a["status"] for a in found["recent"]] == ["resolved", "firing", "firing"]
    assert json_of(browser, "/api/v1/overview")["alerts"] == found
    page = browser.get("/dashboard/")
    firing_table = page.text.split('id="alerts-firing"')[1].split("</table>")[0]
    assert "all is held: a drop" in firing_table and "fw-1" not in firing_table
    assert "The last 3 notices" in page.text
    with app.daemon.store.write() as tx:
        tx.set_meta("alerts", "")
    assert "Nothing fires now" in browser.get("/dashboard/").text


def test_what_the_fortigates_loaded_is_shown_once_verified(site: tuple[App, Client]) -> None:
    import json

    app, browser = site
    assert "Not verified yet" in browser.get("/dashboard/").text
    assert json_of(browser, "/api/v1/overview")["verified"] is None
    device = {"device": "fw-1", "verdict": "overflow", "ok": False, "valid": 4}
    kept = {
        "time": T0 - 60,
        "feeds": [
            {
                "feed": "all",
                "served": {"entries": 6},
                "devices": [device | {"detail": "loaded 4 of 6", "holds_version": None}],
            }
        ],
    }
    with app.daemon.store.write() as tx:
        tx.set_meta("verified", json.dumps(kept))
    table = browser.get("/dashboard/").text.split('id="verified"')[1].split("</table>")[0]
    assert "fw-1" in table and "overflow" in table and "loaded 4 of 6" in table
    assert json_of(browser, "/api/v1/overview")["verified"] == kept
    with app.daemon.store.write() as tx:
        tx.set_meta("verified", "{not json")
    assert "Not verified yet" in browser.get("/dashboard/").text
