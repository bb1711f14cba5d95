"""Times past year 9999 never break the operator surface.

A store can hold any 64-bit time: an older banfeed escalated repeat offenders to year ~33,700
(``max_ttl = "forever"``), a device may report ``created`` up to 2**40, and people edit rows by
hand. Every command and every feed must still answer, showing such a time as
9999-12-31T23:59:59Z. Rows are written straight into a real SQLite file, the way an old version
or a hand edit would leave them; the commands run through the CLI and the feeds through the
real daemon on 127.0.0.1.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import time
from collections.abc import Iterator
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.net import sort_key
from banfeed.policy import Retention
from banfeed.timeutil import MAX_TIME, iso
from conftest import RunningDaemon, cli, fortigate_toml, wait_for, write_config

FAR = "9999-12-31T23:59:59Z"
FAR_SHORT = "9999-12-31 23:59"  # the table's short form
HUGE = 10**15  # year ~31,690,000
HUGER = 2**62  # the largest times a BigInteger holds comfortably

ESCALATED = "31.13.64.35"  # active_until 10**15: what an old version's escalation left
GARBAGE = "45.33.32.156"  # every time absurd: first 2**40, last and active_until 2**62
FOREVER_V6 = "2a00:1450:4001:81c::200e"  # active_until NULL (forever), last offense 10**15
NORMAL = "9.9.9.9"  # an ordinary row: its times must be shown as before
BANNED = "91.198.174.0/24"  # a manual ban expiring at 2**62
ALLOWED = "8.8.4.0/24"  # an allow entry expiring at 10**15
FEED = "all"

FEEDS = f"""
[server]
listen = "127.0.0.1:0"

[[feeds]]
name = "{FEED}"
"""


def _offender(ip: str, first: int, last: int, count: int, until: int | None) -> dict[str, Any]:
    address = ip_address(ip)
    return {
        "ip": ip,
        "sort_key": sort_key(address),
        "family": address.version,
        "first_offense": first,
        "last_offense": last,
        "offense_count": count,
        "sources": '["IPS"]',
        "devices": '["fw-a"]',
        "vdoms": '["fw-a/root"]',
        "active_until": until,
        "status": "listed",
        "note": None,
        "updated": int(time.time()),
    }


def _insert(db: sqlite3.Connection, table: str, row: dict[str, Any]) -> None:
    columns = ", ".join(row)
    marks = ", ".join("?" for _ in row)
    db.execute(f"INSERT INTO {table} ({columns}) VALUES ({marks})", tuple(row.values()))


def poison(path: Path) -> None:
    """Write absurd times into every table the operator surface shows times from."""
    now = int(time.time())
    db = sqlite3.connect(path)
    try:
        with db:
            for row in (
                _offender(ESCALATED, now - 3600, now - 60, 25, HUGE),
                _offender(GARBAGE, 2**40, HUGER, 3, HUGER),
                _offender(FOREVER_V6, now - 3600, HUGE, 1, None),
                _offender(NORMAL, 1_700_000_000, 1_700_000_000, 1, now + 86400),
            ):
                _insert(db, "offenders", row)
            for ip, created, expires in ((ESCALATED, 2**40, HUGER), (GARBAGE, HUGER, HUGE)):
                _insert(
                    db,
                    "offenses",
                    {
                        "device": "fw-a",
                        "vdom": "root",
                        "ip": ip,
                        "created": created,
                        "expires": expires,
                        "source": "IPS",
                        "seen": now,
                    },
                )
            _insert(
                db,
                "events",
                {
                    "time": HUGER,
                    "kind": "relisted",
                    "ip": GARBAGE,
                    "actor": "fw-a",
                    "detail": "new offense",
                },
            )
            for table, network, expires in (
                ("bans", BANNED, HUGER),
                ("allow_entries", ALLOWED, HUGE),
            ):
                net = ip_network(network)
                row = {
                    "network": network,
                    "sort_key": sort_key(net.network_address),
                    "prefixlen": net.prefixlen,
                    "created": now,
                    "expires": expires,
                    "actor": "alice",
                    "note": "hand edit",
                }
                if table == "bans":
                    row["provenance"] = "manual"
                _insert(db, table, row)
            _insert(
                db,
                "feed_consumers",
                {
                    "feed": FEED,
                    "address": "127.0.0.1",
                    "user_agent": "curl/7.58.0",
                    "first_fetch": now,
                    "last_fetch": HUGER,
                    "etag": None,
                    "status": 200,
                    "requests": 1,
                },
            )
    finally:
        db.close()


@pytest.fixture
def poisoned(tmp_path: Path) -> dict[str, Any]:
    db = tmp_path / "banfeed.db"
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}", FEEDS)
    env = {"BANFEED_CONFIG": str(config), "BANFEED_ACTOR": "alice"}
    upgraded = cli("db", "upgrade", env=env)
    assert upgraded.exit_code == 0, upgraded.output
    poison(db)
    return {"env": env, "config": config, "db": db}


def run(env: dict[str, str], *args: str) -> str:
    result = cli(*args, env=env)
    assert result.exit_code == 0, f"banfeed {' '.join(args)}: {result.output}"
    return result.output


def by_ip(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["ip"]: r for r in records}


def assert_poisoned_records(records: dict[str, dict[str, Any]]) -> None:
    assert records[ESCALATED]["active_until"] == FAR
    assert records[GARBAGE]["first_offense"] == FAR
    assert records[GARBAGE]["last_offense"] == FAR
    assert records[GARBAGE]["active_until"] == FAR
    assert records[FOREVER_V6]["active_until"] in (None, "")  # forever stays forever
    assert records[FOREVER_V6]["last_offense"] == FAR
    assert records[NORMAL]["first_offense"] == iso(1_700_000_000) == "2023-11-14T22:13:20Z"


# --------------------------------------------------------------------------- commands


@pytest.mark.parametrize("show_all", [False, True], ids=["active", "all"])
def test_list_json_and_csv_show_far_times_as_9999(poisoned: dict[str, Any], show_all: bool) -> None:
    extra = ("--all",) if show_all else ()
    records = by_ip(json.loads(run(poisoned["env"], "list", "--format", "json", *extra)))
    assert set(records) >= {ESCALATED, GARBAGE, FOREVER_V6, NORMAL}
    assert_poisoned_records(records)
    assert all(records[ip]["state"] == "active" for ip in (ESCALATED, GARBAGE, FOREVER_V6))

    rows = by_ip(
        list(csv.DictReader(io.StringIO(run(poisoned["env"], "list", "--format", "csv", *extra))))
    )
    assert_poisoned_records(rows)


@pytest.mark.parametrize("show_all", [False, True], ids=["active", "all"])
def test_list_table_shows_far_times_as_9999(poisoned: dict[str, Any], show_all: bool) -> None:
    out = run(poisoned["env"], "list", *(("--all",) if show_all else ()))
    assert ESCALATED in out and GARBAGE in out and NORMAL in out
    assert FAR_SHORT in out
    assert "forever" in out
    assert "4 offenders" in out


def test_show_json_shows_every_far_time_as_9999(poisoned: dict[str, Any]) -> None:
    record = json.loads(run(poisoned["env"], "show", GARBAGE, "--format", "json"))
    assert record["first_offense"] == record["last_offense"] == record["active_until"] == FAR
    assert [(o["created"], o["expires"]) for o in record["offenses"]] == [(FAR, FAR)]
    assert [(e["time"], e["kind"]) for e in record["events"]] == [(FAR, "relisted")]
    assert record["feeds"][FEED]["listed"] is True

    escalated = json.loads(run(poisoned["env"], "show", ESCALATED, "--format", "json"))
    assert escalated["active_until"] == FAR
    assert escalated["offenses"][0]["created"] == FAR  # 2**40: year 36812


def test_show_table_shows_far_times_as_9999(poisoned: dict[str, Any]) -> None:
    out = run(poisoned["env"], "show", GARBAGE)
    assert f"active until: {FAR}" in out
    assert f"first offense {FAR}, last {FAR}" in out
    # The timeline: the offense's time and device expiry (the table may wrap the line between
    # them), and the event's time.
    assert "device expiry" in out and out.count(FAR) >= 3 + 3
    forever = run(poisoned["env"], "show", FOREVER_V6)
    assert "active until: forever" in forever


def test_export_txt_json_csv(poisoned: dict[str, Any]) -> None:
    lines = run(poisoned["env"], "export").splitlines()
    assert {ESCALATED, GARBAGE, FOREVER_V6, NORMAL, BANNED} <= set(lines)

    records = by_ip(json.loads(run(poisoned["env"], "export", "--format", "json")))
    assert_poisoned_records(records)

    rows = by_ip(
        list(csv.DictReader(io.StringIO(run(poisoned["env"], "export", "--format", "csv"))))
    )
    assert_poisoned_records(rows)


def test_allow_list_shows_a_far_expiry_as_9999(poisoned: dict[str, Any]) -> None:
    rows = json.loads(run(poisoned["env"], "allow", "list", "--format", "json"))
    entry = next(r for r in rows if r["network"] == ALLOWED)
    assert entry["expires"] == FAR
    assert FAR in run(poisoned["env"], "allow", "list")


def test_feeds_command_shows_a_far_fetch_time_as_9999(poisoned: dict[str, Any]) -> None:
    run(poisoned["env"], "export")  # publishes a version: `feeds` reads what was published
    rows = json.loads(run(poisoned["env"], "feeds", "--format", "json"))
    feed = next(r for r in rows if r["feed"] == FEED)
    assert feed["entries"] >= 5
    assert [c["last_fetch"] for c in feed["consumers"]] == [FAR]
    assert FAR in run(poisoned["env"], "feeds")


# --------------------------------------------------------------------------- the feed server


@pytest.fixture
def daemon(poisoned: dict[str, Any]) -> Iterator[RunningDaemon]:
    running = RunningDaemon(config_mod.load(poisoned["config"]), collect=False)
    yield running
    running.stop()


def test_feeds_json_and_csv_answer_200_on_a_poisoned_store(daemon: RunningDaemon) -> None:
    base = f"{daemon.url}/feeds/{FEED}"
    wait_for(lambda: httpx.get(f"{base}.txt", timeout=5).status_code == 200, what="the first feed")
    text = httpx.get(f"{base}.txt", timeout=5)
    assert GARBAGE in text.text.splitlines()
    answer = httpx.get(f"{base}.json", timeout=5)
    assert answer.status_code == 200, answer.text
    assert_poisoned_records(by_ip(answer.json()))
    assert answer.headers["last-modified"].endswith(" GMT")
    table = httpx.get(f"{base}.csv", timeout=5)
    assert table.status_code == 200, table.text
    assert_poisoned_records(by_ip(list(csv.DictReader(io.StringIO(table.text)))))


# --------------------------------------------------------------------------- a fresh escalation


def test_forty_offenses_with_max_ttl_forever_are_active_until_9999(
    fleet: simulator.SimFleet, run_sim: Any, tmp_path: Path
) -> None:
    """base_ttl 1h × 2^39 is ~63 million years: stored and shown as MAX_TIME, not an error."""
    now = int(time.time())
    device = fleet.add_device("fw-r", token="tok-r", entries=0)
    # One address quarantined 40 times (40 different `created`), and one only 3 times. No
    # device expiry, so the simulator (on its own clock) keeps listing them.
    created = [now - 3600 + 60 * i for i in range(40)]
    for moment in created:
        device.add("root", ESCALATED, created=moment, expires=None)
    for moment in created[:3]:
        device.add("root", NORMAL, created=moment, expires=None)
    urls = run_sim()
    body = '[retention]\nbase_ttl = "1h"\nfactor = 2\nmax_ttl = "forever"\n\n' + fortigate_toml(
        "fw-r", urls["fw-r"], "TOK_R"
    )
    db = tmp_path / "banfeed.db"
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}", body)
    env = {"BANFEED_CONFIG": str(config), "TOK_R": "tok-r"}
    run(env, "db", "upgrade")
    run(env, "collect")

    with sqlite3.connect(db) as conn:
        stored = dict(conn.execute("SELECT ip, active_until FROM offenders").fetchall())
        counts = dict(conn.execute("SELECT ip, offense_count FROM offenders").fetchall())
    assert counts == {ESCALATED: 40, NORMAL: 3}
    # The collector used the one retention rule: capped at a showable date, not year 63 million.
    retention = Retention(base_ttl=3600, factor=2.0, max_ttl=None)
    assert stored[ESCALATED] == retention.active_until(created[-1], 40) == MAX_TIME
    assert stored[NORMAL] == created[2] + 4 * 3600  # below the cap: the formula, unchanged

    records = by_ip(json.loads(run(env, "list", "--format", "json")))
    assert records[ESCALATED]["active_until"] == FAR
    assert records[ESCALATED]["offense_count"] == 40
    assert records[NORMAL]["active_until"] == iso(created[2] + 4 * 3600)
    shown = json.loads(run(env, "show", ESCALATED, "--format", "json"))
    assert shown["active_until"] == FAR and len(shown["offenses"]) == 40
    assert (
        by_ip(json.loads(run(env, "export", "--format", "json")))[ESCALATED]["active_until"] == FAR
    )
    assert FAR_SHORT in run(env, "list")
