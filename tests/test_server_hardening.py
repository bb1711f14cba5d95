"""The feed server against hostile and heavy clients: real uvicorn on 127.0.0.1 (in a thread,
or as a `banfeed serve` process under a low descriptor limit), raw sockets for what a polite
client never sends, and the real store for what is recorded."""

from __future__ import annotations

import os
import re
import resource
import socket
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
from banfeed.models import Consumer
from banfeed.net import parse_network
from banfeed.server.auth import real_client
from banfeed.server.consumers import MAX_CONSUMERS, Fetches
from banfeed.store import open_store
from conftest import RunningDaemon, cli, wait_for

PASSWORD = "feed-pass-0123456789"
SERVER = """
[server]
listen = "127.0.0.1:0"
{extra}
"""
FEEDS = """
[[feeds]]
name = "open"
[[feeds]]
name = "locked"
auth = { type = "basic", username = "fortigate", password_env = "FEED_PW" }
[[feeds]]
name = "partners"
allow_from = ["192.0.2.0/24"]
"""


def make_site(tmp: Path, extra: str = 'header_timeout = "1s"') -> Path:
    path = tmp / "banfeed.toml"
    path.write_text('[store]\nurl = "sqlite:///banfeed.db"\n' + SERVER.format(extra=extra) + FEEDS)
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    ban = cli("--config", str(path), "ban", "93.184.216.34", "--ttl", "7d", "--note", "test")
    assert ban.exit_code == 0, ban.output
    return path


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    monkeypatch.setenv("FEED_PW", PASSWORD)
    path = make_site(tmp_path)
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    url = daemon.url
    assert url is not None
    wait_for(lambda: httpx.get(f"{url}/feeds/open.txt").status_code == 200, what="the feed")
    yield {"daemon": daemon, "url": url, "path": path, "tmp": tmp_path}
    if daemon.thread.is_alive():
        daemon.stop()


def address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    return host, int(port)


def raw(url: str, data: bytes, wait: float = 5.0) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes."""
    with socket.create_connection(address(url), timeout=wait) as sock:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading: what it answered is still to be read
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got


def consumers(db: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT feed, address, user_agent FROM feed_consumers").fetchall()


# -- connections: TCP_NODELAY, head size and time, the cap --------------------------------------


def test_every_accepted_connection_has_tcp_nodelay(served: dict[str, Any]) -> None:
    with httpx.Client() as client:  # one keep-alive connection
        for _ in range(3):
            assert client.get(f"{served['url']}/healthz").text == "ok\n"
        server = served["daemon"].daemon._server
        (conn,) = server.server_state.connections
        sock = conn.transport.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


def test_request_head_over_max_header_size_is_431_and_closed(served: dict[str, Any]) -> None:
    url = served["url"]
    fine = raw(url, b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 15000 + b"\r\n\r\n")
    assert fine.startswith(b"HTTP/1.1 200")
    big = raw(url, b"GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 17000 + b"\r\n\r\n")
    assert big.startswith(b"HTTP/1.1 431 ") and big.endswith(b"request headers too large\n")
    # 64 MiB of headers: refused after the first 16 KiB, never read whole.
    endless = b"GET /healthz HTTP/1.1\r\n" + b"X-Pad: " + b"a" * (64 * 1024**2)
    assert raw(url, endless).startswith(b"HTTP/1.1 431 ")
    metrics = httpx.get(f"{url}/metrics").text
    assert 'banfeed_http_connections_closed_total{reason="header_size"} ' in metrics


def test_slow_head_is_408_and_a_silent_connection_is_closed(served: dict[str, Any]) -> None:
    host, port = address(served["url"])
    with socket.create_connection((host, port), timeout=10) as silent:
        started = time.monotonic()
        assert silent.recv(100) == b""  # closed by the server (header_timeout = 1s)
        assert time.monotonic() - started >= 0.9
    with socket.create_connection((host, port), timeout=10) as drip:
        answer = b""
        for line in (b"GET /healthz HTTP/1.1\r\n", b"Host: a\r\n", b"X-A: b\r\n", b"X-C: d\r\n"):
            try:
                drip.sendall(line)
            except (BrokenPipeError, ConnectionResetError):
                break
            time.sleep(0.4)
        while chunk := drip.recv(65536):
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 408 ")
    # A client that completes its request in time is served, on the same server.
    assert httpx.get(f"{served['url']}/healthz").status_code == 200


def test_a_keep_alive_connection_serves_every_request(served: dict[str, Any]) -> None:
    with socket.create_connection(address(served["url"]), timeout=5) as sock:
        for _ in range(20):
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n")
            got = b""
            while not got.endswith(b"ok\n"):
                got += sock.recv(65536)
            assert got.startswith(b"HTTP/1.1 200")


def serve_process(path: Path, files: int, log: Path) -> subprocess.Popen[bytes]:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "banfeed", "--config", str(path), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=limit,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )


def test_200_slow_sockets_under_150_descriptors_legit_clients_still_served(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_PW", PASSWORD)
    path = make_site(tmp_path, 'header_timeout = "30s"')
    log = tmp_path / "serve.log"
    proc = serve_process(path, 150, log)
    slow: list[socket.socket] = []
    try:
        found = wait_for(
            lambda: re.search(r"serving (http://\S+?)/feeds", log.read_text()), what="the URL"
        )
        url = found.group(1)
        cap = int(re.search(r"at most (\d+) connections", log.read_text()).group(1))
        assert 8 <= cap < 150
        wait_for(lambda: httpx.get(f"{url}/feeds/open.txt").status_code == 200, what="feed")
        for _ in range(200):  # each sends half a request line, then nothing
            sock = socket.create_connection(address(url), timeout=10)
            sock.sendall(b"GET /feeds/open.txt HTTP/1.1\r\n")
            slow.append(sock)
        for _ in range(30):
            response = httpx.get(f"{url}/feeds/open.txt", timeout=10)
            assert response.status_code == 200 and response.text == "93.184.216.34\n"
        metrics = httpx.get(f"{url}/metrics").text
        evicted = re.search(r'closed_total\{reason="evicted"\} (\S+)', metrics)
        assert evicted is not None and float(evicted.group(1)) >= 200 - cap
        assert proc.poll() is None
    finally:
        for sock in slow:
            sock.close()
        proc.terminate()
        proc.wait(timeout=15)
    output = log.read_text()
    assert "Too many open files" not in output and "Traceback" not in output


def test_max_connections_above_the_descriptor_limit_stops_serve_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_PW", PASSWORD)
    path = make_site(tmp_path, "max_connections = 1000")
    log = tmp_path / "serve.log"
    proc = serve_process(path, 150, log)
    assert proc.wait(timeout=30) == 2
    output = log.read_text()
    assert "server.max_connections: 1000 is more than the descriptor limit allows" in output
    assert "150 open files" in output and "ulimit -n" in output and "Traceback" not in output


# -- no redirect from Host; proxy headers only from trusted proxies ------------------------------


def test_slash_redirect_is_a_path_never_the_request_host(served: dict[str, Any]) -> None:
    url = served["url"]
    moved = httpx.get(f"{url}/metrics/?a=1", headers={"Host": "evil.example"})
    assert moved.status_code == 307 and moved.headers["location"] == "/metrics?a=1"
    for path in ("//evil.example/", "/%2F%2Fevil.example/", "/\\evil.example/"):
        request = f"GET {path} HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        answer = raw(url, request.encode())
        assert b"location" not in answer.lower() and b"evil" not in answer, path
    # A path that ends in an encoded slash is no path with a trailing slash: no redirect (it
    # was sent to ".../quarantine%2F/", which decodes to another path again).
    for path in ("/feeds/quarantine.txt%2F", "/api/v1/feeds/quarantine%2F"):
        answer = raw(url, f"GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n".encode())
        assert answer.startswith(b"HTTP/1.1 404") or answer.startswith(b"HTTP/1.1 401"), answer[:80]
        assert b"location" not in answer.lower(), path


def test_real_client_reads_x_forwarded_for_only_from_trusted_proxies() -> None:
    proxies = (parse_network("127.0.0.1/32"), parse_network("10.0.0.0/8"))
    assert real_client("127.0.0.1", ["192.0.2.7"], ()) == "127.0.0.1"  # none trusted
    assert real_client("198.51.100.1", ["192.0.2.7"], proxies) == "198.51.100.1"
    assert real_client("127.0.0.1", ["192.0.2.7"], proxies) == "192.0.2.7"
    # The right-most hop that is no trusted proxy: hops left of it are the client's to invent.
    assert real_client("127.0.0.1", ["192.0.2.7, 198.51.100.9, 10.1.1.1"], proxies) == (
        "198.51.100.9"
    )
    assert real_client("127.0.0.1", ["192.0.2.7", "10.1.1.1"], proxies) == "192.0.2.7"
    assert real_client("127.0.0.1", ["not-an-ip"], proxies) == "invalid"
    assert real_client("127.0.0.1", [" , "], proxies) == "127.0.0.1"


def test_x_forwarded_for_is_ignored_by_default(served: dict[str, Any]) -> None:
    url = served["url"]
    spoofed = httpx.get(f"{url}/feeds/partners.txt", headers={"X-Forwarded-For": "192.0.2.7"})
    assert spoofed.status_code == 403  # judged on the real peer, 127.0.0.1


def test_x_forwarded_for_from_a_trusted_proxy_names_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEED_PW", PASSWORD)
    path = make_site(tmp_path, 'trusted_proxies = ["127.0.0.1/32"]')
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    url = daemon.url
    try:
        feed = f"{url}/feeds/partners.txt"
        wait_for(lambda: httpx.get(f"{url}/feeds/open.txt").status_code == 200, what="feed")
        proxied = httpx.get(feed, headers={"X-Forwarded-For": "192.0.2.7", "User-Agent": "fgt"})
        assert proxied.status_code == 200 and proxied.text == "93.184.216.34\n"
        chained = httpx.get(feed, headers={"X-Forwarded-For": "192.0.2.7, 198.51.100.9"})
        assert chained.status_code == 403
        assert httpx.get(feed).status_code == 403  # the proxy itself is no partner
    finally:
        daemon.stop()
    assert ("partners", "192.0.2.7", "fgt") in consumers(tmp_path / "banfeed.db")


# -- error bodies --------------------------------------------------------------------------------


def leaks(body: str, tmp: Path) -> list[str]:
    found = [word for word in ("sqlite", "Traceback", "http://", "evil.example") if word in body]
    return found + ([str(tmp)] if str(tmp) in body or "banfeed.db" in body else [])


def test_error_bodies_carry_no_paths_urls_or_internals(served: dict[str, Any]) -> None:
    url, tmp = served["url"], served["tmp"]
    host = {"Host": "evil.example"}
    answers = {
        "404 path": httpx.get(f"{url}/etc/passwd", headers=host),
        "404 traversal": httpx.get(f"{url}/feeds/..%2F..%2Fbanfeed.db", headers=host),
        "404 feed": httpx.get(f"{url}/feeds/nope.txt", headers=host),
        "404 format": httpx.get(f"{url}/feeds/open.exe", headers=host),
        "405": httpx.post(f"{url}/feeds/open.txt", headers=host),
        "401": httpx.get(f"{url}/feeds/locked.txt", headers=host, auth=("fortigate", "x")),
        "403": httpx.get(f"{url}/feeds/partners.txt", headers=host),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "404 path": 404,
        "404 traversal": 404,
        "404 feed": 404,
        "404 format": 404,
        "405": 405,
        "401": 401,
        "403": 403,
    }
    for name, response in answers.items():
        assert not leaks(response.text, tmp), (name, response.text)
    db, moved = tmp / "banfeed.db", tmp / "moved.db"
    os.rename(db, moved)
    try:
        down = wait_for(
            lambda: (r := httpx.get(f"{url}/feeds/open.txt")).status_code == 503 and r,
            what="503",
        )
        ready = httpx.get(f"{url}/readyz")
        index = httpx.get(f"{url}/")
        assert ready.status_code == 503 and "store" in ready.text
        for response in (down, ready, index):
            assert not leaks(response.text, tmp), response.text
    finally:
        os.rename(moved, db)


# -- consumer records ----------------------------------------------------------------------------


def refusals(url: str) -> dict[tuple[str, str], float]:
    pattern = r'banfeed_feed_refusals_total\{feed="(\w+)",reason="(\w+)"\} (\S+)'
    found = re.findall(pattern, httpx.get(f"{url}/metrics").text)
    return {(feed, reason): float(n) for feed, reason, n in found}


def test_refusals_are_counted_never_recorded(served: dict[str, Any]) -> None:
    url, tmp = served["url"], served["tmp"]
    before = refusals(url)
    for n in range(40):
        agent = {"User-Agent": f"scanner-{n}"}
        assert httpx.get(f"{url}/feeds/locked.txt", headers=agent).status_code == 401
        assert httpx.get(f"{url}/feeds/partners.txt", headers=agent).status_code == 403
    ok = httpx.get(f"{url}/feeds/locked.txt", auth=("fortigate", PASSWORD))
    assert ok.status_code == 200
    after = refusals(url)
    assert after["locked", "credentials"] - before.get(("locked", "credentials"), 0) == 40
    assert after["partners", "address"] - before.get(("partners", "address"), 0) == 40
    served["daemon"].stop()  # flushes the fetch records
    rows = consumers(tmp / "banfeed.db")
    assert [(f, a) for f, a, _ in rows if f != "open"] == [("locked", "127.0.0.1")]


def test_pending_fetches_are_capped_per_feed() -> None:
    fetches = Fetches()
    for n in range(MAX_CONSUMERS + 500):
        fetches.record("open", "192.0.2.1", f"agent-{n}", None, 200, 1000)
    fetches.record("open", "192.0.2.1", "agent-0", None, 304, 1001)  # a known one still updates
    fetches.record("other", "192.0.2.1", "agent-x", None, 200, 1001)
    taken = fetches.take()
    assert len(taken) == MAX_CONSUMERS + 1
    first = next(c for c in taken if c.user_agent == "agent-0")
    assert first.requests == 2 and first.status == 304


def consumer(feed: str, agent: str, seen: int) -> Consumer:
    return Consumer(feed, "192.0.2.1", agent, seen, seen, None, 200, 1)


def test_store_keeps_at_most_keep_consumers_per_feed_and_ages_them_out(store_url: str) -> None:
    store = open_store(store_url, create=True)
    try:
        day = 86400
        with store.write() as tx:
            kept_out = tx.record_fetches(
                [consumer("f", f"a{n}", 100 * day) for n in range(5)] + [consumer("g", "b", 1)],
                now=100 * day,
                keep=3,
                max_age=30 * day,
            )
        assert kept_out == 2
        with store.read() as tx:
            rows = tx.feed_consumers()
        assert sorted(c.user_agent for c in rows if c.feed == "f") == ["a0", "a1", "a2"]
        with store.write() as tx:  # a known consumer is updated though the feed is full
            assert (
                tx.record_fetches(
                    [consumer("f", "a0", 101 * day)], now=101 * day, keep=3, max_age=30 * day
                )
                == 0
            )
        with store.write() as tx:  # 40 days later: only a0 was seen within 30 days of 131
            later = 131 * day
            assert (
                tx.record_fetches(
                    [consumer("f", "new", later)], now=later, keep=3, max_age=30 * day
                )
                == 0
            )
        with store.read() as tx:
            left = sorted((c.feed, c.user_agent, c.requests) for c in tx.feed_consumers())
        assert left == [("f", "a0", 2), ("f", "new", 1)]
    finally:
        store.close()
