"""Push and verify against simulated FortiGates over real HTTP, one of them failing."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.fortios import DeviceTarget
from banfeed.push import Backoff, FeedSync
from conftest import RunningDaemon, cli, wait_for


@pytest.fixture
def trio(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """fw-a reports offenders; fw-b receives pushes and has a push-type feed; fw-c is broken."""
    fleet = simulator.SimFleet(seed=3)
    fw_a = fleet.add_device("fw-a", token="ta", entries=0)
    fw_b = fleet.add_device("fw-b", token="tb", entries=0)
    fw_c = fleet.add_device("fw-c", token="tc", entries=0, fault="500")
    fw_b.add_feed("banfeed-quarantine", url="", push=True)
    sim = simulator.start(fleet)
    for name, token in (("TA", "ta"), ("TB", "tb"), ("TC", "tc")):
        monkeypatch.setenv(name, token)
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///b.db"
[server]
listen = "127.0.0.1:0"
[push]
quarantine = true
feed = "quarantine"
max_per_cycle = 3
[[fortigates]]
name = "fw-a"
url = "{sim.urls["fw-a"]}"
token_env = "TA"
[[fortigates]]
name = "fw-b"
url = "{sim.urls["fw-b"]}"
token_env = "TB"
push_feed = "banfeed-quarantine"
[[fortigates]]
name = "fw-c"
url = "{sim.urls["fw-c"]}"
token_env = "TC"
timeout = "2s"
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    yield {"fleet": fleet, "a": fw_a, "b": fw_b, "c": fw_c, "path": path, "sim": sim}
    sim.stop()


def posts(device: simulator.SimDevice, suffix: str) -> list[Any]:
    return [
        body for method, path, body in device.calls if method == "POST" and path.endswith(suffix)
    ]


def test_new_offenders_reach_the_other_fortigates(trio: dict[str, Any]) -> None:
    now = int(time.time())
    for i in range(5):
        trio["a"].add("root", f"93.184.216.{30 + i}", created=now - i, source="IPS")
    trio["a"].add("root", "10.9.9.9", created=now)  # never published, so never pushed
    result = cli("--config", str(trio["path"]), "collect")
    assert result.exit_code == 1  # fw-c is broken: polling and pushing fail there alone
    out = result.output
    assert "push quarantine → fw-b: 3 sent, 2 skipped" in out  # max_per_cycle = 3
    assert "push quarantine → fw-c: failed: server_error" in out
    assert posts(trio["a"], "/add_users") == []  # never pushed back to the reporter
    (pushed,) = posts(trio["b"], "/add_users")
    assert sorted(pushed["ip_addresses"]) == ["93.184.216.30", "93.184.216.31", "93.184.216.32"]
    assert 0 < pushed["expiry"] <= 30 * 86400  # from policy (30 days), rounded to the hour
    listed = {e.ip for e in trio["b"].vdoms["root"]}
    assert {"93.184.216.30", "93.184.216.31", "93.184.216.32"} <= listed
    assert "10.9.9.9" not in listed
    # The push-type threat feed of fw-b now holds exactly what the feed publishes.
    assert trio["b"].feed_entries("banfeed-quarantine") == {
        f"93.184.216.{30 + i}" for i in range(5)
    }
    assert "push snapshot → fw-b: 5 sent" in out


def test_feed_sync_sends_a_snapshot_then_deltas(trio: dict[str, Any]) -> None:
    url = trio["sim"].urls["fw-b"]
    target = DeviceTarget(name="fw-b", url=url, token=SecretStr("tb"))
    sync, backoff = FeedSync(), Backoff()

    def run(lines: list[str]) -> None:
        (result,) = asyncio.run(
            sync.sync([(target, "banfeed-quarantine")], lines, now=0, backoff=backoff)
        )
        assert result.error is None

    run(["93.184.216.34", "93.184.216.35"])
    run(["93.184.216.35", "151.101.1.0/24"])
    commands = [c["commands"][0]["command"] for c in posts(trio["b"], "/dynamic")]
    assert commands == ["snapshot", "add", "remove"]
    assert trio["b"].feed_entries("banfeed-quarantine") == {"93.184.216.35", "151.101.1.0/24"}


def test_a_failing_push_backs_off_instead_of_retrying(trio: dict[str, Any]) -> None:
    target = DeviceTarget(name="fw-c", url=trio["sim"].urls["fw-c"], token=SecretStr("tc"))
    sync, backoff = FeedSync(), Backoff()
    (first,) = asyncio.run(sync.sync([(target, "x")], ["93.184.216.34"], now=100, backoff=backoff))
    assert first.error is not None
    before = trio["c"].requests
    (second,) = asyncio.run(sync.sync([(target, "x")], ["93.184.216.34"], now=110, backoff=backoff))
    assert second.action.startswith("skipped") and trio["c"].requests == before
    assert not backoff.ready("fw-c", 159) and backoff.ready("fw-c", 161)


def test_unban_everywhere_clears_each_fortigate(trio: dict[str, Any]) -> None:
    now = int(time.time())
    trio["a"].add("root", "93.184.216.34", created=now)
    trio["b"].add("root", "93.184.216.34", created=now)
    cli("--config", str(trio["path"]), "collect")
    result = cli("--config", str(trio["path"]), "unban", "93.184.216.34", "--everywhere")
    assert result.exit_code == 1  # fw-c could not be cleared
    assert "fw-c" in result.output and "server_error" in result.output
    for device in (trio["a"], trio["b"]):
        assert posts(device, "/clear_users") == [{"ip_addresses": ["93.184.216.34"]}]
        assert "93.184.216.34" not in {e.ip for e in device.vdoms["root"]}


def test_verify_compares_what_each_fortigate_loaded(trio: dict[str, Any]) -> None:
    now = int(time.time())
    for i in range(4):
        trio["a"].add("root", f"93.184.216.{40 + i}", created=now)
    cfg = config_mod.load(trio["path"])
    daemon = RunningDaemon(cfg, collect=True)
    try:
        feed_url = f"{daemon.url}/feeds/quarantine.txt"
        wait_for(lambda: daemon.daemon.cycles >= 1, what="a cycle")
        wait_for(  # the daemon syncs fw-b's push-type feed right after its cycle
            lambda: len(trio["b"].feed_entries("banfeed-quarantine")) == 4, what="push sync"
        )
        trio["a"].add_feed("banfeed-quarantine", url=feed_url)
        trio["a"].feed_limit = 3  # an older FortiGate model with a small limit
        assert wait_for(lambda: trio["a"].refresh_feed("banfeed-quarantine") == 200)
        result = cli("--config", str(trio["path"]), "verify", "--feed", "quarantine")
    finally:
        daemon.stop()
    rows = {
        line.split("│")[1].strip(): line for line in result.output.splitlines() if "│ fw-" in line
    }
    assert "4 entries served now" in result.output
    assert "overflow" in rows["fw-a"]  # pulled 4, kept 3: the FortiGate says it overflowed
    assert "in sync" in rows["fw-b"]  # its push-type feed was synced by the daemon
    assert "server_err" in rows["fw-c"]
    assert result.exit_code == 1


def test_a_pushed_quarantine_listed_back_is_not_a_new_offense(trio: dict[str, Any]) -> None:
    now = int(time.time())
    trio["a"].add("root", "93.184.216.50", created=now - 5, source="IPS")
    cli("--config", str(trio["path"]), "collect")
    assert "93.184.216.50" in {e.ip for e in trio["b"].vdoms["root"]}  # pushed to fw-b
    pushed_before = len(posts(trio["a"], "/add_users")) + len(posts(trio["b"], "/add_users"))
    second = cli("--config", str(trio["path"]), "collect")
    assert "0 new offenses" in second.output  # fw-b lists it now: that is our own push
    shown = json.loads(
        cli("--config", str(trio["path"]), "show", "93.184.216.50", "--format", "json").output
    )
    assert shown["offense_count"] == 1 and shown["devices"] == ["fw-a"]
    pushed_after = len(posts(trio["a"], "/add_users")) + len(posts(trio["b"], "/add_users"))
    assert pushed_after == pushed_before  # nothing bounced back and forth
