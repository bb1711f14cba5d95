#!/usr/bin/env python3
"""The feed server under load while `banfeed run` collects (issue 14, "Load").

    .venv/bin/python bench/load.py            # 200 clients, 60 s, a 100,000-entry feed
    .venv/bin/python bench/load.py --quick    # 50 clients, 12 s, a 20,000-entry feed (CI)
    .venv/bin/python bench/load.py --json FILE

Starts 50 simulated FortiGates (churn on every poll) in this process and `banfeed run` (SQLite,
collecting every 5 s) as a child, waits until its feed holds the fleet's entries, then:

1. one keep-alive connection, `wrk -t1 -c1` on /healthz: requests/s (Nagle's algorithm and the
   client's delayed ACK cost ~40 ms per response without TCP_NODELAY: ~22 req/s);
2. the load: `wrk` with N connections for D seconds on /feeds/quarantine.txt with Basic auth,
   like FortiGates: If-None-Match with the last ETag served (per wrk thread), and one request
   in ten a full fetch without it (bench/load.lua) — while collection goes on;
3. a client that stops reading a large response (the .json rendering of the feed) is dropped
   after `[server] send_timeout`.

Reports requests/s, p50/p99, 200s and 304s, errors (socket errors, timeouts, statuses other
than 200/304) and the server's RSS after a warm-up and at the end. Exit status 0 only if there
were no errors, RSS did not grow by more than 10 %, every poll cycle kept completing and the
stalled reader was dropped. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from banfeed import simulator

ROOT = Path(__file__).resolve().parents[1]
LUA = Path(__file__).with_suffix(".lua")
PASSWORD = "bench-feed-password-0123"
DEVICES = 50
INTERVAL = 5
SEND_TIMEOUT = 3


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    found = re.search(r"VmRSS:\s+(\d+) kB", status)
    return int(found.group(1)) if found else 0


class Daemon:
    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banfeed", "--config", str(config), "run"],
            stderr=subprocess.STDOUT,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait(r"serving (http://[\d.:]+)/feeds/", 60).group(1)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def _wait(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(pattern, line):
                    return found
            if self.proc.poll() is not None:
                raise SystemExit("banfeed run exited:\n" + "".join(self.lines))
            time.sleep(0.1)
        raise SystemExit(f"timed out waiting for {pattern!r}:\n" + "".join(self.lines[-20:]))

    def cycles(self) -> int:
        return sum("cycle: " in line for line in self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def cycle_seconds(lines: list[str]) -> list[float]:
    """How long each logged cycle took ("cycle: ...; 2.34s")."""
    return [float(m.group(1)) for line in lines if (m := re.search(r"cycle: .*; ([\d.]+)s$", line))]


def wrk(url: str, connections: int, seconds: int, path: str, auth: str | None) -> dict[str, Any]:
    argv = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    argv += ["--timeout", "10s"]
    if auth is not None:
        argv += ["-s", str(LUA)]
    env = {**os.environ, "BANFEED_AUTH": auth or "", "BANFEED_PATH": path}
    out = subprocess.run(
        [*argv, url + path], capture_output=True, text=True, env=env, check=True
    ).stdout

    def number(pattern: str, default: float = 0.0) -> float:
        found = re.search(pattern, out)
        return float(found.group(1)) if found else default

    def latency(label: str) -> float:
        found = re.search(rf"{label}\s+([\d.]+)(us|ms|s)\b", out)
        if not found:
            return float("nan")
        scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[found.group(2)]
        return float(found.group(1)) * scale

    socket_errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(g) for g in socket_errors.groups()) if socket_errors else 0
    statuses = {int(k): int(v) for k, v in re.findall(r"status (\d+): (\d+)", out)}
    bad = sum(v for k, v in statuses.items() if k not in (200, 304))
    return {
        "requests": int(number(r"(\d+) requests in")),
        "requests_per_s": number(r"Requests/sec:\s+([\d.]+)"),
        "p50_ms": latency("50%"),
        "p99_ms": latency("99%"),
        "statuses": statuses,
        "errors": errors + bad + int(number(r"Non-2xx or 3xx responses: (\d+)")),
        "raw": out,
    }


def stalled_reader(url: str, auth: str) -> dict[str, Any]:
    """Ask for the large .json rendering, read its head, then nothing for send_timeout + 3 s,
    then read on: a dropped connection ends (reset, or EOF) before the body is complete."""
    httpx.get(
        f"{url}/feeds/quarantine.json", headers={"Authorization": f"Basic {auth}"}, timeout=120
    )  # rendered once, then cached: the stall below is the client's only
    host, port = url.removeprefix("http://").rsplit(":", 1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(60)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /feeds/quarantine.json HTTP/1.1\r\nHost: a\r\nAuthorization: Basic {auth}\r\n"
        "Accept-Encoding: identity\r\n\r\n".encode()
    )
    got = b""
    while b"\r\n\r\n" not in got:
        got += sock.recv(4096)
    time.sleep(SEND_TIMEOUT + 3)
    reset = False
    try:
        while chunk := sock.recv(1 << 20):
            got += chunk
    except ConnectionResetError:
        reset = True
    head, _, body = got.partition(b"\r\n\r\n")
    length = re.search(rb"content-length: (\d+)", head, re.IGNORECASE)
    total = int(length.group(1)) if length else 0
    sock.close()
    return {"length": total, "received": len(body), "dropped": reset or len(body) < total}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50 clients, 12 s, 20,000 entries")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    clients, seconds, per_device = (50, 12, 400) if args.quick else (200, 60, 2000)
    fleet = simulator.SimFleet(seed=14)
    for i in range(DEVICES):
        fleet.add_device(f"fw-{i:02d}", token="t", entries=per_device, churn=3, ipv6_ratio=0.0)
    sim = simulator.start(fleet)
    folder = Path(tempfile.mkdtemp(prefix="banfeed-load-"))
    devices = "".join(
        f'[[fortigates]]\nname = "{n}"\nurl = "{u}"\ntoken_env = "T"\n\n'
        for n, u in sim.urls.items()
    )
    config = folder / "banfeed.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///banfeed.db"\n[collect]\ninterval = "{INTERVAL}s"\n'
        f'[server]\nlisten = "127.0.0.1:0"\nsend_timeout = "{SEND_TIMEOUT}s"\n'
        '[[feeds]]\nname = "quarantine"\n'
        'auth = { type = "basic", username = "fortigate", password_env = "FEED_PW" }\n\n' + devices
    )
    env = {**os.environ, "T": "t", "FEED_PW": PASSWORD, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "-m", "banfeed", "--config", str(config), "db", "upgrade"],
        check=True,
        env=env,
        capture_output=True,
    )
    auth = base64.b64encode(f"fortigate:{PASSWORD}".encode()).decode()
    daemon = Daemon(config, env)
    ok = True
    try:
        expected = DEVICES * per_device
        feed = f"{daemon.url}/feeds/quarantine.txt"
        deadline = time.monotonic() + 120
        lines = 0
        while time.monotonic() < deadline:
            answer = httpx.get(feed, auth=("fortigate", PASSWORD), timeout=30)
            lines = answer.content.count(b"\n") if answer.status_code == 200 else 0
            if lines >= 0.95 * expected:
                break
            time.sleep(1)
        log(f"feed ready: {lines} lines, {len(answer.content):,} bytes")
        one = wrk(daemon.url, 1, 3, "/healthz", None)
        log(f"one keep-alive connection: {one['requests_per_s']:.0f} req/s on /healthz")
        wrk(daemon.url, clients, 3, "/feeds/quarantine.txt", auth)  # warm-up
        before_rss, before_cycles = rss_kib(daemon.proc.pid), daemon.cycles()
        log(f"load: {clients} connections for {seconds} s; RSS {before_rss / 1024:.1f} MiB")
        load = wrk(daemon.url, clients, seconds, "/feeds/quarantine.txt", auth)
        after_rss, cycles = rss_kib(daemon.proc.pid), daemon.cycles() - before_cycles
        stalled = stalled_reader(daemon.url, auth)
        statuses = load["statuses"]
        figures = {
            "clients": clients,
            "seconds": seconds,
            "feed_lines": lines,
            "feed_bytes": len(answer.content),
            "one_connection_rps": round(one["requests_per_s"], 1),
            "requests": load["requests"],
            "requests_per_s": round(load["requests_per_s"], 1),
            "p50_ms": round(load["p50_ms"], 2),
            "p99_ms": round(load["p99_ms"], 2),
            "full_200": statuses.get(200, 0),
            "not_modified_304": statuses.get(304, 0),
            "errors": load["errors"],
            "rss_before_mib": round(before_rss / 1024, 1),
            "rss_after_mib": round(after_rss / 1024, 1),
            "cycles_during_load": cycles,
            "cycle_seconds": cycle_seconds(
                [line for line in daemon.lines if "cycle: " in line][before_cycles:]
            ),
            "stalled_reader": stalled,
        }
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        problems = []
        if load["errors"]:
            problems.append(f"{load['errors']} errors:\n{load['raw']}")
        if after_rss > before_rss * 1.10:
            problems.append(f"RSS grew from {before_rss} KiB to {after_rss} KiB")
        if cycles < max(1, seconds // (4 * INTERVAL)):  # a cycle of 100,000 takes seconds
            problems.append(f"only {cycles} collection cycles during {seconds} s of load")
        if not stalled["dropped"]:
            problems.append(f"a reader that read nothing was not dropped: {stalled}")
        for problem in problems:
            log("FAIL: " + problem)
        ok = not problems
    finally:
        daemon.stop()
        sim.stop()
    log("ok" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
