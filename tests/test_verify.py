"""`banfeed verify` end to end: simulated FortiGates that really fetch the feed from banfeed's
server on 127.0.0.1 (configured over their CMDB API, or by `banfeed demo`), and what each one
loaded against the version served; the verdicts' rules on their own."""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.checks import Verdict, judge
from banfeed.fortios import FeedStatus
from banfeed.models import FeedVersion
from conftest import RunningDaemon, cli, fortigate_toml, spawn_banfeed, wait_for, write_config

CMDB = "/api/v2/cmdb/system/external-resource"
ENTRY_LIST = "/api/v2/monitor/system/external-resource/entry-list"


def api(url: str, token: str, method: str, path: str, body: object = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=url, trust_env=False) as client:
        return client.request(method, path, json=body, headers=headers)


@pytest.fixture
def site(tmp_path: Path) -> Any:
    """fw-a has offenders and will pull the feed; fw-b has no threat feed; banfeed serves
    (no collecting: each test publishes with `collect`)."""
    fleet = simulator.SimFleet(seed=5)
    fw_a = fleet.add_device("fw-a", token="ta", entries=0)
    fw_b = fleet.add_device("fw-b", token="tb", entries=0)
    for i in range(6):
        fw_a.add("root", f"93.184.216.{60 + i}", source="IPS")
    sim = simulator.start(fleet)
    body = (
        '[server]\nlisten = "127.0.0.1:0"\n\n'
        + fortigate_toml("fw-a", sim.urls["fw-a"], "TA")
        + fortigate_toml("fw-b", sim.urls["fw-b"], "TB")
    )
    path = write_config(tmp_path / "banfeed.toml", "sqlite:///b.db", body)
    env = {"TA": "ta", "TB": "tb", "BANFEED_CONFIG": str(path)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("collect", env=env).exit_code == 0
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    yield {"env": env, "a": fw_a, "b": fw_b, "urls": sim.urls, "feed": daemon.url}
    daemon.stop()
    sim.stop()


def verify_json(env: dict[str, str], *args: str) -> tuple[int, dict[str, Any]]:
    result = cli("verify", "--format", "json", *args, env=env)
    return result.exit_code, json.loads(result.stdout)


def served_lines(feed_base: str) -> list[bytes]:
    return httpx.get(f"{feed_base}/feeds/quarantine.txt", trust_env=False).content.splitlines()


def test_a_configured_feed_is_fetched_and_its_count_matches(site: dict[str, Any]) -> None:
    url = f"{site['feed']}/feeds/quarantine.txt"
    created = api(
        site["urls"]["fw-a"],
        "ta",
        "POST",
        CMDB,
        {"name": "banfeed-quarantine", "type": "address", "resource": url, "refresh-rate": 1},
    )
    assert created.status_code == 200 and created.json()["mkey"] == "banfeed-quarantine"
    # A FortiGate fetches a new external resource at once: the simulator's refresher does.
    wait_for(lambda: site["a"].feed_status("banfeed-quarantine")["fetches"] >= 1, what="fetch")
    lines = served_lines(site["feed"])
    assert len(lines) == 6

    code, doc = verify_json(site["env"])
    assert code == 1  # fw-b has no such feed
    assert doc["feed"] == "quarantine" and doc["resource"] == "banfeed-quarantine"
    assert doc["served"]["entries"] == len(lines) and doc["served"]["version"] == 1
    assert doc["ok"] is False
    a, b = doc["devices"]
    assert a["device"] == "fw-a" and a["verdict"] == "in_sync" and a["ok"] is True
    assert a["valid"] == len(lines) and a["invalid"] == 0 and a["overflow"] is False
    assert a["last_http"] == 200 and a["holds_version"] == 1 and a["error"] is None
    assert a["content_time"] is not None and a["last_attempt"] is not None
    assert b["device"] == "fw-b" and b["verdict"] == "missing" and b["ok"] is False
    assert b["valid"] is None and b["error"]["kind"] == "not_found"
    assert "banfeed fortigate-config --feed quarantine" in b["detail"]

    table = cli("verify", env=site["env"])
    assert table.exit_code == 1
    rows = {
        line.split("│")[1].strip(): line for line in table.stdout.splitlines() if "│ fw-" in line
    }
    assert "in sync" in rows["fw-a"] and f"│ {len(lines)} " in rows["fw-a"]
    assert "missing" in table.stdout and "`banfeed fortigate-config --feed quarantine`" in (
        table.stdout
    )


def test_every_device_in_sync_exits_0(site: dict[str, Any]) -> None:
    site["a"].add_feed("banfeed-quarantine", url=f"{site['feed']}/feeds/quarantine.txt")
    assert site["a"].refresh_feed("banfeed-quarantine") == 200
    site["b"].add_feed("banfeed-quarantine", url=f"{site['feed']}/feeds/quarantine.txt")
    assert site["b"].refresh_feed("banfeed-quarantine") == 200
    code, doc = verify_json(site["env"])
    assert code == 0 and doc["ok"] is True
    assert [d["valid"] for d in doc["devices"]] == [6, 6]
    assert "in sync" in cli("verify", env=site["env"]).stdout


def test_behind_until_the_next_fetch_then_in_sync(site: dict[str, Any]) -> None:
    for device in (site["a"], site["b"]):
        device.add_feed("banfeed-quarantine", url=f"{site['feed']}/feeds/quarantine.txt")
        assert device.refresh_feed("banfeed-quarantine") == 200
    for i in range(3):
        site["a"].add("root", f"93.184.216.{80 + i}", source="IPS")
    assert cli("collect", env=site["env"]).exit_code == 0  # version 2: 9 entries

    code, doc = verify_json(site["env"])
    assert doc["served"]["version"] == 2 and doc["served"]["entries"] == 9
    assert code == 0  # a device a refresh behind is no failure
    for device in doc["devices"]:
        assert device["verdict"] == "behind" and device["valid"] == 6
        assert device["holds_version"] == 1 and "holds version 1" in device["detail"]

    # The server follows the store within a second: fetch until the new version is there.
    wait_for(
        lambda: (
            site["a"].refresh_feed("banfeed-quarantine") == 200
            and site["a"].feed_status("banfeed-quarantine")["valid_count"] == 9
        ),
        what="version 2 fetched",
    )
    code, doc = verify_json(site["env"])
    assert [d["verdict"] for d in doc["devices"]] == ["in_sync", "behind"]
    assert doc["devices"][0]["holds_version"] == 2


def test_a_failing_fetch_says_so(site: dict[str, Any]) -> None:
    site["a"].add_feed("banfeed-quarantine", url=f"{site['feed']}/feeds/nope.txt")
    assert site["a"].refresh_feed("banfeed-quarantine") == 404
    code, doc = verify_json(site["env"])
    assert code == 1
    a = doc["devices"][0]
    assert a["verdict"] == "fetch_failed" and a["last_http"] == 404 and a["valid"] == 0
    assert "got HTTP 404" in a["detail"]


def test_a_bad_grace_is_a_usage_error(site: dict[str, Any]) -> None:
    result = cli("verify", "--grace", "soon", env=site["env"])
    assert result.exit_code == 2 and "--grace" in result.stderr


# -- the verdicts' rules -----------------------------------------------------------------------

NOW = 1_790_000_000


def version(number: int, entries: int, created: int) -> FeedVersion:
    return FeedVersion(
        "q", number, created, '"e"', entries, 0, 0, entries, 0, "update", None, number, None
    )


HISTORY = [version(3, 12, NOW - 100), version(2, 10, NOW - 700), version(1, 8, NOW - 900)]


def status(valid: int, content: int | None, attempt: int | None, http: int | None = 200) -> Any:
    return FeedStatus("q", valid, 0, False, http, content, attempt)


@pytest.mark.parametrize(
    ("device", "grace", "expected", "holds"),
    [
        (status(12, NOW - 90, NOW - 90), 600, Verdict.IN_SYNC, 3),
        (status(10, NOW - 690, NOW - 200), 600, Verdict.BEHIND, 2),  # fetched before v3
        (status(10, NOW - 690, NOW - 200), 60, Verdict.STALE, 2),  # …for longer than grace
        (status(8, NOW - 890, NOW - 890), 600, Verdict.BEHIND, 1),
        (status(10, NOW - 690, NOW - 50), 600, Verdict.DIFFERS, 2),  # fetched after v3: why?
        (status(10, NOW - 690, NOW - 50, 503), 600, Verdict.FETCH_FAILED, 2),
        (status(10, NOW - 690, NOW - 50, 0), 600, Verdict.FETCH_FAILED, 2),  # no answer
        (status(10, NOW - 690, None, 0), 600, Verdict.BEHIND, 2),  # a push feed: no fetches
        (status(11, NOW - 690, NOW - 200), 600, Verdict.DIFFERS, None),  # no version that size
        (status(0, None, None, None), 600, Verdict.DIFFERS, None),
    ],
)
def test_verdicts(device: FeedStatus, grace: int, expected: Verdict, holds: int | None) -> None:
    verdict, detail, held = judge(device, HISTORY[0], HISTORY, NOW, grace)
    assert (verdict, held) == (expected, holds), detail
    assert verdict.ok is (expected in (Verdict.IN_SYNC, Verdict.BEHIND))


def test_overflow_and_invalid_come_first() -> None:
    over = FeedStatus("q", 5, 0, True, 200, NOW, NOW)
    assert judge(over, HISTORY[0], HISTORY, NOW, 600)[0] is Verdict.OVERFLOW
    refused = FeedStatus("q", 12, 2, False, 200, NOW, NOW)
    assert judge(refused, HISTORY[0], HISTORY, NOW, 600)[0] is Verdict.INVALID
    empty = FeedStatus("q", 0, 0, False, 200, NOW, NOW)
    assert judge(empty, None, [], NOW, 600)[0] is Verdict.IN_SYNC  # nothing published yet


# -- the simulator's configuration objects -----------------------------------------------------


def test_cmdb_external_resources(site: dict[str, Any]) -> None:
    url, feed_url = site["urls"]["fw-b"], f"{site['feed']}/feeds/quarantine.txt"
    body = {"name": "q", "resource": feed_url, "username": "fg", "password": "secret"}
    assert api(url, "tb", "POST", CMDB, body).status_code == 200
    again = api(url, "tb", "POST", CMDB, body)
    assert again.status_code == 500 and again.json()["error"] == -5  # exists already
    [shown] = api(url, "tb", "GET", f"{CMDB}/q").json()["results"]
    assert shown["resource"] == feed_url and shown["refresh-rate"] == 5
    assert shown["status"] == "enable" and shown["update-method"] == "feed"
    assert shown["password"] == "ENC XXXX"  # never the password itself
    changed = api(url, "tb", "PUT", f"{CMDB}/q", {"refresh-rate": 60})
    assert changed.status_code == 200
    assert api(url, "tb", "GET", f"{CMDB}/q").json()["results"][0]["refresh-rate"] == 60
    assert [r["name"] for r in api(url, "tb", "GET", CMDB).json()["results"]] == ["q"]
    far = {"name": "far", "resource": "http://192.0.2.1/feed.txt"}
    assert api(url, "tb", "POST", CMDB, far).status_code == 400  # never fetched off this host
    assert api(url, "tb", "POST", CMDB, {"name": "x", "refresh-rate": 0}).status_code == 400
    assert api(url, "tb", "POST", CMDB, {"name": "y", "type": "domain"}).status_code == 400
    assert api(url, "tb", "DELETE", f"{CMDB}/q").status_code == 200
    assert api(url, "tb", "GET", f"{CMDB}/q").status_code == 404
    assert api(url, "tb", "PUT", f"{CMDB}/q", {}).status_code == 404
    assert api(url, "tb", "DELETE", f"{CMDB}/q").status_code == 404
    assert api(url, "tb", "GET", ENTRY_LIST, None).status_code == 400  # no mkey
    assert api(url, "wrong", "GET", CMDB).status_code == 401


def test_a_disabled_resource_is_not_fetched(site: dict[str, Any]) -> None:
    url, feed_url = site["urls"]["fw-b"], f"{site['feed']}/feeds/quarantine.txt"
    body = {"name": "off", "resource": feed_url, "status": "disable"}
    assert api(url, "tb", "POST", CMDB, body).status_code == 200
    on = {"name": "on", "resource": feed_url}
    assert api(url, "tb", "POST", CMDB, on).status_code == 200
    wait_for(lambda: site["b"].feed_status("on")["fetches"] == 1, what="the enabled fetched")
    assert site["b"].feed_status("off")["fetches"] == 0
    assert api(url, "tb", "GET", f"{CMDB}/off").json()["results"][0]["status"] == "disable"


def test_a_feed_is_fetched_again_every_refresh_until_deleted(site: dict[str, Any]) -> None:
    feed_url = f"{site['feed']}/feeds/quarantine.txt"
    site["b"].add_feed("fast", url=feed_url, refresh_every=0.2)
    wait_for(lambda: site["b"].feed_status("fast")["fetches"] >= 3, what="three fetches")
    assert site["b"].feed_status("fast")["http_status_code"] in (200, 304)  # ETag kept: 304
    assert site["b"].remove_feed("fast") and not site["b"].remove_feed("fast")
    assert "fast" not in site["b"].feed_names()
    with pytest.raises(ValueError):  # refused when configured, not in the refresher later
        site["b"].add_feed("far", url="http://192.0.2.1/feed.txt", refresh_every=60)


# -- the demo ------------------------------------------------------------------------------


def test_demo_configures_its_feeds_so_verify_shows_each_devices_count(tmp_path: Path) -> None:
    folder = tmp_path / "demo"
    proc, lines, reader = spawn_banfeed(
        "demo", "--listen", "127.0.0.1:0", "--interval", "1s", "--dir", str(folder)
    )
    try:
        wait_for(lambda: any("Collecting" in x for x in lines), timeout=30, what="the demo")
        assert any("`verify` shows what each loaded" in x for x in lines)
        assert (folder / "demo.token").stat().st_mode & 0o077 == 0  # the owner's only
        env = {"BANFEED_CONFIG": str(folder / "banfeed.toml")}

        def loaded() -> dict[str, Any] | None:
            code, doc = verify_json(env)
            counts = [d["valid"] for d in doc["devices"]]
            return doc if code == 0 and all(counts) else None

        doc = wait_for(loaded, timeout=30, what="every device loaded the feed")
        assert [d["device"] for d in doc["devices"]] == ["fg-1", "fg-2", "fg-3"]
        history = json.loads(
            cli(
                "feeds", "history", "quarantine", "--limit", "200", "--format", "json", env=env
            ).stdout
        )
        entries = {v["version"]: v["entries"] for v in history}
        for device in doc["devices"]:
            assert device["verdict"] in ("in_sync", "behind")
            assert device["valid"] == entries[device["holds_version"]]  # a count it served
            # 200, or 304 when its refresh found the version it holds still served (the demo
            # collects every second, so a refresh may fall between two publishes)
            assert device["last_http"] in (200, 304)
        # A device in sync holds exactly what is served: at most a cycle away, so wait for it.
        wait_for(
            lambda: any(d["verdict"] == "in_sync" for d in verify_json(env)[1]["devices"]),
            timeout=30,
            what="a device in sync",
        )
        ipv4 = verify_json(env, "--feed", "ipv4-aggregated")[1]
        assert ipv4["resource"] == "banfeed-ipv4-aggregated"
        assert all(d["valid"] for d in ipv4["devices"])
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
        reader.join(timeout=5)
    assert not any("Traceback" in x for x in lines), "".join(lines)
