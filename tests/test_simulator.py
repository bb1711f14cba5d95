"""The FortiGate simulator must look like real FortiOS, or tests against it prove nothing."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import trustme

from banfeed.simulator import FAULTS, RunningSimulator, SimDevice, SimFleet, start

TOKEN = "s3cret-api-token"
BANNED = "/api/v2/monitor/user/banned"
T0 = 1_700_000_000

# Verbatim copy of fixtures/user_banned_select_v7.2.5.json from the FortiOS notes
# (demisto/content test data, /select on v7.2.5), kept inline so this file stands alone.
FIXTURE: dict[str, Any] = json.loads(
    """{
    "http_method": "GET",
    "results": [
        {"expires": 1969642305, "created": 1693195074, "ip_address": "0.0.0.0",
         "source": "Administrative", "ipv6": 0},
        {"created": 1700507213, "ip_address": "0.0.0.0", "source": "Administrative", "ipv6": 0},
        {"created": 1700507213, "ip_address": "0000:0000:0000:0000:0000:0000:0000:0000",
         "source": "Administrative", "ipv6": 1}
    ],
    "vdom": "root", "path": "user", "name": "banned", "action": "select",
    "status": "success", "serial": "12345", "version": "v7.2.5", "build": 1517
}"""
)
# Top-level keys of fixtures/user_banned_empty_v6.4.4.json (plain path, no "action").
EMPTY_FIXTURE_KEYS = {
    "build", "http_method", "name", "path", "results", "serial", "status", "vdom", "version",
}  # fmt: skip
NON_PUBLIC_V4 = [
    ipaddress.IPv4Network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "100.64.0.0/10", "240.0.0.0/4")
]


class FakeClock:
    def __init__(self) -> None:
        self.now = float(T0)

    def __call__(self) -> float:
        return self.now


@dataclass
class Env:
    fleet: SimFleet
    sim: RunningSimulator
    clock: FakeClock
    fw1: SimDevice
    fw2: SimDevice


def client(url: str, token: str | None = TOKEN, **kwargs: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    kwargs.setdefault("timeout", 5)
    return httpx.Client(base_url=url, headers=headers, **kwargs)


def get(url: str, path: str = BANNED, **params: str) -> httpx.Response:
    with client(url) as c:
        return c.get(path, params=params)


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SimFleet, RunningSimulator, FakeClock]]:
    clock = FakeClock()
    fleet = SimFleet(seed=1, clock=clock)
    fleet.add_device("fw1", token=TOKEN, vdoms=("root", "dmz", "guest"))
    fleet.add_device("fw2", token="fw2-token")
    with start(fleet) as sim:
        yield fleet, sim, clock


@pytest.fixture
def env(shared: tuple[SimFleet, RunningSimulator, FakeClock]) -> Env:
    fleet, sim, clock = shared
    clock.now = float(T0)
    for device in fleet.devices.values():
        device.fault, device.latency, device.churn = "none", 0.0, 0
        device.timeout_delay, device.huge_bytes = 30.0, 2_000_000
        for vdom in device.vdoms:
            device.vdoms[vdom] = []
    return Env(fleet, sim, clock, fleet.devices["fw1"], fleet.devices["fw2"])


def test_response_matches_fixture_shape(env: Env) -> None:
    env.fw1.add("root", "198.18.0.1", expires=T0 + 60, source="Administrative")
    env.fw1.add("root", "198.18.0.2", expires=None)
    env.fw1.add("root", "2a00:1450::1", expires=None)
    url = env.sim.urls["fw1"]
    assert url.startswith("http://127.0.0.1:")

    select = get(url, BANNED + "/select", vdom="root")
    assert select.status_code == 200
    assert select.headers["content-type"] == "application/json"
    body = select.json()
    assert list(body) == list(FIXTURE)  # same keys, same order
    assert body["action"] == "select" and body["vdom"] == "root"
    assert body["version"] == "v7.2.5" and body["build"] == 1517
    assert body["serial"].startswith("FGVM") and body["serial"] == get(url).json()["serial"]
    for got, want in zip(body["results"], FIXTURE["results"], strict=True):
        assert list(got) == list(want)
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in want.items()}
    assert body["results"][0] == {
        "expires": T0 + 60, "created": T0, "ip_address": "198.18.0.1",
        "source": "Administrative", "ipv6": 0,
    }  # fmt: skip
    assert "expires" not in body["results"][1]
    v6 = body["results"][2]
    assert v6["ip_address"] == "2a00:1450:0000:0000:0000:0000:0000:0001"
    assert v6["ipv6"] == 1 and type(v6["ipv6"]) is int

    plain = get(url).json()  # no vdom -> root, no "action"
    assert set(plain) == EMPTY_FIXTURE_KEYS and plain["vdom"] == "root"
    assert plain["results"] == body["results"]


def test_invalid_ip_text_is_served_raw(env: Env) -> None:
    for ip in ("999.1.1.1", "01.02.03.04", "1.2.3.4\n", "", "x" * 500, "zz::zz"):
        env.fw1.add("dmz", ip)
    served = [e["ip_address"] for e in get(env.sim.urls["fw1"], vdom="dmz").json()["results"]]
    assert served == ["999.1.1.1", "01.02.03.04", "1.2.3.4\n", "", "x" * 500, "zz::zz"]


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Authorization": "Bearer wrong"}, {}),
        ({}, {}),
        ({}, {"access_token": TOKEN}),
        ({"Authorization": f"Bearer {TOKEN}"}, {"access_token": TOKEN}),  # never accept it
        ({"Authorization": f"Basic {TOKEN}"}, {}),
    ],
)
def test_bad_auth_is_401_html(env: Env, headers: dict[str, str], params: dict[str, str]) -> None:
    before = env.fw1.requests
    with httpx.Client(base_url=env.sim.urls["fw1"], headers=headers) as c:
        r = c.get(BANNED, params=params)
    assert r.status_code == 401
    assert r.headers["content-type"].startswith("text/html")
    assert env.fw1.requests == before + 1


def test_devices_are_routed_by_port(env: Env) -> None:
    env.fw2.add("root", "198.18.2.2")
    with client(env.sim.urls["fw2"], token="fw2-token") as c:
        results = c.get(BANNED).json()["results"]
    assert [e["ip_address"] for e in results] == ["198.18.2.2"]
    assert get(env.sim.urls["fw2"]).status_code == 401  # fw1's token
    assert get(env.sim.urls["fw1"]).json()["results"] == []


def test_vdom_selection(env: Env) -> None:
    url = env.sim.urls["fw1"]
    env.fw1.add("dmz", "198.18.0.9")
    every = get(url, vdom="*").json()
    assert isinstance(every, list)
    assert [o["vdom"] for o in every] == ["dmz", "guest", "root"]
    assert all(set(o) == EMPTY_FIXTURE_KEYS for o in every)
    assert every[0]["results"][0]["ip_address"] == "198.18.0.9"
    pair = get(url, vdom="root,dmz").json()
    assert [o["vdom"] for o in pair] == ["root", "dmz"]
    selected = get(url, BANNED + "/select", vdom="*").json()
    assert all(o["action"] == "select" for o in selected)
    for bad in ("nope", "root,nope"):
        r = get(url, vdom=bad)
        assert r.status_code == 404
        assert r.json()["status"] == "error" and r.json()["http_status"] == 404


def test_add_remove_defaults(env: Env) -> None:
    entry = env.fw1.add("new", "198.18.0.5")
    assert (entry.created, entry.expires, entry.source) == (T0, T0 + 300, "IPS")
    assert "new" in env.fw1.vdoms
    env.fw1.add("new", "198.18.0.6", created=5, expires=None, source="DoS")
    env.fw1.remove("new", "198.18.0.5")
    env.fw1.remove("new", "198.18.0.77")  # absent: ignored
    results = get(env.sim.urls["fw1"], vdom="new").json()["results"]
    assert results == [{"created": 5, "ip_address": "198.18.0.6", "source": "DoS", "ipv6": 0}]
    del env.fw1.vdoms["new"]


def test_expired_entries_disappear(env: Env) -> None:
    env.fw1.add("root", "198.18.0.1", expires=T0 + 10)
    env.fw1.add("root", "198.18.0.2", expires=None)
    url = env.sim.urls["fw1"]
    assert len(get(url).json()["results"]) == 2
    env.clock.now = T0 + 10  # expires <= now: gone
    assert [e["ip_address"] for e in get(url).json()["results"]] == ["198.18.0.2"]
    assert [e.ip for e in env.fw1.vdoms["root"]] == ["198.18.0.2"]


def _churn_fleet(seed: int) -> SimFleet:
    fleet = SimFleet(seed=seed, clock=lambda: float(T0))
    fleet.add_device("fw", token=TOKEN, entries=5, churn=2, ipv6_ratio=0.5)
    return fleet


def _churn_over_tcp(seed: int) -> list[list[str]]:
    with start(_churn_fleet(seed)) as sim, client(sim.urls["fw"]) as c:
        return [[e["ip_address"] for e in c.get(BANNED).json()["results"]] for _ in range(3)]


def _churn_in_process(seed: int) -> list[list[str]]:
    async def run() -> list[list[str]]:
        transport = httpx.ASGITransport(app=_churn_fleet(seed).app())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, headers=headers) as c:
            polls = [await c.get(f"http://fw{BANNED}") for _ in range(3)]
        return [[e["ip_address"] for e in r.json()["results"]] for r in polls]

    return asyncio.run(run())


def test_churn_is_deterministic() -> None:
    first = _churn_over_tcp(7)
    assert first == _churn_in_process(7)
    assert first != _churn_in_process(8)
    for before, after in zip(first, first[1:], strict=False):
        assert len(after) == 5 and len(set(after)) == 5
        assert after[:3] == before[2:]  # the two oldest left, two fresh ones arrived
        assert not set(after[3:]) & set(before)


def test_latency_delays_every_answer(env: Env) -> None:
    env.fw1.latency = 0.2
    for token in (TOKEN, "wrong"):
        with client(env.sim.urls["fw1"], token=token) as c:
            began = time.perf_counter()
            c.get(BANNED)
            assert time.perf_counter() - began >= 0.2


def _fault(env: Env, fault: str, vdom: str = "root") -> httpx.Response:
    env.fw1.fault = fault
    return get(env.sim.urls["fw1"], vdom=vdom)


def test_fault_names_are_validated() -> None:
    assert FAULTS[0] == "none" and len(set(FAULTS)) == 14
    with pytest.raises(ValueError):
        SimFleet().add_device("x", token="t", fault="bogus")


def test_fault_500_and_html(env: Env) -> None:
    r = _fault(env, "500")
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    r = _fault(env, "html")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert r.text == "<html><body>Please login</body></html>"


@pytest.mark.parametrize("status", [403, 404, 424, 429])
def test_fault_json_errors(env: Env, status: int) -> None:
    r = _fault(env, str(status))
    assert r.status_code == status
    assert r.json() == {"status": "error", "http_status": status, "error": -status}
    assert r.headers.get("retry-after") == ("60" if status == 429 else None)


def test_fault_401_ignores_a_good_token(env: Env) -> None:
    assert _fault(env, "401").status_code == 401


def test_fault_truncated(env: Env) -> None:
    env.fw1.populate("root", 20)
    whole = _fault(env, "none").content
    r = _fault(env, "truncated")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == whole[: len(whole) // 2]
    with pytest.raises(json.JSONDecodeError):
        r.json()


def test_fault_invalid(env: Env) -> None:
    env.fw1.add("root", "198.18.0.1")
    results = _fault(env, "invalid").json()["results"]
    assert results[0]["ip_address"] == "198.18.0.1"
    ips = [e.get("ip_address") for e in results[1:]]
    assert ips[:5] == ["999.1.1.1", "01.02.03.04", "1.2.3.4\n5.6.7.8", "", "a" * 300]
    assert None in ips  # one entry lacks ip_address
    assert any(e["created"] == "yesterday" for e in results)


def test_fault_shape(env: Env) -> None:
    assert _fault(env, "shape").json() == {"status": "success", "results": {"not": "a list"}}


def test_fault_huge(env: Env) -> None:
    env.fw1.add("root", "198.18.0.1")
    env.fw1.huge_bytes = 300_000
    r = _fault(env, "huge")
    assert r.status_code == 200 and len(r.content) == 300_000
    assert r.json()["results"][0]["ip_address"] == "198.18.0.1"  # valid-looking JSON


def test_fault_reset(env: Env) -> None:
    with pytest.raises(httpx.ReadError, match="reset"):
        _fault(env, "reset")
    env.fw1.fault = "none"
    assert get(env.sim.urls["fw1"]).status_code == 200  # server survives


def test_timeout_fault_and_fast_stop() -> None:
    fleet = SimFleet()
    device = fleet.add_device("fw", token=TOKEN, fault="timeout")
    device.timeout_delay = 5
    sim = start(fleet)
    try:
        with client(sim.urls["fw"], timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
            c.get(BANNED)
        # A request still hanging when stop() is called must not hold it up either.
        outcome: list[object] = []

        def hang() -> None:
            with client(sim.urls["fw"], timeout=10) as c:
                try:
                    outcome.append(c.get(BANNED).status_code)
                except httpx.HTTPError as exc:
                    outcome.append(exc)

        waiter = threading.Thread(target=hang)
        waiter.start()
        deadline = time.monotonic() + 2
        while device.requests < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        began = time.perf_counter()
        sim.stop()
        stopped_in = time.perf_counter() - began
    waiter.join(5)
    assert stopped_in < 2.0
    assert outcome and outcome[0] != 200


def test_https_with_trustme(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    certfile, keyfile = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.cert_chain_pems[0].write_to_path(str(certfile))
    cert.private_key_pem.write_to_path(str(keyfile))
    fleet = SimFleet()
    device = fleet.add_device("fw", token=TOKEN, entries=3)
    with start(fleet, ssl_certfile=str(certfile), ssl_keyfile=str(keyfile)) as sim:
        url = sim.urls["fw"]
        assert url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        with client(url, verify=trusted) as c:
            assert len(c.get(BANNED).json()["results"]) == 3
            device.fault = "reset"
            # The server sends a real RST, but Python's ssl reports it as an unclean EOF.
            with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
                c.get(BANNED)
        with client(url) as c, pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY"):
            c.get(BANNED)


def test_start_ports_and_host_checks() -> None:
    fleet = SimFleet()
    fleet.add_device("fw", token=TOKEN)
    port = _two_free_ports()
    with start(fleet, ports={"fw": port}) as sim:
        assert sim.urls == {"fw": f"http://127.0.0.1:{port}"}
        assert get(sim.urls["fw"]).status_code == 200
    with pytest.raises(ValueError):
        start(fleet, ports={"nope": port})
    with pytest.raises(ValueError):
        start(fleet, host="localhost")  # IP literals only: nothing is ever resolved


def _is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip)
    if not addr.is_global or addr.is_multicast or addr.is_reserved:
        return False
    if isinstance(addr, ipaddress.IPv4Address):
        return not any(addr in net for net in NON_PUBLIC_V4)
    return addr in ipaddress.IPv6Network("2a00::/12")


def test_populate_is_unique_public_and_fast() -> None:
    device = SimFleet(seed=3).add_device("fw", token=TOKEN, vdoms=("a", "b"))
    began = time.perf_counter()
    entries = device.populate("a", 100_000, ipv6_ratio=0.2)
    assert time.perf_counter() - began < 1.5
    entries += device.populate("b", 1_000, source="AV", ttl=None)
    ips = [e.ip for e in entries]
    assert len(ips) == len(set(ips)) == 101_000
    assert all(map(_is_public, ips[::4]))  # a quarter: is_global is slow
    v6 = sum(":" in ip for ip in ips[:100_000])
    assert 18_000 < v6 < 22_000
    assert all(e.source == "AV" and e.expires is None for e in entries[100_000:])


def test_large_vdom_serves_quickly(env: Env) -> None:
    env.fw1.populate("guest", 100_000)
    began = time.perf_counter()
    r = get(env.sim.urls["fw1"], vdom="guest")
    assert time.perf_counter() - began < 2.0
    assert len(r.json()["results"]) == 100_000


def test_app_works_in_process() -> None:
    fleet = SimFleet()
    fleet.add_device("fw1", token=TOKEN, entries=2)
    fleet.add_device("fw2", token=TOKEN, fault="reset")

    async def run() -> tuple[int, int]:
        transport = httpx.ASGITransport(app=fleet.app())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, headers=headers) as c:
            ok = await c.get(f"http://fw1{BANNED}")
            reset = await c.get(f"http://fw2{BANNED}")
        assert len(ok.json()["results"]) == 2
        return ok.status_code, reset.status_code

    assert asyncio.run(run()) == (200, 502)  # no socket to reset in-process


SERVE_SCRIPT = """
import sys
from banfeed.simulator import SimFleet, serve_forever
fleet = SimFleet()
fleet.add_device("a", token="t", entries=1)
fleet.add_device("b", token="t", entries=2)
serve_forever(fleet, host="127.0.0.1", first_port=int(sys.argv[1]))
print("returned", flush=True)
"""


def _two_free_ports() -> int:
    for _ in range(20):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        with socket.socket() as a, socket.socket() as b:
            try:
                a.bind(("127.0.0.1", port))
                b.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
            return port
    raise RuntimeError("no two consecutive free ports")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_returns_on_signal(sig: signal.Signals) -> None:
    port = _two_free_ports()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE_SCRIPT, str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        counts: list[int] = []
        deadline = time.monotonic() + 10
        while len(counts) < 2 and time.monotonic() < deadline:
            try:
                counts = [
                    len(
                        httpx.get(
                            f"http://127.0.0.1:{p}{BANNED}", headers={"Authorization": "Bearer t"}
                        ).json()["results"]
                    )
                    for p in (port, port + 1)
                ]
            except httpx.ConnectError:
                time.sleep(0.05)
        assert counts == [1, 2]
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert out == "returned\n"
