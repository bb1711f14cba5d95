"""``/dashboard/sources``, ``GET /api/v1/sources`` and ``banfeed alerts list``: against a real
`banfeed run` polling a simulated FortiGate directly, two through the simulator's FortiManager
and a blocklist served on 127.0.0.1, reporting to a local fake AbuseIPDB and alerting a local
webhook receiver; and in process (the whole app, a real SQLite store) for what a run cannot
show quickly: sources never polled, a row of a source no longer configured, a failing store."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from test_abuseipdb import KEY as ABUSE_KEY
from test_abuseipdb import FakeAbuseIPDB
from test_alerts_targets import SECRET, Receiver
from test_blocklists import ListServer
from webkit import VIEWER, Client, cli_input, open_app, sign_in, write_site

from banfeed import simulator
from banfeed.config import load, parse
from banfeed.models import DeviceStatus
from banfeed.simulator import fortimanager as simfmg
from banfeed.web.sources import SourceKind, SourceRef, source_of
from conftest import T0, Clock, cli, served_url, spawn_banfeed, stop_banfeed, wait_for

FMG_KEY = "fmg-api-key-7"
LIST = "185.220.101.4\n185.220.101.5\n2a0b:f4c0::1\n"


def site_toml(
    sim_url: str, fmg_url: str, list_url: str, abuse_url: str, hook: str, refusing: str
) -> str:
    return f"""
[store]
url = "sqlite:///b.db"
[server]
listen = "127.0.0.1:0"
[collect]
interval = "2s"
jitter = 0.0
[[feeds]]
name = "quarantine"
[dashboard]
enabled = true
[alerts]
storm_new_offenders = 1
verify = false
[[alerts.targets]]
type = "webhook"
name = "soar"
url = "{hook}"
secret_env = "HOOK"
[[alerts.targets]]
type = "webhook"
name = "unread"
url = "{hook}"
secret_env = "HOOK_NOT_SET"
[[alerts.targets]]
type = "webhook"
name = "refusing"
url = "{refusing}"
secret_env = "HOOK"
[abuseipdb]
enabled = true
url = "{abuse_url}"
key_env = "ABUSE_KEY"
min_offenses = 1
[[fortigates]]
name = "edge-1"
url = "{sim_url}"
token_env = "TOKEN_1"
timeout = "5s"
[[fortimanagers]]
name = "fmg-1"
url = "{fmg_url}"
token_env = "FMG_KEY"
timeout = "5s"
device_timeout = "3s"
[[blocklists]]
name = "feodo"
url = "{list_url}/list.txt"
cause = "botnet"
timeout = "5s"
"""


def signed_in(url: str) -> httpx.Client:
    """A client of the running site signed in as the viewer through the login form."""
    client = httpx.Client(base_url=url, timeout=30)
    form = client.get("/dashboard/login")
    token = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert token is not None
    answer = client.post(
        "/dashboard/login",
        data={"csrf": token.group(1), "username": VIEWER[0], "password": VIEWER[1], "next": ""},
        headers={"Origin": url},
    )
    assert answer.status_code == 303, answer.text
    return client


@pytest.fixture
def running(tmp_path: Path) -> Iterator[dict[str, Any]]:
    now = int(time.time())  # a real run's clock (T0 is when the suite started)
    direct = simulator.SimFleet(seed=21)
    edge = direct.add_device("edge-1", token="t1", entries=0)
    edge.add("root", "45.33.32.156", created=now - 60, source="IPS")
    managed = simulator.SimFleet(seed=22)
    managed.add_device("fgt_a", token="ta", entries=0).add("root", "91.240.118.7", created=now)
    managed.add_device("fgt_b", token="tb", entries=0).add("root", "80.82.77.33", created=now)
    fmg = simfmg.fortimanager(managed, FMG_KEY)
    lists, abuse, hook, refusing = ListServer(), FakeAbuseIPDB(), Receiver(), Receiver()
    refusing.statuses = [500] * 100  # every delivery fails (and is tried again after 60 s)
    lists.body = LIST.encode()
    with simulator.start(direct) as sim, simfmg.start(fmg) as fmg_run:
        path = tmp_path / "banfeed.toml"
        path.write_text(
            site_toml(
                sim.urls["edge-1"], fmg_run.url, lists.url, abuse.url, hook.url, refusing.url
            ),
            encoding="utf-8",
        )
        assert cli("--config", str(path), "db", "upgrade").exit_code == 0
        added = cli_input(path, VIEWER[1] + "\n", "user", "add", VIEWER[0], "--role", "viewer")
        assert added.exit_code == 0  # type: ignore[attr-defined]
        env = {"TOKEN_1": "t1", "FMG_KEY": FMG_KEY, "ABUSE_KEY": ABUSE_KEY, "HOOK": SECRET}
        proc, lines, reader = spawn_banfeed("--config", str(path), "run", env=env)
        try:
            url = served_url(lines)
            client = signed_in(url)
            try:
                yield {"path": path, "client": client, "fmg": fmg_run, "abuse": abuse,
                       "hook": hook, "env": env}  # fmt: skip
            finally:
                client.close()
        finally:
            try:
                stop_banfeed(proc, reader, lines)
            finally:
                lists.stop()
                abuse.stop()
                hook.stop()
                refusing.stop()


def answer(client: httpx.Client | Client, path: str) -> Any:
    got = client.get(path)
    assert got.status_code == 200, got.text
    return got.json()


def by_name(record: dict[str, Any]) -> dict[str, Any]:
    return {s["name"]: s for s in record["sources"]}


def test_each_source_its_kind_and_status_abuseipdb_and_targets_from_a_real_run(
    running: dict[str, Any],
) -> None:
    client, path = running["client"], running["path"]

    seen: list[Any] = []

    def all_answered() -> dict[str, Any] | None:
        found = answer(client, "/api/v1/sources")
        seen[:] = [found]
        ready = all(s["state"] == "ok" for s in found["sources"])
        ready = ready and len(by_name(found)["fmg-1"]["devices"]) == 2
        return found if ready and found["abuseipdb"]["today"] >= 6 else None

    try:
        found = by_name(wait_for(all_answered, timeout=60, what="every source answered"))
    except AssertionError as exc:  # say what was missing
        raise AssertionError(f"{exc}; last answer: {json.dumps(seen)[:3000]}") from None
    assert {n: s["kind"] for n, s in found.items()} == {
        "edge-1": "fortigate",
        "fmg-1": "fortimanager",
        "feodo": "blocklist",
    }
    assert [(r["device"], r["vdom"]) for r in found["feodo"]["rows"]] == [("import:feodo", "list")]
    assert found["feodo"]["entries"] == 3 and found["edge-1"]["entries"] == 1
    fmg = found["fmg-1"]
    assert [r["device"] for r in fmg["rows"]] == ["fmg-1"]  # its own row: the JSON-RPC call
    assert [(d["device"], d["entries"]) for d in fmg["devices"]] == [
        ("fmg-1.fgt_a", 1),
        ("fmg-1.fgt_b", 1),
    ]
    assert fmg["entries"] == 2 and fmg["health"] == "ok" and fmg["last_error"] is None
    assert fmg["devices_failing"] == 0

    # AbuseIPDB: the CLI's own numbers (reports may still arrive: equal once they settle)
    def same_as_the_cli() -> dict[str, Any] | None:
        shown = json.loads(cli("--config", str(path), "abuseipdb", "status", "--format", "json",
                               env=running["env"]).stdout)  # fmt: skip
        page = answer(client, "/api/v1/sources")["abuseipdb"]
        keys = ("enabled", "today", "daily_limit", "reports")
        assert shown["queued"] is None  # the CLI's process sends nothing
        return page if {k: page[k] for k in keys} == {k: shown[k] for k in keys} else None

    abuse = wait_for(same_as_the_cli, timeout=30, what="the reports settled")
    assert abuse["enabled"] and abuse["today"] == len(running["abuse"].reported()) == 6
    assert abuse["last_report"] == abuse["reports"][0] and abuse["last_refused"] is None
    assert abuse["queued"] == 0 and abuse["last_failure"] is None  # the sending process's own
    assert '<span id="abuseipdb-queued">0</span> queued' in client.get("/dashboard/sources").text

    # the alert targets: the ban storm went to "soar"; "unread" has no secret, so is not used
    wait_for(lambda: running["hook"].ok(), timeout=30, what="the ban storm alert")

    def delivered() -> dict[str, Any] | None:
        found = answer(client, "/api/v1/sources")["alerts"]
        counts = [t["deliveries"] for t in found["targets"]]
        return found if counts[0]["sent"] and counts[2]["retried"] else None

    targets = wait_for(delivered, timeout=30, what="the deliveries counted")
    soar, unread, refused = targets["targets"]
    assert targets["alerting"] is True and targets["dropped"] == 0
    assert (soar["target"], soar["type"], soar["in_use"]) == ("soar", "webhook", True)
    assert soar["deliveries"]["sent"] >= 1 and soar["deliveries"]["failed"] == 0
    assert (unread["target"], unread["in_use"]) == ("unread", False)
    assert (refused["target"], refused["in_use"]) == ("refusing", True)
    assert refused["deliveries"]["retried"] >= 1 and refused["deliveries"]["sent"] == 0

    # `banfeed alerts list --format json` is GET /api/v1/alerts (the run saves what it sent)
    def alerts_equal() -> dict[str, Any] | None:
        listed = cli("--config", str(path), "alerts", "list", "--format", "json")
        assert listed.exit_code == 0, listed.output
        served = answer(client, "/api/v1/alerts")
        return served if json.loads(listed.stdout) == served else None

    served = wait_for(alerts_equal, timeout=30, what="the alerts saved in the store")
    assert "ban_storm" in {a["kind"] for a in served["recent"]}  # resolved by the next cycle
    table = cli("--config", str(path), "alerts", "list")
    assert "last notices" in table.stdout and "ban_storm" in table.stdout

    page = client.get("/dashboard/sources")
    assert page.status_code == 200
    for text in ("fmg-1.fgt_a", "import:feodo", 'data-kind="fortimanager"', "6/1000"):
        assert text in page.text, text
    assert 'href="/dashboard/sources" aria-current="page"' in page.text

    # the FortiManager goes away: its row and every device behind it fail, with its error
    running["fmg"].stop()

    def fmg_failing() -> dict[str, Any] | None:
        fmg = by_name(answer(client, "/api/v1/sources"))["fmg-1"]
        return fmg if all(d["state"] == "failing" for d in fmg["devices"]) else None

    fmg = wait_for(fmg_failing, timeout=30, what="the FortiManager's devices failing")
    assert fmg["state"] == "failing" and fmg["last_error"].startswith("unreachable: ")
    assert fmg["health"].startswith("failing ") and fmg["devices_failing"] == 2
    assert fmg["health"].endswith(": unreachable; 2 of 2 devices failing")
    for device in fmg["devices"]:
        assert device["error_message"].startswith("via FortiManager fmg-1: cannot connect")
    assert fmg["last_success"] is not None  # kept from the good cycles
    page = client.get("/dashboard/sources")
    assert "via FortiManager fmg-1: cannot connect" in page.text
    assert by_name(answer(client, "/api/v1/sources"))["edge-1"]["state"] == "ok"


def test_the_kind_of_each_device_comes_from_the_config(tmp_path: Path) -> None:
    config = parse(
        {
            "fortigates": [{"name": "edge-1", "url": "https://192.0.2.1", "token_env": "T"}],
            "fortimanagers": [{"name": "fmg-1", "url": "https://192.0.2.2", "token_env": "K"}],
            "blocklists": [{"name": "feodo", "url": "https://192.0.2.3/list.txt"}],
        },
        base_dir=tmp_path,
    )
    assert source_of(config, "edge-1") == SourceRef(SourceKind.FORTIGATE, "edge-1")
    assert source_of(config, "fmg-1") == SourceRef(SourceKind.FORTIMANAGER, "fmg-1")
    assert source_of(config, "fmg-1.fgt-7") == SourceRef(SourceKind.FORTIMANAGER, "fmg-1")
    assert source_of(config, "import:feodo") == SourceRef(SourceKind.BLOCKLIST, "feodo")
    for gone in ("edge-2", "fmg-10.x", "fmg-1x", "import:other", "import"):
        assert source_of(config, gone) == SourceRef(SourceKind.UNCONFIGURED, gone)


def test_sources_not_polled_yet_a_row_no_longer_configured_and_no_alerting(
    tmp_path: Path,
) -> None:
    extra = (
        '[[fortigates]]\nname = "edge-1"\nurl = "https://192.0.2.1"\ntoken_env = "T"\n'
        'vdoms = ["root", "dmz"]\n'
        '[[fortimanagers]]\nname = "fmg-1"\nurl = "https://192.0.2.2"\ntoken_env = "K"\n'
        '[[blocklists]]\nname = "feodo"\nurl = "https://192.0.2.3/list.txt"\n'
        '[[alerts.targets]]\ntype = "webhook"\nurl = "https://192.0.2.4/h"\nsecret_env = "S"\n'
    )
    app = open_app(write_site(tmp_path, extra), Clock(T0))
    with app.daemon.store.write() as tx:  # a device removed from banfeed.toml since
        tx.save_device_status(
            DeviceStatus("old-fw", "root", T0 - 60, None, "auth", "HTTP 401", 0, 0, 5, 4, T0 + 600)
        )
    client = app.client()
    try:
        sign_in(client, *VIEWER)
        record = answer(client, "/api/v1/sources")
        found = by_name(record)
        assert list(found) == ["edge-1", "fmg-1", "feodo", "old-fw"]
        assert [r["vdom"] for r in found["edge-1"]["rows"]] == ["dmz", "root"]
        for name in ("edge-1", "fmg-1", "feodo"):
            assert (found[name]["state"], found[name]["health"]) == ("not_polled", "not polled yet")
        old = found["old-fw"]
        assert (old["kind"], old["state"]) == ("unconfigured", "backed_off")
        assert (
            old["health"].startswith("backed off until ") and old["last_error"] == "auth: HTTP 401"
        )
        assert record["abuseipdb"] == {
            "enabled": False, "today": 0, "daily_limit": 1000, "reports": [],
            "queued": None, "last_failure": None, "last_report": None, "last_refused": None,
        }  # fmt: skip
        alerting = record["alerts"]
        assert alerting["alerting"] is False and alerting["dropped"] is None
        [target] = alerting["targets"]
        assert target["target"] == "webhook[0]" and target["in_use"] is None
        assert target["deliveries"] is None and target["kinds"] == []
        page = client.get("/dashboard/sources")
        assert page.status_code == 200
        assert "This process sends no alerts" in page.text and "not known" in page.text
        assert "Nothing reported yet." in page.text and "old-fw" in page.text
    finally:
        client.close()
        app.daemon.store.close()


def test_a_failing_store_is_a_503_on_the_page_and_the_api(tmp_path: Path) -> None:
    app = open_app(write_site(tmp_path), Clock(T0))
    client = app.client()
    try:
        sign_in(client, *VIEWER)
        with app.daemon.store.write() as tx:
            tx.conn.exec_driver_sql("ALTER TABLE device_status RENAME TO device_status_gone")
        for url in ("/api/v1/sources", "/dashboard/sources"):
            got = client.get(url)
            assert got.status_code == 503, url
            assert "server log" in got.text and "device_status_gone" not in got.text
    finally:
        client.close()
        app.daemon.store.close()


def test_alerts_list_reads_the_store_and_says_when_there_is_none(tmp_path: Path) -> None:
    path = write_site(tmp_path)
    empty = cli("--config", str(path), "alerts", "list")
    assert empty.exit_code == 0
    assert "no alert firing" in empty.stdout and "no notice sent yet" in empty.stdout
    assert json.loads(cli("--config", str(path), "alerts", "list", "--format", "json").stdout) == {
        "firing": [],
        "recent": [],
    }
    config = load(path)
    from banfeed.store import open_store

    store = open_store(config.store_url())
    stored = [  # oldest first, as the daemon keeps them: fired, then resolved
        {"schema": 1, "kind": "device_failing", "subject": "fw-1/root", "severity": "warning",
         "status": "firing", "text": "fw-1/root: 3 polls failed", "time": T0 - 60,
         "since": T0 - 60, "facts": {"device": "fw-1"}},
        {"schema": 1, "kind": "device_failing", "subject": "fw-1/root", "severity": "info",
         "status": "resolved", "text": "fw-1/root: 3 polls failed", "time": T0,
         "since": T0 - 60, "facts": {"device": "fw-1"}},
        {"schema": 1, "kind": "feed_held", "subject": "all", "severity": "critical",
         "status": "firing", "text": "feed all is held", "time": T0, "since": T0, "facts": {}},
    ]  # fmt: skip
    with store.write() as tx:
        tx.set_meta("alerts", json.dumps(stored))
    store.close()
    shown = json.loads(cli("--config", str(path), "alerts", "list", "--format", "json").stdout)
    assert [a["kind"] for a in shown["firing"]] == ["feed_held"]
    table = cli("--config", str(path), "alerts", "list").stdout
    assert "firing now" in table and "feed all is held" in table
    assert table.index("feed_held") < table.index("last notices")
    assert [(a["kind"], a["status"]) for a in shown["recent"]] == [
        ("feed_held", "firing"),
        ("device_failing", "resolved"),
        ("device_failing", "firing"),
    ]
    app = open_app(path, Clock(T0))
    client = app.client()
    try:
        sign_in(client, *VIEWER)
        assert client.get("/api/v1/alerts").json() == shown
    finally:
        client.close()
        app.daemon.store.close()
