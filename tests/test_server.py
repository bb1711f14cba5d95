"""`banfeed run` end to end: real simulated FortiGates, real SQLite file, real uvicorn on
127.0.0.1, and a client that fetches the feed the way a FortiGate does."""

from __future__ import annotations

import base64
import gzip
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from banfeed import config as config_mod
from banfeed import simulator
from conftest import RunningDaemon, cli, spawn_banfeed, wait_for

PASSWORD = "feed-pass-0123456789"
FORTIGATE_UA = "curl/7.58.0"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    fleet = simulator.SimFleet(seed=11)
    fw1 = fleet.add_device("fw-1", token="t1", vdoms=["root", "dmz"], entries=40)
    fleet.add_device("fw-2", token="t2", entries=25)
    fw1.add("root", "10.20.30.40")  # never published
    sim = simulator.start(fleet)
    monkeypatch.setenv("T1", "t1")
    monkeypatch.setenv("T2", "t2")
    monkeypatch.setenv("FEED_PW", PASSWORD)
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///banfeed.db"
[collect]
interval = "1s"
jitter = 0.0
[server]
listen = "127.0.0.1:0"
[[fortigates]]
name = "fw-1"
url = "{sim.urls["fw-1"]}"
token_env = "T1"
vdoms = ["*"]
[[fortigates]]
name = "fw-2"
url = "{sim.urls["fw-2"]}"
token_env = "T2"
[[feeds]]
name = "quarantine"
auth = {{ type = "basic", username = "fortigate", password_env = "FEED_PW" }}
[[feeds]]
name = "open"
[[feeds]]
name = "partners"
allow_from = ["192.0.2.0/24"]
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    cfg = config_mod.load(path)
    daemon = RunningDaemon(cfg)
    yield {"fleet": fleet, "daemon": daemon, "url": daemon.url, "path": path, "tmp": tmp_path}
    if daemon.thread.is_alive():
        daemon.stop()
    sim.stop()


def fortigate(url: str, etag: str | None = None, password: str = PASSWORD) -> httpx.Response:
    headers = {"User-Agent": FORTIGATE_UA, "Accept": "*/*", "Accept-Encoding": "identity"}
    if etag:
        headers["If-None-Match"] = etag
    return httpx.get(
        f"{url}/feeds/quarantine.txt", headers=headers, auth=("fortigate", password), timeout=5
    )


def first_feed(url: str) -> httpx.Response:
    return wait_for(
        lambda: (r := fortigate(url)).status_code == 200 and r.content and r,
        what="the first non-empty feed",
    )


def test_fortigate_gets_200_then_304_until_a_new_offense(site: dict[str, Any]) -> None:
    url = site["url"]
    first = first_feed(url)
    etag = first.headers["etag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["cache-control"] == "no-cache" and "last-modified" in first.headers
    lines = first.text.splitlines()
    assert len(lines) == 40 * 2 + 25 and "10.20.30.40" not in lines
    time.sleep(2.5)  # two more cycles: nothing new
    again = fortigate(url, etag)
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == etag
    site["fleet"].devices["fw-2"].add("root", "31.13.64.35", source="DoS")
    changed = wait_for(
        lambda: (r := fortigate(url, etag)).status_code == 200 and r, what="a new ETag"
    )
    assert changed.headers["etag"] != etag
    assert "31.13.64.35" in changed.text.splitlines()
    assert fortigate(url, changed.headers["etag"]).status_code == 304


def test_wrong_password_is_401_with_a_challenge(site: dict[str, Any]) -> None:
    first_feed(site["url"])
    denied = fortigate(site["url"], password="wrong-password")
    assert denied.status_code == 401
    assert denied.headers["www-authenticate"].startswith('Basic realm="banfeed feed quarantine"')
    anonymous = httpx.get(f"{site['url']}/feeds/quarantine.txt")
    assert anonymous.status_code == 401
    token = base64.b64encode(b"fortigate").decode()  # no colon, no password
    odd = httpx.get(
        f"{site['url']}/feeds/quarantine.txt", headers={"Authorization": f"Basic {token}"}
    )
    assert odd.status_code == 401


def test_unknown_feed_404_and_consumer_networks_403(site: dict[str, Any]) -> None:
    url = site["url"]
    first_feed(url)
    assert httpx.get(f"{url}/feeds/nope.txt").status_code == 404
    assert httpx.get(f"{url}/feeds/open.xml").status_code == 404
    assert httpx.get(f"{url}/feeds/partners.txt").status_code == 403  # 127.0.0.1 not allowed
    assert httpx.get(f"{url}/feeds/open.txt").status_code == 200


def test_gzip_head_csv_json_and_if_modified_since(site: dict[str, Any]) -> None:
    url = site["url"]
    plain = first_feed(url)
    zipped = httpx.get(
        f"{url}/feeds/quarantine.txt",
        auth=("fortigate", PASSWORD),
        headers={"Accept-Encoding": "gzip"},
    )
    assert zipped.headers["content-encoding"] == "gzip"
    assert zipped.content == plain.content  # httpx decodes it
    assert zipped.headers["etag"] != plain.headers["etag"]  # another representation
    with httpx.stream("GET", f"{url}/feeds/open.txt", headers={"Accept-Encoding": "gzip"}) as r:
        raw = b"".join(r.iter_raw())
    assert gzip.decompress(raw) == httpx.get(f"{url}/feeds/open.txt").content
    head = httpx.head(f"{url}/feeds/open.txt")
    assert head.status_code == 200 and head.content == b"" and head.headers["etag"]
    as_json = httpx.get(f"{url}/feeds/open.json").json()
    assert len(as_json) == 105 and {"ip", "offense_count", "state"} <= set(as_json[0])
    as_csv = httpx.get(f"{url}/feeds/open.csv").text.splitlines()
    assert as_csv[0].startswith("ip,") and len(as_csv) == 106
    since = httpx.get(
        f"{url}/feeds/open.txt", headers={"If-Modified-Since": plain.headers["last-modified"]}
    )
    assert since.status_code == 304


def test_store_unreachable_is_503_never_an_empty_200(site: dict[str, Any]) -> None:
    url = site["url"]
    good = first_feed(url)
    db = site["tmp"] / "banfeed.db"
    moved = site["tmp"] / "moved.db"
    os.rename(db, moved)
    try:
        down = wait_for(
            lambda: (r := fortigate(url)).status_code != 200 and r, what="a non-200 answer"
        )
        assert down.status_code == 503 and down.content != b"" and "retry-after" in down.headers
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and "store" in ready.text
        assert not db.exists()  # the server did not create an empty store in its place
    finally:
        os.rename(moved, db)
    back = wait_for(lambda: (r := fortigate(url)).status_code == 200 and r, what="recovery")
    assert back.content == good.content or len(back.content) >= len(good.content)


def test_health_ready_metrics_index(site: dict[str, Any]) -> None:
    url = site["url"]
    first_feed(url)
    fortigate(url, "nope")
    assert httpx.get(f"{url}/healthz").text == "ok\n"
    ready = wait_for(lambda: (r := httpx.get(f"{url}/readyz")).status_code == 200 and r)
    assert ready.json() == {"ready": True, "problems": [], "collection": [], "publishing": None}
    metrics = httpx.get(f"{url}/metrics").text
    assert 'banfeed_feed_requests_total{feed="quarantine",status="200"}' in metrics
    assert 'banfeed_feed_entries{feed="quarantine"} 105.0' in metrics
    assert "banfeed_cycle_duration_seconds_count" in metrics
    index = httpx.get(f"{url}/").text
    assert "quarantine" in index and "/feeds/quarantine.txt" in index


def test_feeds_command_shows_sizes_etag_and_last_fetch(site: dict[str, Any]) -> None:
    url = site["url"]
    etag = first_feed(url).headers["etag"]
    fortigate(url, etag)
    site["daemon"].stop()  # stopping flushes the fetch records
    result = cli("--config", str(site["path"]), "feeds", "--format", "json")
    assert result.exit_code == 0, result.output
    feeds = {f["feed"]: f for f in json.loads(result.output)}
    quarantine = feeds["quarantine"]
    assert quarantine["entries"] == 105 and quarantine["max_entries"] == 131072
    assert quarantine["etag"] == etag and quarantine["changed"] is not None
    (consumer,) = quarantine["consumers"]
    assert consumer["user_agent"] == FORTIGATE_UA and consumer["address"] == "127.0.0.1"
    assert consumer["status"] == 304 and consumer["requests"] >= 2 and consumer["current"]
    table = cli("--config", str(site["path"]), "feeds").output
    assert "curl/7.58.0" in table and "131072" in table


def test_fortigate_config_prints_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[[feeds]]\nname = "quarantine"\n')
    result = cli(
        "--config",
        str(path),
        "fortigate-config",
        "--feed",
        "quarantine",
        "--url",
        "https://feeds.example:8443",
        "--username",
        "fortigate",
    )
    assert result.exit_code == 0
    text = result.output
    assert 'set resource "https://feeds.example:8443/feeds/quarantine.txt"' in text
    assert "set type address" in text and "set refresh-rate 5" in text
    assert 'set username "fortigate"' in text and "set server-identity-check full" in text
    assert 'set srcaddr "banfeed-quarantine"' in text and "set action deny" in text


# -- the daemon as a process ----------------------------------------------------------------


def banfeed_process(path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "banfeed", "--config", str(path), *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def consistent(db: Path) -> tuple[int, int]:
    """The store's invariants hold; returns (offenses, offenders)."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        offenses = conn.execute("SELECT count(*) FROM offenses").fetchone()[0]
        counted = conn.execute("SELECT coalesce(sum(offense_count), 0) FROM offenders").fetchone()
        distinct = conn.execute("SELECT count(DISTINCT ip) FROM offenses").fetchone()[0]
        offenders = conn.execute("SELECT count(*) FROM offenders").fetchone()[0]
    assert counted[0] == offenses and distinct == offenders
    return offenses, offenders


@pytest.mark.parametrize("moment", ["polling", "writing"])
def test_sigterm_mid_cycle_leaves_a_consistent_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    fleet = simulator.SimFleet(seed=5)
    slow = fleet.add_device(
        "slow", token="t", entries=50, latency=30.0 if moment == "polling" else 0
    )
    if moment == "writing":
        slow.populate("root", 60_000, ttl=None)
    with simulator.start(fleet) as sim:
        monkeypatch.setenv("T", "t")
        path = tmp_path / "banfeed.toml"
        path.write_text(
            f'[store]\nurl = "sqlite:///b.db"\n[server]\nlisten = "127.0.0.1:0"\n'
            f'[[fortigates]]\nname = "slow"\nurl = "{sim.urls["slow"]}"\ntoken_env = "T"\n'
            'timeout = "60s"\n'
        )
        assert cli("--config", str(path), "db", "upgrade").exit_code == 0
        proc = banfeed_process(path, "-v", "run")
        try:
            wait_for(lambda: slow.requests >= 1, timeout=20, what="the first poll")
            if moment == "writing":
                time.sleep(0.6)  # the answer is being parsed and written
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
            _, stderr = proc.communicate()
    assert "Traceback" not in stderr, stderr
    offenses, _ = consistent(tmp_path / "b.db")
    print(f"SIGTERM while {moment}: {offenses} offenses stored")
    if moment == "polling":
        assert offenses == 0  # abandoned before anything was written
    else:
        assert offenses in (0, 60_050)  # all of the cycle or none of it


def test_demo_serves_a_feed_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc, lines, reader = spawn_banfeed(
        "demo", "--listen", "127.0.0.1:0", "--interval", "2s", "--dir", str(tmp_path / "demo")
    )
    try:
        line = wait_for(
            lambda: next((x for x in lines if "feed quarantine: http" in x), None),
            timeout=30,
            what="the demo's feed URL",
        )
        url = line.split("feed quarantine: ")[1].split()[0]
        body = wait_for(
            lambda: (r := httpx.get(url)).status_code == 200 and r.content, what="demo feed"
        )
        assert len(body.splitlines()) >= 3 * 2 * 150
        assert b"10.0.0.1\n" not in body
        assert any("set srcaddr" in x for x in lines)  # the FortiOS CLI was printed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        reader.join(timeout=5)
    assert not any("Traceback" in x for x in lines), "".join(lines)


def _behind_the_back(db: Path, statement: str) -> None:
    """A write in SQL that keeps the store's contract: the version bumped, and the rows it
    changes stamped with it (a publisher keeps its active set in step by that stamp; rows
    deleted are seen by their count)."""
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'version'")
        conn.execute(statement)
        conn.execute(
            "UPDATE offenders SET changed = "
            "(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'version')"
        )


def test_mass_drop_guard_keeps_serving_the_last_good_feed(site: dict[str, Any]) -> None:
    url, db = site["url"], site["tmp"] / "banfeed.db"
    good = first_feed(url)
    etag = good.headers["etag"]
    _behind_the_back(db, "DELETE FROM offenders")  # a wiped store, not a policy decision
    held = wait_for(
        lambda: 'banfeed_feed_held{feed="quarantine"} 1.0' in httpx.get(f"{url}/metrics").text,
        what="the hold",
    )
    assert held
    assert fortigate(url, etag).status_code == 304  # the FortiGate keeps what it has
    again = fortigate(url)
    assert again.status_code == 200 and again.content == good.content
    status = json.loads(cli("--config", str(site["path"]), "feeds", "--format", "json").output)
    quarantine = next(f for f in status if f["feed"] == "quarantine")
    assert quarantine["held_since"] is not None
    assert "would disappear" in quarantine["hold_reason"]
    approved = cli("--config", str(site["path"]), "feeds", "approve", "quarantine")
    assert approved.exit_code == 0 and "hold released" in approved.output
    emptied = wait_for(
        lambda: (r := fortigate(url)).status_code == 200 and r.content == b"" and r,
        what="the approved (empty) feed",
    )
    assert emptied.headers["etag"] != etag


def test_an_explained_drop_is_published_at_once(site: dict[str, Any]) -> None:
    url, db = site["url"], site["tmp"] / "banfeed.db"
    first_feed(url)
    _behind_the_back(db, "UPDATE offenders SET status = 'unbanned'")  # every one unbanned
    emptied = wait_for(
        lambda: (r := fortigate(url)).status_code == 200 and r.content == b"" and r,
        what="the emptied feed",
    )
    assert emptied.content == b""
    assert 'banfeed_feed_held{feed="quarantine"} 0.0' in httpx.get(f"{url}/metrics").text
