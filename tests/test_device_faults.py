"""A device fails alone, whatever it sends: slow answers, hostile JSON, impossible times.

Real simulated FortiGates over HTTP on 127.0.0.1 (the simulator's drip, drip-headers,
slow-chunked, nested and bad-time faults), the real client, and ``banfeed collect`` end to end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import SecretStr

from banfeed import errors, simulator
from banfeed.fortios import BannedAnswer, DeviceTarget, FortiOSClient
from conftest import T0, Clock, cli, fortigate_toml, write_config

T = TypeVar("T")
TIMEOUT = 1.0
# The simulator sends a byte or a chunk this often: well inside httpx's per-read timeout, so
# only the deadline on the whole request can end these requests.
INTERVAL = 0.2
SLOW = ["drip", "drip-headers", "slow-chunked"]


def on_device(url: str, call: Callable[[FortiOSClient], Awaitable[T]]) -> T:
    async def go() -> T:
        target = DeviceTarget(name="fw", url=url, token=SecretStr("tok"), timeout=TIMEOUT)
        async with FortiOSClient(target) as client:
            return await call(client)

    return asyncio.run(go())


def banned(url: str) -> BannedAnswer:
    return on_device(url, lambda client: client.banned("root", now=T0))


@pytest.fixture
def fw(fleet: simulator.SimFleet, run_sim: Any) -> tuple[simulator.SimDevice, str]:
    device = fleet.add_device("fw", token="tok", entries=5)
    device.drip_interval = INTERVAL
    return device, run_sim()["fw"]


@pytest.mark.parametrize("fault", SLOW)
def test_a_slow_answer_is_a_timeout_of_the_whole_request(fw: Any, fault: str) -> None:
    device, url = fw
    device.fault = fault
    with pytest.raises(errors.DeviceTimeout) as caught:
        banned(url)
    assert caught.value.kind == "timeout" and caught.value.device == "fw"
    assert "within 1s (connect, headers and body)" in str(caught.value)
    assert device.requests == 1  # given up, not retried


@pytest.mark.parametrize("fault", SLOW)
def test_a_slow_answer_to_a_write_is_a_timeout_too(fw: Any, fault: str) -> None:
    device, url = fw
    device.fault = fault
    with pytest.raises(errors.DeviceTimeout):
        on_device(url, lambda client: client.add_users(["198.51.100.9"], 60))


def test_a_slow_answer_that_completes_in_time_is_an_answer(fw: Any) -> None:
    device, url = fw
    device.fault, device.drip_interval = "drip", 0.0
    (lst,) = banned(url).lists
    assert len(lst.offenses) == 5 and lst.rejected == []


def test_deeply_nested_json_is_a_bad_response(fw: Any) -> None:
    device, url = fw
    device.fault = "nested"
    with pytest.raises(errors.DeviceBadResponse, match="nested too deeply") as caught:
        banned(url)
    assert caught.value.kind == "bad_response" and caught.value.device == "fw"
    with pytest.raises(errors.DeviceBadResponse, match="add_users: answer is nested too deeply"):
        on_device(url, lambda client: client.add_users(["198.51.100.9"], 60))
    with pytest.raises(errors.DeviceBadResponse, match="entry-list answer is nested too deeply"):
        on_device(url, lambda client: client.feed_status("quarantine"))


def test_impossible_times_are_rejected_and_the_valid_entries_kept(fw: Any) -> None:
    device, url = fw
    device.fault = "bad-time"
    (lst,) = banned(url).lists
    valid = {entry.ip for entry in device.vdoms["root"]}
    assert {str(o.ip) for o in lst.offenses} == valid and len(valid) == 5
    assert [r.index for r in lst.rejected] == list(range(5, 11))
    created, expires = lst.rejected[:4], lst.rejected[4:]
    for rejected, needle in zip(
        created,
        ["3000-01-01T00:00:00Z", "-1 is before 2000", "whole seconds", "1999-12-31T23:59:59Z"],
        strict=True,
    ):
        assert rejected.reason.startswith("created ") and needle in rejected.reason
    assert "more than a day ahead" in created[0].reason
    assert [r.reason.split()[0] for r in expires] == ["expires", "expires"]
    assert "ten years ahead" in expires[0].reason and "before 2000" in expires[1].reason


# -- end to end: one bad device among good ones ------------------------------------------------


def collect_with(
    fault: str, fleet: simulator.SimFleet, run_sim: Any, clock: Clock, tmp_path: Path
) -> tuple[Any, simulator.SimDevice, dict[str, str]]:
    # `banfeed collect` runs on the machine's clock: the simulated devices must stamp their
    # entries with it too, or every `created` would be judged by another clock.
    clock.now = time.time()
    good = fleet.add_device("fw-ok", token="tok-ok", entries=4)
    bad = fleet.add_device("fw-bad", token="tok-bad", entries=3, fault=fault)
    bad.drip_interval = INTERVAL
    urls = run_sim()
    # 1 s instead of the helper's 2 s keeps the test short.
    body = fortigate_toml("fw-ok", urls["fw-ok"], "TOK_OK") + fortigate_toml(
        "fw-bad", urls["fw-bad"], "TOK_BAD"
    ).replace('timeout = "2s"', 'timeout = "1s"')
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{tmp_path / 'banfeed.db'}", body)
    env = {"TOK_OK": "tok-ok", "TOK_BAD": "tok-bad", "BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    return cli("collect", env=env), good, env


@pytest.mark.parametrize(("fault", "kind"), [("drip", "timeout"), ("nested", "bad_response")])
def test_collect_stores_the_healthy_device_and_names_the_failing_one(
    fault: str,
    kind: str,
    fleet: simulator.SimFleet,
    run_sim: Any,
    clock: Clock,
    tmp_path: Path,
) -> None:
    result, good, env = collect_with(fault, fleet, run_sim, clock, tmp_path)
    assert result.exit_code == 1, result.output
    failing = [line for line in result.output.splitlines() if "fw-bad" in line]
    assert failing and kind in failing[0], result.output
    listed = cli("list", "--format", "json", env=env)
    assert listed.exit_code == 0, listed.output
    records = json.loads(listed.output)
    assert {r["ip"] for r in records} == {entry.ip for entry in good.vdoms["root"]}
    assert all(r["devices"] == ["fw-ok"] for r in records)
