"""The FortiGate simulator must look like real FortiOS, or tests against it prove nothing."""

from __future__ import annotations

import asyncio
import contextlib
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
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
        device.drip_interval = 1.0
        device.feed_limit = 131_072
        device.calls.clear()
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
    assert FAULTS[0] == "none" and len(set(FAULTS)) == 23
    assert {"drip", "drip-headers", "slow-chunked", "nested", "bad-time"} <= set(FAULTS)
    assert {"503", "echo", "echo-redirect", "gzip-bomb"} <= set(FAULTS)
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


def test_fault_drip_sends_the_answer_one_byte_at_a_time(env: Env) -> None:
    env.fw1.populate("root", 3)
    whole = _fault(env, "none")
    env.fw1.fault, env.fw1.drip_interval = "drip", 0.05
    with client(env.sim.urls["fw1"]) as c, c.stream("GET", BANNED) as r:
        assert r.status_code == 200  # the headers come at once, whole
        assert r.headers["content-length"] == str(len(whole.content))
        raw = r.iter_raw()
        first = [next(raw) for _ in range(3)]
    assert first == [whole.content[i : i + 1] for i in range(3)]
    env.fw1.drip_interval = 0.0
    dripped = get(env.sim.urls["fw1"])
    assert (
        dripped.content == whole.content and dripped.headers["content-type"] == "application/json"
    )


def test_fault_drip_headers_trickles_the_status_line(env: Env) -> None:
    env.fw1.populate("root", 2)
    whole = _fault(env, "none")
    env.fw1.fault, env.fw1.drip_interval = "drip-headers", 0.05
    port = int(env.sim.urls["fw1"].rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            f"GET {BANNED} HTTP/1.1\r\nHost: fw\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        received = [sock.recv(100) for _ in range(4)]
    assert received == [b"H", b"T", b"T", b"P"]
    env.fw1.drip_interval = 0.002
    slowly = get(env.sim.urls["fw1"])  # the whole answer, once the headers are through
    assert slowly.status_code == 200 and slowly.content == whole.content
    assert slowly.headers["connection"] == "close"
    env.fw1.fault = "none"
    assert get(env.sim.urls["fw1"]).content == whole.content  # the server is fine afterwards


def test_fault_slow_chunked_never_ends(env: Env) -> None:
    env.fw1.fault, env.fw1.drip_interval = "slow-chunked", 0.05
    with client(env.sim.urls["fw1"]) as c, c.stream("GET", BANNED) as r:
        assert r.status_code == 200 and r.headers["transfer-encoding"] == "chunked"
        chunks = r.iter_raw()
        assert next(chunks) == b'{"http_method":"GET","results":['
        entries = [json.loads(next(chunks).removesuffix(b",")) for _ in range(3)]
    assert all(e["ip_address"] == "198.51.100.250" and e["created"] == T0 for e in entries)
    env.fw1.fault = "none"
    assert get(env.sim.urls["fw1"]).status_code == 200


def test_fault_nested(env: Env) -> None:
    env.fw1.populate("root", 2)
    r = _fault(env, "nested")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.content == b"[" * 100_000 + b"]" * 100_000
    with pytest.raises(RecursionError):
        json.loads(r.content)


def test_fault_bad_time(env: Env) -> None:
    env.fw1.add("root", "198.18.0.1")
    results = _fault(env, "bad-time").json()["results"]
    assert results[0] == {
        "expires": T0 + 300, "created": T0, "ip_address": "198.18.0.1", "source": "IPS", "ipv6": 0
    }  # fmt: skip
    extras = results[1:]
    assert [e["created"] for e in extras[:4]] == [32_503_680_000, -1, float(T0), 946_684_799]
    assert isinstance(extras[2]["created"], float)
    assert [e["expires"] for e in extras[4:]] == [32_503_680_000, 946_684_799]
    addresses = [ipaddress.ip_address(e["ip_address"]) for e in extras]
    assert len(set(addresses)) == 6
    assert all(a in ipaddress.ip_network("198.51.100.0/24") for a in addresses)  # TEST-NET-2


@pytest.mark.parametrize("fault", ["drip", "drip-headers", "slow-chunked"])
def test_slow_faults_do_not_hold_up_stop(fault: str) -> None:
    fleet = SimFleet()
    fleet.add_device("fw", token=TOKEN, entries=3, fault=fault)
    sim = start(fleet)
    outcome: list[object] = []

    def hang() -> None:
        with client(sim.urls["fw"], timeout=30) as c:
            try:
                outcome.append(c.get(BANNED).status_code)
            except httpx.HTTPError as exc:
                outcome.append(exc)

    waiter = threading.Thread(target=hang)
    waiter.start()
    deadline = time.monotonic() + 5
    while fleet.devices["fw"].requests < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    sim.stop()
    waiter.join(15)
    assert not sim._thread.is_alive() and not waiter.is_alive()
    assert outcome and outcome[0] != 200


def test_slow_faults_in_process_drip_the_body() -> None:
    fleet = SimFleet()
    fleet.add_device("fw", token=TOKEN, entries=2, fault="drip-headers").drip_interval = 0.0

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(app=fleet.app())
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(transport=transport, headers=headers) as c:
            return await c.get(f"http://fw{BANNED}")

    r = asyncio.run(run())  # no socket to drip headers on
    assert r.status_code == 200 and len(r.json()["results"]) == 2


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


# -- administrative bans: add_users, clear_users, clear_all, check ----------------------------

ADD, CLEAR = BANNED + "/add_users", BANNED + "/clear_users"
CLEAR_ALL, CHECK = BANNED + "/clear_all", BANNED + "/check"
ENTRY_LIST = "/api/v2/monitor/system/external-resource/entry-list"
REFRESH = "/api/v2/monitor/system/external-resource/refresh"
DYNAMIC = "/api/v2/monitor/system/external-resource/dynamic"
BAD_REQUEST = {"status": "error", "http_status": 400, "error": -1}
NOT_FOUND = {"status": "error", "http_status": 404, "error": -3}
V6 = "2a00:1450::1"
V6_EXPLODED = "2a00:1450:0000:0000:0000:0000:0000:0001"


def post(
    url: str, path: str, body: object = None, token: str | None = TOKEN, **params: str
) -> httpx.Response:
    with client(url, token) as c:
        if body is None:
            return c.post(path, params=params)
        return c.post(path, json=body, params=params)


def banned_ips(env: Env, vdom: str = "root") -> dict[str, dict[str, Any]]:
    results = get(env.sim.urls["fw1"], vdom=vdom).json()["results"]
    return {e["ip_address"]: e for e in results}


def test_add_users_then_the_list_shows_them(env: Env) -> None:
    url = env.sim.urls["fw1"]
    body = {"ip_addresses": ["198.51.100.7", V6], "expiry": 600}
    r = post(url, ADD, body, vdom="dmz")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "http_method": "POST", "status": "success", "http_status": 200, "vdom": "dmz",
        "path": "user", "name": "banned", "action": "add_users", "serial": env.fw1.serial,
        "version": "v7.2.5", "build": 1517,
    }  # fmt: skip
    assert env.fw1.calls == [("POST", ADD, body)]
    listed = banned_ips(env, "dmz")
    assert listed["198.51.100.7"] == {
        "expires": T0 + 600, "created": T0, "ip_address": "198.51.100.7",
        "source": "Administrative", "ipv6": 0,
    }  # fmt: skip
    assert listed[V6_EXPLODED]["ipv6"] == 1 and listed[V6_EXPLODED]["expires"] == T0 + 600
    assert banned_ips(env) == {}  # root untouched

    # Banning again (in any spelling) replaces the expiry; 0 means no expiry at all.
    env.clock.now = T0 + 5
    assert post(url, ADD, {"ip_addresses": [V6_EXPLODED], "expiry": 0}, vdom="dmz").is_success
    assert post(url, ADD, {"ip_addresses": ["198.51.100.7"], "expiry": 60}, vdom="dmz").is_success
    listed = banned_ips(env, "dmz")
    assert len(listed) == 2
    assert "expires" not in listed[V6_EXPLODED] and listed[V6_EXPLODED]["created"] == T0
    assert listed["198.51.100.7"]["expires"] == T0 + 65
    env.clock.now = T0 + 65
    assert list(banned_ips(env, "dmz")) == [V6_EXPLODED]


@pytest.mark.parametrize(
    "body",
    [
        None,
        {},
        [],
        {"ip_addresses": ["198.51.100.1"]},  # no expiry
        {"expiry": 60},
        {"ip_addresses": "198.51.100.1", "expiry": 60},
        {"ip_addresses": [1], "expiry": 60},
        {"ip_addresses": ["198.51.100.1", "999.1.1.1"], "expiry": 60},  # nothing is added
        {"ip_addresses": ["198.51.100.0/24"], "expiry": 60},
        {"ip_addresses": ["fe80::1%eth0"], "expiry": 60},
        {"ip_addresses": ["198.51.100.1"], "expiry": "60"},
        {"ip_addresses": ["198.51.100.1"], "expiry": True},
        {"ip_addresses": ["198.51.100.1"], "expiry": -1},
        {"ip_addresses": ["198.51.100.1"], "expiry": 1.5},
    ],
)
def test_add_users_bad_body_is_400(env: Env, body: object) -> None:
    r = post(env.sim.urls["fw1"], ADD, body)
    assert r.status_code == 400 and r.json() == BAD_REQUEST
    assert env.fw1.vdoms["root"] == []


def test_not_json_is_400_and_recorded_as_text(env: Env) -> None:
    with client(env.sim.urls["fw1"]) as c:
        r = c.post(ADD, content=b"ip=1.2.3.4")
    assert r.status_code == 400 and r.json() == BAD_REQUEST
    assert env.fw1.calls == [("POST", ADD, "ip=1.2.3.4")]


def test_clear_users_matches_any_ipv6_spelling(env: Env) -> None:
    url = env.sim.urls["fw1"]
    env.fw1.add("root", V6)
    env.fw1.add("root", "198.51.100.1")
    env.fw1.add("root", "198.51.100.2")
    body = {"ip_addresses": [V6_EXPLODED, "198.51.100.1", "203.0.113.99"]}  # last: absent
    r = post(url, CLEAR, body)
    assert r.status_code == 200 and r.json()["action"] == "clear_users"
    assert list(banned_ips(env)) == ["198.51.100.2"]
    for bad in ({}, {"ip_addresses": ["nope"]}, {"ip_addresses": None}):
        r = post(url, CLEAR, bad)
        assert r.status_code == 400 and r.json() == BAD_REQUEST
    assert list(banned_ips(env)) == ["198.51.100.2"]


def test_clear_all_empties_one_vdom(env: Env) -> None:
    env.fw1.populate("root", 5)
    env.fw1.populate("dmz", 3)
    r = post(env.sim.urls["fw1"], CLEAR_ALL, vdom="root")
    assert r.status_code == 200 and r.json()["action"] == "clear_all"
    assert r.json()["vdom"] == "root"
    assert banned_ips(env) == {} and len(banned_ips(env, "dmz")) == 3
    assert env.fw1.calls[0] == ("POST", CLEAR_ALL, {"vdom": "root"})  # no body: the query


def test_check(env: Env) -> None:
    url = env.sim.urls["fw1"]
    env.fw1.add("root", V6, expires=T0 + 10)
    r = get(url, CHECK, ip_address=V6_EXPLODED)
    assert r.status_code == 200
    body = r.json()
    assert body["results"] == {"ip_address": V6_EXPLODED, "is_banned": True}
    assert body["status"] == "success" and body["action"] == "check" and body["vdom"] == "root"
    assert set(body) == EMPTY_FIXTURE_KEYS | {"action"}
    assert get(url, CHECK, ip_address="198.51.100.1").json()["results"]["is_banned"] is False
    assert get(url, CHECK, ip_address=V6, vdom="dmz").json()["results"]["is_banned"] is False
    env.clock.now = T0 + 10  # expired: no longer banned
    assert get(url, CHECK, ip_address=V6).json()["results"]["is_banned"] is False
    for params in ({}, {"ip_address": "999.1.1.1"}, {"ip_address": "198.51.100.0/24"}):
        r = get(url, CHECK, **params)
        assert r.status_code == 400 and r.json() == BAD_REQUEST
    assert env.fw1.calls[0] == ("GET", CHECK, {"ip_address": V6_EXPLODED})


WRITES = [
    ("POST", ADD, {"ip_addresses": ["198.51.100.1"], "expiry": 60}),
    ("POST", CLEAR, {"ip_addresses": ["198.51.100.1"]}),
    ("POST", CLEAR_ALL, None),
    ("GET", CHECK, {"ip_address": "198.51.100.1"}),
]


def call(
    url: str, method: str, path: str, body: Any, token: str | None = TOKEN, **params: str
) -> httpx.Response:
    if method == "GET":  # the "body" of a GET is its query
        with client(url, token) as c:
            return c.get(path, params={**(body or {}), **params})
    return post(url, path, body, token, **params)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_ban_endpoints_need_the_token_and_a_known_vdom(
    env: Env, method: str, path: str, body: Any
) -> None:
    url, before = env.sim.urls["fw1"], env.fw1.requests
    for token in (None, "wrong"):
        r = call(url, method, path, body, token)
        assert r.status_code == 401 and r.headers["content-type"].startswith("text/html")
    # The query token is refused, as on FortiOS 7.4.5+.
    assert call(url, method, path, body, None, access_token=TOKEN).status_code == 401
    r = call(url, method, path, body, vdom="nope")
    assert r.status_code == 404 and r.json() == {**NOT_FOUND, "vdom": "nope"}
    assert env.fw1.requests == before + 4
    assert [c[:2] for c in env.fw1.calls] == [(method, path)] * 4
    assert env.fw1.vdoms["root"] == []


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_ban_endpoints_obey_faults(env: Env, method: str, path: str, body: Any) -> None:
    url, before = env.sim.urls["fw1"], env.fw1.requests
    env.fw1.fault = "500"
    r = call(url, method, path, body)
    assert r.status_code == 500 and r.headers["content-type"].startswith("text/html")
    env.fw1.fault = "429"
    r = call(url, method, path, body)
    assert r.status_code == 429 and r.headers["retry-after"] == "60"
    assert r.json() == {"status": "error", "http_status": 429, "error": -429}
    env.fw1.fault = "html"
    assert call(url, method, path, body).text == "<html><body>Please login</body></html>"
    env.fw1.fault = "401"
    assert call(url, method, path, body).status_code == 401
    env.fw1.fault = "reset"
    with pytest.raises(httpx.ReadError):
        call(url, method, path, body)
    env.fw1.fault = "nested"
    assert call(url, method, path, body).content.startswith(b"[[[[")
    assert env.fw1.vdoms["root"] == []  # no fault let a write through
    for fault in ("shape", "truncated", "invalid", "huge", "bad-time"):  # list-only: ignored
        env.fw1.fault = fault
        r = call(url, method, path, body)
        assert r.status_code == 200 and r.json()["status"] == "success"
    assert env.fw1.requests - before == len(env.fw1.calls) == 11


def test_ban_endpoints_obey_latency_and_timeout(env: Env) -> None:
    url = env.sim.urls["fw1"]
    body = {"ip_addresses": ["198.51.100.1"], "expiry": 60}
    env.fw1.latency = 0.2
    began = time.perf_counter()
    assert post(url, ADD, body).status_code == 200
    assert time.perf_counter() - began >= 0.2
    env.fw1.latency, env.fw1.fault, env.fw1.timeout_delay = 0.0, "timeout", 5
    with client(url, timeout=0.3) as c, pytest.raises(httpx.ReadTimeout):
        c.post(CLEAR, json={"ip_addresses": ["198.51.100.1"]})
    assert [e.ip for e in env.fw1.vdoms["root"]] == ["198.51.100.1"]  # not cleared


# -- threat feeds: pull (a real local web server) and push ------------------------------------

FEED_BODY = (
    b"198.51.100.1\n"
    b"198.51.100.0/24\n"
    b"172.200.1.4/16\n"  # host bits set: valid on a FortiGate (v7.4.2 fixture)
    b"203.0.113.1-203.0.113.9\n"
    b"2001:0db8::1\r\n"  # CRLF and a non-canonical IPv6 spelling
    b"2001:db8:1::/48\n"
    b"2001:db8::aa01-2001:db8::ab01\n"
    b"\n"
    b"   \n"
    b"not-an-ip\n"
    b"999.1.1.1\n"
    b"203.0.113.9-203.0.113.1\n"  # reversed range
    b"198.51.100.1\n"  # duplicate: collapses
)
FEED_ENTRIES = {
    "198.51.100.1", "198.51.100.0/24", "172.200.0.0/16", "203.0.113.1-203.0.113.9",
    "2001:db8::1", "2001:db8:1::/48", "2001:db8::aa01-2001:db8::ab01",
}  # fmt: skip
ETAG = '"feed-v1"'
# Keys of fixtures/external_resource_entry_list_v7.4.2.json, top level and "results".
ENTRY_LIST_KEYS = {
    "action", "build", "http_method", "name", "path", "results", "serial", "status", "vdom",
    "version",
}  # fmt: skip
ENTRY_LIST_RESULT_KEYS = {
    "conn_attempt_time", "entries", "http_status_code", "invalid_count",
    "last_content_update_time", "overflow", "resource_file_status", "status", "valid_count",
}  # fmt: skip


@dataclass
class FeedServer:
    url: str
    # path -> (status, body, ETag); If-None-Match equal to the ETag gets a 304.
    pages: dict[str, tuple[int, bytes, str | None]] = field(default_factory=dict)
    seen: list[tuple[str, dict[str, str]]] = field(default_factory=list)  # path, headers


@contextlib.contextmanager
def serve_feeds(tls: ssl.SSLContext | None = None) -> Iterator[FeedServer]:
    """A plain web server on 127.0.0.1 that the simulated FortiGate can fetch feeds from."""
    state = FeedServer("")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
            status, body, etag = state.pages.get(self.path, (404, b"", None))
            if etag is not None and self.headers.get("If-None-Match") == etag:
                status, body = 304, b""
            self.send_response(status)
            if etag is not None:
                self.send_header("ETag", etag)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    scheme = "https" if tls is not None else "http"
    state.url = f"{scheme}://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    with serve_feeds() as server:
        yield server


def entry_list(env: Env, mkey: str, **params: str) -> dict[str, Any]:
    r = get(env.sim.urls["fw1"], ENTRY_LIST, mkey=mkey, **params)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def test_pull_feed_counts_etag_304_and_basic_auth(env: Env, feed_server: FeedServer) -> None:
    feed_server.pages["/q.txt"] = (200, FEED_BODY, ETAG)
    env.fw1.add_feed("q", url=feed_server.url + "/q.txt", username="fortigate", password="pw")
    assert env.fw1.feed_status("q")["http_status_code"] == 0  # never fetched yet
    assert env.fw1.refresh_feed("q") == 200
    assert env.fw1.feed_entries("q") == FEED_ENTRIES
    status = env.fw1.feed_status("q")
    assert (status["valid_count"], status["invalid_count"], status["overflow"]) == (7, 3, 0)
    assert status["etag"] == ETAG and status["last_content_update_time"] == T0
    path, headers = feed_server.seen[0]
    assert path == "/q.txt" and headers["user-agent"] == "curl/7.58.0"
    assert headers["authorization"] == "Basic Zm9ydGlnYXRlOnB3"  # fortigate:pw
    assert "if-none-match" not in headers and "accept-encoding" not in headers

    env.clock.now = T0 + 300
    assert env.fw1.refresh_feed("q") == 304  # unchanged: entries and content time kept
    assert feed_server.seen[1][1]["if-none-match"] == ETAG
    assert env.fw1.feed_entries("q") == FEED_ENTRIES
    status = env.fw1.feed_status("q")
    assert status["http_status_code"] == 304 and status["last_content_update_time"] == T0
    assert status["conn_attempt_time"] == T0 + 300 and status["fetches"] == 2

    results = entry_list(env, "q")["results"]
    assert results["valid_count"] == 7 and results["invalid_count"] == 3
    assert results["http_status_code"] == 304 and results["overflow"] is False
    assert results["last_content_update_time"] == T0 and results["conn_attempt_time"] == T0 + 300
    # Entries are listed as received (like "2001:0db8::1" in the fixture), invalid ones last.
    assert results["entries"][4] == {"entry": "2001:0db8::1", "valid": True}
    assert results["entries"][-3:] == [
        {"entry": "not-an-ip", "valid": False},
        {"entry": "999.1.1.1", "valid": False},
        {"entry": "203.0.113.9-203.0.113.1", "valid": False},
    ]


def test_pull_feed_failures_keep_entries_but_an_empty_200_empties(
    env: Env, feed_server: FeedServer
) -> None:
    feed_server.pages["/f"] = (200, b"198.51.100.1\n198.51.100.2\n", None)
    env.fw1.add_feed("f", url=feed_server.url + "/f")
    assert env.fw1.refresh_feed("f") == 200
    assert "authorization" not in feed_server.seen[0][1]  # no username: no auth
    good = {"198.51.100.1", "198.51.100.2"}

    feed_server.pages["/f"] = (503, b"store unavailable", None)
    env.clock.now = T0 + 60
    assert env.fw1.refresh_feed("f") == 503
    assert env.fw1.feed_entries("f") == good
    status = env.fw1.feed_status("f")
    assert status["http_status_code"] == 503 and status["last_content_update_time"] == T0
    assert "if-none-match" not in feed_server.seen[1][1]  # the first answer had no ETag

    with socket.socket() as probe:  # a port nobody listens on: connection refused
        probe.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{probe.getsockname()[1]}/f"
    env.fw1.add_feed("gone", url=closed)
    assert env.fw1.refresh_feed("gone") == 0

    feed_server.pages["/f"] = (200, b"", None)  # an empty 200 empties the feed
    env.clock.now = T0 + 120
    assert env.fw1.refresh_feed("f") == 200
    assert env.fw1.feed_entries("f") == set()
    status = env.fw1.feed_status("f")
    assert status["valid_count"] == 0 and status["last_content_update_time"] == T0 + 120


def test_pull_feed_limit_overflows(env: Env, feed_server: FeedServer) -> None:
    lines = [f"198.51.100.{i}" for i in range(1, 151)] + ["bogus"]
    feed_server.pages["/big"] = (200, "\n".join(lines).encode(), None)
    env.fw1.add_feed("big", url=feed_server.url + "/big")
    env.fw1.feed_limit = 120
    assert env.fw1.refresh_feed("big") == 200
    assert env.fw1.feed_entries("big") == set(lines[:120])  # the newest are dropped
    status = env.fw1.feed_status("big")
    assert (status["valid_count"], status["invalid_count"], status["overflow"]) == (120, 1, 30)
    results = entry_list(env, "big")["results"]
    assert results["overflow"] is True and results["valid_count"] == 120
    assert [e["entry"] for e in results["entries"]] == lines[:100]  # first 100 only
    page = entry_list(env, "big", start="110", count="20")["results"]["entries"]
    assert [e["entry"] for e in page] == lines[110:120] + ["bogus"]


@pytest.mark.parametrize(
    "url",
    [
        "http://192.0.2.1/x",  # TEST-NET-1
        "https://[2001:db8::1]/x",
        "http://example.com/x",  # never resolved
        "http://127.0.0.1@192.0.2.1/x",  # userinfo trick
        "http://127.0.0.1.nip.io/x",
        "ftp://127.0.0.1/x",
        "not a url",
    ],
)
def test_non_loopback_feed_url_is_refused_without_traffic(
    env: Env, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    env.fw1.add_feed("far", url=url)
    with monkeypatch.context() as m:

        def no_network(*args: Any, **kwargs: Any) -> None:
            raise AssertionError("the simulator touched the network")

        m.setattr(socket.socket, "connect", no_network)
        m.setattr(socket, "getaddrinfo", no_network)
        with pytest.raises(ValueError):
            env.fw1.refresh_feed("far")
    assert env.fw1.feed_status("far")["fetches"] == 0
    r = post(env.sim.urls["fw1"], REFRESH, mkey="far")
    assert r.status_code == 400 and r.json() == BAD_REQUEST


def test_entry_list_shape_and_errors(env: Env, feed_server: FeedServer) -> None:
    env.fw1.add_feed("quiet", url=feed_server.url + "/none")
    body = entry_list(env, "quiet")
    assert set(body) == ENTRY_LIST_KEYS and set(body["results"]) == ENTRY_LIST_RESULT_KEYS
    assert list(body) == sorted(body) and list(body["results"]) == sorted(body["results"])
    assert body["action"] == "entry-list" and body["name"] == "external-resource"
    assert body["path"] == "system" and body["status"] == "success"
    assert body["vdom"] == "root" and body["serial"] == env.fw1.serial
    assert body["results"] == {
        "conn_attempt_time": 0, "entries": [], "http_status_code": 0, "invalid_count": 0,
        "last_content_update_time": 0, "overflow": False,
        "resource_file_status": "not-downloaded", "status": "success", "valid_count": 0,
    }  # fmt: skip
    assert entry_list(env, "quiet", vdom="dmz")["vdom"] == "dmz"
    assert env.fw1.calls[0] == ("GET", ENTRY_LIST, {"mkey": "quiet"})

    url = env.sim.urls["fw1"]
    r = get(url, ENTRY_LIST, mkey="nope")
    assert r.status_code == 404 and r.json() == NOT_FOUND
    r = get(url, ENTRY_LIST, mkey="quiet", vdom="nope")
    assert r.status_code == 404 and r.json() == {**NOT_FOUND, "vdom": "nope"}
    for params in ({}, {"mkey": "quiet", "count": "-1"}, {"mkey": "quiet", "start": "x"}):
        r = get(url, ENTRY_LIST, **params)
        assert r.status_code == 400 and r.json() == BAD_REQUEST
    with client(url, token=None) as c:
        assert c.get(ENTRY_LIST, params={"mkey": "quiet"}).status_code == 401
    env.fw1.fault = "500"
    assert get(url, ENTRY_LIST, mkey="quiet").status_code == 500
    env.fw1.fault = "shape"  # banned-list faults leave the feed endpoints alone
    assert get(url, ENTRY_LIST, mkey="quiet").status_code == 200


def test_refresh_endpoint(env: Env, feed_server: FeedServer) -> None:
    feed_server.pages["/r"] = (200, b"198.51.100.9\n", None)
    env.fw1.add_feed("r", url=feed_server.url + "/r")
    env.fw1.add_feed("pushed", url="", push=True)
    url = env.sim.urls["fw1"]
    r = post(url, REFRESH, mkey="r")
    assert r.status_code == 200
    assert r.json() == {
        "http_method": "POST", "status": "success", "http_status": 200, "vdom": "root",
        "path": "system", "name": "external-resource", "action": "refresh",
        "serial": env.fw1.serial, "version": "v7.2.5", "build": 1517,
    }  # fmt: skip
    assert env.fw1.feed_entries("r") == {"198.51.100.9"} and len(feed_server.seen) == 1
    assert post(url, REFRESH, {"mkey": "r"}).status_code == 200  # mkey in the body works too
    assert len(feed_server.seen) == 2
    assert env.fw1.calls[:2] == [("POST", REFRESH, {"mkey": "r"})] * 2
    assert post(url, REFRESH, mkey="nope").json() == NOT_FOUND
    assert post(url, REFRESH, mkey="pushed").json() == BAD_REQUEST  # nothing to fetch
    assert post(url, REFRESH).json() == BAD_REQUEST
    assert post(url, REFRESH, token="wrong", mkey="r").status_code == 401
    env.fw1.fault = "403"
    assert post(url, REFRESH, mkey="r").status_code == 403
    assert len(feed_server.seen) == 2
    with pytest.raises(ValueError):
        env.fw1.refresh_feed("pushed")
    with pytest.raises(KeyError):
        env.fw1.refresh_feed("nope")


def push(env: Env, *commands: tuple[str, str, list[Any]]) -> httpx.Response:
    body = {"commands": [{"name": n, "command": c, "entries": e} for n, c, e in commands]}
    return post(env.sim.urls["fw1"], DYNAMIC, body)


def test_dynamic_push_feed(env: Env) -> None:
    env.fw1.add_feed("p", url="", push=True)
    r = push(env, ("p", "snapshot", ["198.51.100.1", "198.51.100.0/24", "bogus", V6_EXPLODED]))
    assert r.status_code == 200
    assert r.json()["action"] == "dynamic" and r.json()["name"] == "external-resource"
    assert env.fw1.feed_entries("p") == {"198.51.100.1", "198.51.100.0/24", V6}
    assert env.fw1.feed_status("p")["invalid_count"] == 1
    env.clock.now = T0 + 1
    assert push(env, ("p", "add", ["203.0.113.5", "203.0.113.0-203.0.113.3", "x"])).is_success
    assert push(env, ("p", "remove", ["198.51.100.1", V6, "2001:db8::99", "999.0.0.1"])).is_success
    assert env.fw1.feed_entries("p") == {
        "198.51.100.0/24", "203.0.113.5", "203.0.113.0-203.0.113.3",
    }  # fmt: skip
    status = env.fw1.feed_status("p")
    assert status["invalid_count"] == 3 and status["last_content_update_time"] == T0 + 1
    results = entry_list(env, "p")["results"]
    assert results["valid_count"] == 3 and results["invalid_count"] == 3
    assert env.fw1.calls[0] == (
        "POST",
        DYNAMIC,
        {"commands": [{"name": "p", "command": "snapshot", "entries": [
            "198.51.100.1", "198.51.100.0/24", "bogus", V6_EXPLODED,
        ]}]},
    )  # fmt: skip

    env.fw1.feed_limit = 4  # adding past the limit overflows
    assert push(env, ("p", "add", ["192.0.2.1", "192.0.2.2", "192.0.2.3"])).is_success
    assert len(env.fw1.feed_entries("p")) == 4 and env.fw1.feed_status("p")["overflow"] == 2
    assert entry_list(env, "p")["results"]["overflow"] is True

    assert push(env, ("p", "snapshot", [])).is_success  # an empty snapshot empties it
    assert env.fw1.feed_entries("p") == set()
    status = env.fw1.feed_status("p")
    assert (status["valid_count"], status["invalid_count"], status["overflow"]) == (0, 0, 0)


def test_dynamic_push_errors(env: Env, feed_server: FeedServer) -> None:
    env.fw1.add_feed("p", url="", push=True)
    env.fw1.add_feed("pull", url=feed_server.url + "/x")
    push(env, ("p", "snapshot", ["198.51.100.1"]))
    url = env.sim.urls["fw1"]
    bad_commands: list[object] = [
        [{"name": "pull", "command": "add", "entries": ["198.51.100.2"]}],  # a pull feed
        [{"name": "nope", "command": "add", "entries": ["198.51.100.2"]}],
        [{"name": "p", "command": "replace", "entries": []}],
        [{"name": "p", "command": "add", "entries": "198.51.100.2"}],
        [{"name": "p", "command": "add", "entries": [1]}],
        [{"name": "p", "command": "add"}],
        [{"command": "add", "entries": []}],
        ["p"],
        [],
        {"name": "p"},
        # All commands are checked first: the valid first one is not applied either.
        [
            {"name": "p", "command": "snapshot", "entries": []},
            {"name": "nope", "command": "add", "entries": []},
        ],
    ]
    for commands in bad_commands:
        r = post(url, DYNAMIC, {"commands": commands})
        assert r.status_code == 400 and r.json() == BAD_REQUEST, commands
    not_commands: list[object] = [{}, [], "x", {"commands": "p"}]
    for body in not_commands:
        assert post(url, DYNAMIC, body).json() == BAD_REQUEST
    assert env.fw1.feed_entries("p") == {"198.51.100.1"}
    assert env.fw1.feed_entries("pull") == set() and feed_server.seen == []
    assert post(url, DYNAMIC, {"commands": []}, token=None).status_code == 401
    env.fw1.fault = "424"
    assert push(env, ("p", "snapshot", [])).status_code == 424
    assert env.fw1.feed_entries("p") == {"198.51.100.1"}
    with client(url) as c:
        r = c.post(DYNAMIC, params={"vdom": "nope"}, json={"commands": []})
    assert r.status_code == 424  # faults come first


def test_https_pull_feed(env: Env) -> None:
    ca = trustme.CA()
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(tls)
    with serve_feeds(tls) as feeds:
        feeds.pages["/tls"] = (200, b"198.51.100.1\n", None)
        env.fw1.add_feed("tls", url=feeds.url + "/tls")
        assert env.fw1.refresh_feed("tls") == 0  # the certificate is not trusted
        trusted = ssl.create_default_context()
        ca.configure_trust(trusted)
        env.fw1.add_feed("tls", url=feeds.url + "/tls", verify=trusted)
        assert env.fw1.refresh_feed("tls") == 200
    assert env.fw1.feed_entries("tls") == {"198.51.100.1"}
