"""FortiGates polled, pushed to and released through a FortiManager (``[[fortimanagers]]``),
against the simulator's FortiManager and FortiGates over real HTTP on 127.0.0.1, with a real
SQLite store: one JSON-RPC call per ADOM and VDOM, each device's answer judged and stored as a
direct poll's, failures isolated per device or spread from the FortiManager."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from banfeed import simulator
from banfeed.config import parse
from banfeed.errors import ConfigError
from banfeed.fortios.fmgclient import ManagedDevice, ManagedDeviceClient
from banfeed.fortios.fortimanager import FortiManagerTarget, managed_devices
from banfeed.simulator import fortimanager as simfmg
from banfeed.store import open_store
from conftest import T0, cli

FIXTURES = Path(__file__).parent / "fixtures" / "fortios"
KEY = "fmg-api-key-1"
DEVICES = ("fgt_dut1", "fgt_dut2", "fgt_dut3")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """Three FortiGates managed by one FortiManager in ADOM ``root``, banfeed polling them
    through it only."""
    fleet = simulator.SimFleet(seed=5)
    devices = {name: fleet.add_device(name, token=f"tok-{name}") for name in DEVICES}
    sim = simulator.start(fleet)  # the devices listen too, though banfeed never asks them
    fmg = simfmg.fortimanager(fleet, KEY)
    running = simfmg.start(fmg)
    monkeypatch.setenv("FMG_KEY", KEY)
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///b.db"
[push]
quarantine = true
[[fortimanagers]]
name = "fmg-1"
url = "{running.url}"
token_env = "FMG_KEY"
timeout = "10s"
device_timeout = "5s"
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    yield {"fleet": fleet, "devices": devices, "fmg": fmg, "run": running, "path": path}
    running.stop()
    sim.stop()


def collect(site: dict[str, Any], *extra: str) -> tuple[int, dict[str, Any]]:
    result = cli("--config", str(site["path"]), "collect", "--format", "json", *extra)
    return result.exit_code, json.loads(result.stdout)


def statuses(site: dict[str, Any]) -> dict[str, Any]:
    store = open_store(f"sqlite:///{site['path'].parent / 'b.db'}")
    try:
        with store.read() as tx:
            return {device: s for (device, _vdom), s in tx.device_statuses().items()}
    finally:
        store.close()


def offender(site: dict[str, Any], ip: str) -> Any:
    store = open_store(f"sqlite:///{site['path'].parent / 'b.db'}")
    try:
        with store.read() as tx:
            return tx.get_offender(ip), tx.offenses_of(ip)
    finally:
        store.close()


def posts(device: simulator.SimDevice, suffix: str) -> list[Any]:
    return [b for method, path, b in device.calls if method == "POST" and path.endswith(suffix)]


def test_a_cycle_through_the_fortimanager_stores_each_devices_offenses(
    site: dict[str, Any],
) -> None:
    now = int(time.time())
    site["devices"]["fgt_dut1"].add("root", "93.184.216.34", created=now - 60, source="IPS")
    site["devices"]["fgt_dut2"].add("root", "93.184.216.34", created=now - 30, source="DoS")
    site["devices"]["fgt_dut2"].add("root", "2a00:1450::1", created=now - 10, expires=None)
    code, record = collect(site)
    assert code == 0, record
    polls = {p["device"]: p for p in record["polls"]}
    assert set(polls) == {"fmg-1", "fmg-1.fgt_dut1", "fmg-1.fgt_dut2", "fmg-1.fgt_dut3"}
    assert [polls[f"fmg-1.{d}"]["entries"] for d in DEVICES] == [1, 2, 0]
    # One JSON-RPC call reached all three: each device was asked once, by the FortiManager
    # (the calls after it are the push of what dut1 and dut2 found, to the others).
    (call,) = [c for c in site["fmg"].calls if "user/banned?" in json.dumps(c)]
    listed = "/api/v2/monitor/user/banned"
    for device in site["devices"].values():
        assert [p for m, p, _ in device.calls if m == "GET" and p == listed] == [listed]
    data = call["params"][0]["data"]
    assert call["method"] == "exec" and call["params"][0]["url"] == "sys/proxy/json"
    assert data["target"] == ["adom/root/group/All_FortiGate"]
    assert data["resource"] == "/api/v2/monitor/user/banned?vdom=root"
    found, offenses = offender(site, "93.184.216.34")
    assert found.devices == ("fmg-1.fgt_dut1", "fmg-1.fgt_dut2")
    assert found.vdoms == ("fmg-1.fgt_dut1/root", "fmg-1.fgt_dut2/root")
    assert sorted(o.source for o in offenses) == ["DoS", "IPS"]
    rows = statuses(site)
    assert rows["fmg-1.fgt_dut2"].entries == 2 and rows["fmg-1.fgt_dut2"].error_kind is None
    assert rows["fmg-1"].error_kind is None and rows["fmg-1"].entries == 0
    # The others list what was pushed to them, recorded: no new offense. Then the same answers
    # again: each device's answer is recognised unchanged (diffing per device).
    code, record = collect(site)
    assert code == 0 and record["summary"]["new_offenses"] == 0
    code, record = collect(site)
    assert code == 0
    assert all(p["unchanged"] for p in record["polls"] if p["device"] != "fmg-1")
    assert record["summary"]["new_offenses"] == 0


def test_one_device_down_behind_the_fortimanager_fails_alone(site: dict[str, Any]) -> None:
    now = int(time.time())
    site["devices"]["fgt_dut1"].add("root", "93.184.216.50", created=now - 5)
    site["fmg"].unreachable.add("fgt_dut2")  # its tunnel to the FortiManager is down
    site["devices"]["fgt_dut3"].fault = "500"  # it answers the FortiManager an HTML 500
    code, record = collect(site)
    assert code == 1
    polls = {p["device"]: p for p in record["polls"]}
    assert polls["fmg-1"]["ok"] and polls["fmg-1.fgt_dut1"]["ok"]
    assert polls["fmg-1.fgt_dut2"]["error"]["kind"] == "unreachable"
    assert "FortiManager fmg-1 could not reach it" in polls["fmg-1.fgt_dut2"]["error"]["detail"]
    assert polls["fmg-1.fgt_dut3"]["error"]["kind"] == "server_error"
    assert offender(site, "93.184.216.50")[0] is not None  # the healthy device was stored
    rows = statuses(site)
    assert rows["fmg-1.fgt_dut2"].error_kind == "unreachable"
    assert rows["fmg-1.fgt_dut2"].backoff_until is None  # retried next cycle
    assert rows["fmg-1.fgt_dut1"].last_success is not None


def test_a_refused_key_fails_every_device_and_backs_off_until_the_key_changes(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert collect(site)[0] == 0  # the devices behind it are known now
    site["fmg"].api_key = "rotated-key"  # the FortiManager's key changed, banfeed's did not
    code, record = collect(site)
    assert code == 1
    polls = {p["device"]: p for p in record["polls"]}
    assert set(polls) == {"fmg-1", *(f"fmg-1.{d}" for d in DEVICES)}
    assert {p["error"]["kind"] for p in polls.values()} == {"auth"}
    assert (
        "via FortiManager fmg-1: token refused (401)" in polls["fmg-1.fgt_dut3"]["error"]["detail"]
    )
    rows = statuses(site)
    assert all(rows[name].backoff_until is not None for name in polls)
    # Backed off: the next cycle asks nothing of the FortiManager, and stores nothing.
    asked = site["fmg"].requests
    code, record = collect(site)
    assert code == 1 and site["fmg"].requests == asked
    assert {p["error"]["kind"] for p in record["polls"]} == {"backoff"}
    # The new key is tried at once, and its devices with it (their back-off was the old key's).
    monkeypatch.setenv("FMG_KEY", "rotated-key")
    code, record = collect(site)
    assert code == 0, record
    assert site["fmg"].requests == asked + 1
    assert all(s.backoff_until is None for s in statuses(site).values())


def test_a_fortimanager_down_fails_each_device_with_its_error(site: dict[str, Any]) -> None:
    assert collect(site)[0] == 0
    site["run"].stop()
    code, record = collect(site)
    assert code == 1
    errors = {p["device"]: p["error"] for p in record["polls"]}
    assert set(errors) == {"fmg-1", *(f"fmg-1.{d}" for d in DEVICES)}
    assert {e["kind"] for e in errors.values()} == {"unreachable"}
    assert errors["fmg-1.fgt_dut1"]["detail"].startswith("via FortiManager fmg-1: cannot connect")
    rows = statuses(site)
    assert rows["fmg-1.fgt_dut1"].consecutive_failures == 1
    assert rows["fmg-1.fgt_dut1"].last_success is not None  # kept from the good cycle


@pytest.mark.parametrize("fault", ["shape", "truncated", "huge", "-11", "500"])
def test_a_broken_fortimanager_answer_fails_cleanly(site: dict[str, Any], fault: str) -> None:
    assert collect(site)[0] == 0
    site["fmg"].fault = fault
    site["fmg"].huge_bytes = 2 * 1024**2
    text = site["path"].read_text().replace('device_timeout = "5s"', 'max_response = "1MiB"')
    site["path"].write_text(text + 'device_timeout = "5s"\n')
    code, record = collect(site)
    assert code == 1
    kinds = {p["device"]: p["error"]["kind"] for p in record["polls"]}
    expected = {"-11": "permission", "500": "server_error"}.get(fault, "bad_response")
    assert kinds == dict.fromkeys(["fmg-1", *(f"fmg-1.{d}" for d in DEVICES)], expected)


class Canned:
    """A stand-in FortiManager on 127.0.0.1 answering each JSON-RPC call with ``body``."""

    def __init__(self, body: bytes) -> None:
        self.body = body

        async def jsonrpc(request: Request) -> Response:
            await request.body()
            return Response(self.body, media_type="application/json")

        app = Starlette(routes=[Route("/jsonrpc", jsonrpc, methods=["POST"])])
        config = uvicorn.Config(app, log_config=None, lifespan="off", port=0, loop="asyncio")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.005)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def canned() -> Iterator[Any]:
    servers: list[Canned] = []

    def serve(body: bytes) -> Canned:
        servers.append(Canned(body))
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()


def canned_site(tmp_path: Path, url: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.setenv("FMG_KEY", KEY)
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f'[store]\nurl = "sqlite:///b.db"\n[[fortimanagers]]\nname = "lab"\nurl = "{url}"\n'
        'token_env = "FMG_KEY"\nadoms = ["adom_dut"]\ntimeout = "10s"\ndevice_timeout = "5s"\n'
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    return {"path": path}


def test_the_fixture_answers_parse(
    tmp_path: Path, canned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Three v6.4.4 FortiGates with empty lists, as a FortiManager really answered.
    server = canned((FIXTURES / "fmg_proxy_user_banned_empty_v6.4.4.json").read_bytes())
    site = canned_site(tmp_path, server.url, monkeypatch)
    code, record = collect(site)
    assert code == 0, record
    polls = {p["device"]: p["entries"] for p in record["polls"]}
    assert polls == {"lab": 0, "lab.fgt_dut1": 0, "lab.fgt_dut2": 0, "lab.fgt_dut3": 0}
    # A v7.4.2 entry-list answer through the FortiManager: what `verify` reads per device.
    server.body = (FIXTURES / "fmg_proxy_external_resource_entry_list_v7.4.2.json").read_bytes()
    target = ManagedDevice(
        name="lab.dev_001", url=server.url, token=SecretStr(KEY), fortimanager="lab",
        adom="demo", device="dev_001",
    )  # fmt: skip

    async def status() -> Any:
        async with ManagedDeviceClient(target) as client:
            return await client.feed_status("banfeed-quarantine")

    seen = asyncio.run(status())
    assert (seen.valid, seen.invalid, seen.overflow, seen.http_status) == (6, 0, False, 304)


def _answer(*items: Any) -> bytes:
    result = {"data": list(items), "status": {"code": 0, "message": "OK"}, "url": "/sys/proxy/json"}
    return json.dumps({"id": 1, "result": [result]}).encode()


def _ok(target: Any, response: Any) -> dict[str, Any]:
    return {"target": target, "status": {"code": 0, "message": "OK"}, "response": response}


def test_malformed_device_items_fail_only_their_device(
    tmp_path: Path, canned: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = {"results": [{"ip_address": "93.184.216.9", "created": T0, "ipv6": 0}], "vdom": "root"}
    server = canned(
        _answer(
            _ok("fgt-good", good),
            _ok("fgt-shape", {"results": "nope", "vdom": "root"}),
            _ok("fgt-error", {"status": "error", "http_status": 403, "error": -403}),
            _ok("fgt-null", None),
            {"target": "fgt-status", "status": "OK", "response": good},
            {"target": 42, "status": {"code": 0}, "response": good},
            "not an item",
            _ok("bad\nname", good),
        )
    )
    site = canned_site(tmp_path, server.url, monkeypatch)
    code, record = collect(site)
    assert code == 1
    polls = {p["device"]: p for p in record["polls"]}
    assert polls["lab.fgt-good"]["ok"] and polls["lab.fgt-good"]["entries"] == 1
    assert polls["lab.fgt-shape"]["error"]["kind"] == "bad_response"
    assert polls["lab.fgt-error"]["error"]["kind"] == "permission"
    assert polls["lab.fgt-null"]["error"]["kind"] == "bad_response"
    # Items that name no usable device are counted on the FortiManager, never stored.
    assert polls["lab"]["ok"] and polls["lab"]["rejected"] == 4
    assert set(polls) == {"lab", "lab.fgt-good", "lab.fgt-shape", "lab.fgt-error", "lab.fgt-null"}
    assert offender(site, "93.184.216.9")[0].devices == ("lab.fgt-good",)


@pytest.mark.parametrize(
    "body",
    [
        b'{"id": 1, "result": [{"status": {"code": 0}, "data": "x"}]}',
        b'{"id": 1, "result": [{"status": {"code": "0"}, "data": []}]}',
        b'{"id": 1, "result": []}',
        b'{"id": 1, "error": {"code": -32600}}',
        b"[" * 100_000,
        b'{"id": 1, "result": [{"status": {"code": 0}, "data": [' + b"1," * 10 + b"]}",
    ],
    ids=["data-string", "code-string", "no-result", "rpc-error", "nested", "cut"],
)
def test_a_malformed_proxy_answer_fails_the_fortimanager_cleanly(
    tmp_path: Path, canned: Any, monkeypatch: pytest.MonkeyPatch, body: bytes
) -> None:
    server = canned(body)
    site = canned_site(tmp_path, server.url, monkeypatch)
    code, record = collect(site)
    assert code == 1
    (poll,) = record["polls"]
    assert poll["device"] == "lab" and poll["error"]["kind"] == "bad_response"


def test_push_and_unban_everywhere_reach_the_devices_through_it(site: dict[str, Any]) -> None:
    now = int(time.time())
    dut1, dut2, dut3 = (site["devices"][d] for d in DEVICES)
    dut1.add("root", "93.184.216.60", created=now - 20)
    dut1.add("root", "93.184.216.61", created=now - 10)
    code, record = collect(site)
    assert code == 0, record
    pushes = {p["device"]: p for p in record["pushes"]}
    assert pushes["fmg-1.fgt_dut2"]["count"] == 2 and pushes["fmg-1.fgt_dut3"]["count"] == 2
    assert pushes["fmg-1.fgt_dut1"]["count"] == 0  # never pushed back to the reporter
    assert posts(dut1, "/add_users") == []
    (pushed,) = posts(dut2, "/add_users")
    assert sorted(pushed["ip_addresses"]) == ["93.184.216.60", "93.184.216.61"]
    assert {e.ip for e in dut3.vdoms["root"]} == {"93.184.216.60", "93.184.216.61"}
    # Listed back by the devices it was pushed to: recorded pushes, so no new offense.
    code, record = collect(site)
    assert code == 0 and record["summary"]["new_offenses"] == 0
    result = cli("--config", str(site["path"]), "unban", "93.184.216.60", "--everywhere")
    assert result.exit_code == 0, result.output
    for device in (dut1, dut2, dut3):
        assert posts(device, "/clear_users") == [{"ip_addresses": ["93.184.216.60"]}]
        assert "93.184.216.60" not in {e.ip for e in device.vdoms["root"]}
    assert "fmg-1.fgt_dut3" in result.output


def test_unban_everywhere_reports_a_fortimanager_it_cannot_resolve(site: dict[str, Any]) -> None:
    site["devices"]["fgt_dut1"].add("root", "93.184.216.70", created=int(time.time()) - 5)
    assert collect(site)[0] == 0
    site["run"].stop()
    result = cli("--config", str(site["path"]), "unban", "93.184.216.70", "--everywhere")
    assert result.exit_code == 1
    assert "fmg-1" in result.output and "unreachable" in result.output


def test_check_reports_the_fortimanager_and_its_devices(site: dict[str, Any]) -> None:
    result = cli("--config", str(site["path"]), "check", "--format", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [d["device"] for d in report["devices"]] == ["fmg-1", *(f"fmg-1.{d}" for d in DEVICES)]
    assert any("fortimanagers[fmg-1].url: plain http" in w for w in report["warnings"])
    assert site["fmg"].requests == 1
    # Targets that resolve to no device: the FortiManager fails the check, naming why.
    text = site["path"].read_text() + 'targets = ["group/emea"]\n'
    site["path"].write_text(text)
    result = cli("--config", str(site["path"]), "check", "--format", "json")
    assert result.exit_code == 1
    (row,) = json.loads(result.stdout)["devices"]
    assert row["device"] == "fmg-1" and row["error"]["kind"] == "not_found"
    assert "check adoms and targets" in row["error"]["detail"]


def test_check_reports_a_refused_key(site: dict[str, Any]) -> None:
    site["fmg"].api_key = "another"
    result = cli("--config", str(site["path"]), "check")
    assert result.exit_code == 1
    assert "token refused (401)" in result.output


def test_targets_resolve_groups_and_devices_in_each_adom(site: dict[str, Any]) -> None:
    fmg = site["fmg"]
    fmg.adoms = {"root": ["fgt_dut1"], "emea": ["fgt_dut2", "fgt_dut3"]}
    fmg.groups = {("root", "branches"): ["fgt_dut1"], ("emea", "branches"): ["fgt_dut3"]}
    target = FortiManagerTarget(
        name="fmg-1", url=site["run"].url, token=SecretStr(KEY), adoms=("root", "emea"),
        members=("group/branches",),
    )  # fmt: skip
    found = asyncio.run(managed_devices(target))
    assert [(d.name, d.adom) for d in found] == [
        ("fmg-1.fgt_dut1", "root"),
        ("fmg-1.fgt_dut3", "emea"),
    ]


def test_config_refuses_clashing_names_and_missing_keys(tmp_path: Path) -> None:
    fg = {"name": "edge", "url": "https://192.0.2.1", "token_env": "T"}
    fmg = {"name": "fmg-1", "url": "192.0.2.2", "token_env": "K"}
    config = parse({"fortigates": [fg], "fortimanagers": [fmg]}, base_dir=tmp_path)
    assert config.fortimanagers[0].url == "https://192.0.2.2"  # https by default
    assert config.fortimanagers[0].targets == ["group/All_FortiGate"]
    bad: list[tuple[dict[str, Any], str]] = [
        ({"fortigates": [fg], "fortimanagers": [fmg | {"name": "edge"}]}, "repeated: edge"),
        ({"fortigates": [fg | {"name": "fmg-1.x"}], "fortimanagers": [fmg]}, "named like a"),
        ({"fortimanagers": [{"name": "f", "url": "192.0.2.2"}]}, "exactly one of token_env"),
        ({"fortimanagers": [fmg | {"token": "x"}]}, "fortimanagers[0].token: unknown key"),
        ({"fortimanagers": [fmg | {"targets": ["adom/a/x"]}]}, 'write "group/NAME"'),
        ({"fortimanagers": [fmg | {"device_timeout": "90s"}]}, "shorter than timeout"),
        ({"fortimanagers": [fmg | {"adoms": []}]}, "fortimanagers[0].adoms"),
    ]
    for data, message in bad:
        with pytest.raises(ConfigError) as caught:
            parse(data, base_dir=tmp_path)
        assert message in str(caught.value)


def test_the_dashboard_lists_the_fortimanager_and_each_device_behind_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from webkit import VIEWER, open_app, sign_in, write_site

    from conftest import Clock

    fleet = simulator.SimFleet(seed=9)
    fleet.add_device("fgt_dut1", token="t1").add("root", "93.184.216.80", created=T0)
    fleet.add_device("fgt_dut2", token="t2")
    fmg = simfmg.fortimanager(fleet, KEY, unreachable={"fgt_dut2"})
    monkeypatch.setenv("FMG_KEY", KEY)
    with simfmg.start(fmg) as running:
        extra = (
            f'[[fortimanagers]]\nname = "fmg-1"\nurl = "{running.url}"\ntoken_env = "FMG_KEY"\n'
            'timeout = "10s"\ndevice_timeout = "5s"\n'
        )
        path = write_site(tmp_path, extra)
        assert cli("--config", str(path), "collect").exit_code == 1  # fgt_dut2 is down
    app = open_app(path, Clock(time.time()))
    client = app.client()
    try:
        sign_in(client, *VIEWER)
        rows = {d["device"]: d for d in client.get("/api/v1/devices").json()}
        assert set(rows) == {"fmg-1", "fmg-1.fgt_dut1", "fmg-1.fgt_dut2"}
        assert rows["fmg-1.fgt_dut1"]["ok"] and rows["fmg-1.fgt_dut1"]["entries"] == 1
        assert rows["fmg-1.fgt_dut2"]["error_kind"] == "unreachable"
        page = client.get("/dashboard/")
        assert page.status_code == 200
        assert "fmg-1.fgt_dut1" in page.text and "fmg-1.fgt_dut2" in page.text
    finally:
        client.close()


def test_verify_asks_each_device_through_it(site: dict[str, Any]) -> None:
    site["devices"]["fgt_dut1"].add_feed("banfeed-quarantine", url="", push=True)
    assert collect(site)[0] == 0  # publishes the (empty) feed
    result = cli("--config", str(site["path"]), "verify", "--format", "json")
    verdicts = {d["device"]: d["verdict"] for d in json.loads(result.stdout)["devices"]}
    assert verdicts == {
        "fmg-1.fgt_dut1": "in_sync",  # 0 loaded, 0 served
        "fmg-1.fgt_dut2": "missing",  # no such threat feed: a 404 relayed inside the item
        "fmg-1.fgt_dut3": "missing",
    }
    assert result.exit_code == 1
    asked = [c for m, c, _ in site["devices"]["fgt_dut1"].calls if c.endswith("/entry-list")]
    assert asked == ["/api/v2/monitor/system/external-resource/entry-list"]
