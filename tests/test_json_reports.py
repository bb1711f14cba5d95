"""`--format json` of check, collect, prune and feeds: one document on stdout with the
documented shape, values that agree with the real store and simulator, exit codes unchanged."""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from datetime import UTC, datetime
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from banfeed import simulator
from banfeed.config import load
from banfeed.models import Offender
from banfeed.store import open_store
from conftest import cli, fortigate_toml, write_config

POLL_KEYS = {"device", "vdom", "ok", "unchanged", "error", "entries", "rejected", "duration_ms"}
PROBE_KEYS = {
    "device",
    "vdom",
    "ok",
    "error",
    "entries",
    "entries_by_vdom",
    "rejected",
    "duration_ms",
    "last_success",
    "backoff_lifted",
}


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def site(tmp_path: Path) -> Any:
    """fw-a answers (two VDOMs, a private address among its entries), fw-b refuses the token,
    fw-c is not listening."""
    fleet = simulator.SimFleet(seed=11)
    a = fleet.add_device("fw-a", token="ta", vdoms=["root", "dmz"], entries=0)
    for i in range(4):
        a.add("root", f"93.184.216.{10 + i}", source="IPS")
    a.add("dmz", "93.184.216.20", source="DoS")
    a.add("root", "10.1.2.3")  # suppressed: never published
    fleet.add_device("fw-b", token="tb", entries=2)
    sim = simulator.start(fleet)
    body = (
        fortigate_toml("fw-a", sim.urls["fw-a"], "TA", '["root", "dmz"]')
        + fortigate_toml("fw-b", sim.urls["fw-b"], "WRONG")
        + fortigate_toml("fw-c", refused_url(), "TA")
    )
    path = write_config(tmp_path / "banfeed.toml", "sqlite:///banfeed.db", body)
    env = {"TA": "ta", "WRONG": "nope", "BANFEED_CONFIG": str(path)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    yield {"env": env, "path": path, "tmp": tmp_path, "a": a}
    sim.stop()


def document(result: Any) -> Any:
    """The command's stdout parsed as one JSON document (anything else there fails)."""
    return json.loads(result.stdout)


def test_check_json_reports_each_device_and_stores_nothing(site: dict[str, Any]) -> None:
    result = cli("check", "--format", "json", env=site["env"])
    assert result.exit_code == 1  # as with the table: a device failed
    doc = document(result)
    assert set(doc) == {"ok", "config", "warnings", "store", "devices"}
    assert doc["ok"] is False
    assert doc["config"] == {"path": str(site["path"]), "fortigates": 3, "feeds": 1}
    assert doc["store"]["schema"] and doc["store"]["url"].startswith("sqlite:///")
    assert any("fortigates[fw-a].url: plain http" in w for w in doc["warnings"])
    assert "warning: fortigates[fw-a].url: plain http" in result.stderr  # and for people
    rows = {(d["device"], d["vdom"]): d for d in doc["devices"]}
    assert [set(d) for d in doc["devices"]] == [PROBE_KEYS] * 4
    root, dmz = rows[("fw-a", "root")], rows[("fw-a", "dmz")]
    assert root["ok"] and root["error"] is None and root["entries"] == 5
    assert root["entries_by_vdom"] == {"root": 5} and dmz["entries_by_vdom"] == {"dmz": 1}
    assert root["last_success"] is None  # never collected
    assert rows[("fw-b", "root")]["error"]["kind"] == "auth"
    assert rows[("fw-c", "root")]["error"]["kind"] == "unreachable"
    assert "nope" not in result.stdout  # no token in the document
    with sqlite3.connect(site["tmp"] / "banfeed.db") as db:
        assert db.execute("SELECT COUNT(*) FROM offenses").fetchone() == (0,)


def test_check_json_names_the_last_success_after_a_collect(site: dict[str, Any]) -> None:
    cli("collect", env=site["env"])
    doc = document(cli("check", "--format", "json", env=site["env"]))
    root = next(d for d in doc["devices"] if (d["device"], d["vdom"]) == ("fw-a", "root"))
    assert datetime.fromisoformat(root["last_success"]) <= datetime.now(UTC)


def test_collect_json_agrees_with_the_store(site: dict[str, Any]) -> None:
    result = cli("collect", "--format", "json", env=site["env"])
    assert result.exit_code == 1  # fw-b and fw-c failed; fw-a was merged
    doc = document(result)
    assert set(doc) == {"ok", "started", "duration_s", "polls", "summary", "feeds", "pushes"}
    assert doc["ok"] is False and doc["pushes"] == []
    assert [set(p) for p in doc["polls"]] == [POLL_KEYS] * 4
    polls = {(p["device"], p["vdom"]): p for p in doc["polls"]}
    assert polls[("fw-a", "root")]["entries"] == 5 and polls[("fw-a", "dmz")]["entries"] == 1
    assert polls[("fw-b", "root")]["entries"] is None  # failed: the table's "-"
    assert polls[("fw-b", "root")]["error"]["kind"] == "auth"
    summary = doc["summary"]
    assert summary["polls"] == 4 and summary["polls_ok"] == 2
    assert summary["new_offenders"] == 6 and summary["suppressed"] == 1
    with sqlite3.connect(site["tmp"] / "banfeed.db") as db:
        assert db.execute("SELECT COUNT(*) FROM offenses").fetchone() == (summary["new_offenses"],)
    [feed] = doc["feeds"]
    assert feed["feed"] == "quarantine" and feed["outcome"] == "published"
    served = document(cli("feeds", "--format", "json", env=site["env"]))[0]
    assert feed["version"] == served["version"] and feed["entries"] == served["entries"] == 5
    exported = cli("export", env=site["env"]).stdout.splitlines()
    assert len(exported) == feed["entries"]

    again = document(cli("collect", "--format", "json", env=site["env"]))
    root = next(p for p in again["polls"] if (p["device"], p["vdom"]) == ("fw-a", "root"))
    assert root["unchanged"] is True and root["entries"] is None
    assert again["feeds"][0]["outcome"] == "unchanged" and again["feeds"][0]["version"] is None
    assert again["summary"]["new_offenses"] == 0


def test_collect_quiet_json_prints_only_when_something_failed(tmp_path: Path) -> None:
    fleet = simulator.SimFleet(seed=12)
    fleet.add_device("ok", token="t", entries=3)
    with simulator.start(fleet) as sim:
        path = write_config(
            tmp_path / "banfeed.toml",
            "sqlite:///b.db",
            fortigate_toml("ok", sim.urls["ok"], "T"),
        )
        env = {"T": "t", "BANFEED_CONFIG": str(path)}
        assert cli("db", "upgrade", env=env).exit_code == 0
        quiet = cli("collect", "-q", "--format", "json", env=env)
        assert quiet.exit_code == 0 and quiet.stdout == ""
        env["T"] = "wrong"
        failed = cli("collect", "-q", "--format", "json", env=env)
    assert failed.exit_code == 1
    assert document(failed)["polls"][0]["error"]["kind"] == "auth"


def test_collect_json_reports_a_held_feed(site: dict[str, Any]) -> None:
    assert cli("collect", env=site["env"]).exit_code == 1
    cli("allow", "add", "93.184.216.0/24", "--note", "test", env=site["env"])
    held = cli("collect", "--format", "json", env=site["env"])
    assert held.exit_code == 1
    [feed] = document(held)["feeds"]
    assert feed["outcome"] == "held" and "max_drop" in feed["reason"]
    assert feed["version"] is None  # nothing recorded: the last good version is served
    assert "feed quarantine HELD" in held.stderr


def _seed(config_path: Path, *ages: int) -> None:
    """Offenders whose last offense was ``ages`` seconds ago, active one day after it."""
    now = int(time.time())
    store = open_store(load(config_path).store_url())
    with store.write() as tx:
        tx.insert_offenders(
            [
                Offender(
                    ip_address(f"93.184.216.{100 + i}"),
                    now - age,
                    now - age,
                    1,
                    ("IPS",),
                    ("fw",),
                    ("fw/root",),
                    now - age + 86400,
                    "listed",
                )
                for i, age in enumerate(ages)
            ],
            now,
        )
        tx.bump_version()
    store.close()


def test_prune_json(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "banfeed.toml", "sqlite:///b.db", '[retention]\nkeep_history = "30d"\n'
    )
    env = {"BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "alice"}
    assert cli("db", "upgrade", env=env).exit_code == 0
    _seed(path, 60, 2 * 86400, 3 * 86400)  # two of them expired a day or two ago
    before = int(time.time())
    result = cli("prune", "--format", "json", env=env)
    assert result.exit_code == 0
    doc = document(result)
    assert doc == {
        "expired": 2,
        "deleted": {"offenses": 0, "events": 0, "offenders": 0},
        "keep_history_s": 30 * 86400,
        "cutoff": doc["cutoff"],
    }
    cutoff = datetime.fromisoformat(doc["cutoff"]).timestamp()
    assert before - 30 * 86400 <= cutoff <= time.time() - 30 * 86400
    shown = document(cli("show", "93.184.216.101", "--format", "json", env=env))
    assert [e["kind"] for e in shown["events"]] == ["expired"]  # what the count says
    assert document(cli("prune", "--format", "json", env=env))["expired"] == 0


def test_prune_json_with_history_kept_forever(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "banfeed.toml", "sqlite:///b.db", '[retention]\nkeep_history = "forever"\n'
    )
    env = {"BANFEED_CONFIG": str(path)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    doc = document(cli("prune", "--format", "json", env=env))
    assert doc["keep_history_s"] is None and doc["cutoff"] is None
    table = cli("prune", env=env)
    assert "from before (keep_history is forever)" in table.stdout


def test_feeds_json_shape_after_a_collect(site: dict[str, Any]) -> None:
    before = document(cli("feeds", "--format", "json", env=site["env"]))
    assert before[0]["version"] is None and before[0]["entries"] == 0
    cli("collect", env=site["env"])
    [feed] = document(cli("feeds", "--format", "json", env=site["env"]))
    assert set(feed) == {
        "feed",
        "version",
        "entries",
        "max_entries",
        "matched",
        "overflow",
        "etag",
        "changed",
        "auth",
        "held_since",
        "hold_reason",
        "pinned",
        "pinned_by",
        "consumers",
        "shards",  # [] unless feeds.shards > 1 (tests/test_shards.py)
    }
    assert feed["feed"] == "quarantine" and feed["version"] == 1 and feed["entries"] == 5
    assert feed["etag"].startswith('"') and feed["held_since"] is None and feed["consumers"] == []
