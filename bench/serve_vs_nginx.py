#!/usr/bin/env python3
"""Feed serving, side by side: banfeed (``banfeed serve``) against nginx serving the same bytes.

One run measures, with the same wrk settings (``-t2 -c32 -d15s --latency`` by default):

* nginx 200      GET /quarantine.txt, a static file (sendfile on)
* nginx 304      the same with ``If-None-Match: <nginx's ETag>``
* banfeed 200    GET /feeds/quarantine.txt, 100,000 lines from the in-memory FeedCache
* banfeed 304    the same with ``If-None-Match: <banfeed's ETag>``

and prints requests/s, p50 and p99 for each, the ratios banfeed/nginx, and the figures as JSON.
Targets: banfeed >= 0.5x nginx's requests/s and p99 <= 2x nginx's.

Everything (banfeed serve, nginx, wrk) runs inside one network namespace of its own
(``unshare -n``, loopback only): no traffic leaves 127.0.0.1. Needs root, nginx and wrk
(``apt-get update && apt-get install -y nginx wrk``); /etc/nginx is neither read nor changed.

    bench/serve_vs_nginx.py                # 15 s per measurement
    bench/serve_vs_nginx.py --quick        # 3 s per measurement (CI)
    bench/serve_vs_nginx.py --profile DIR  # then py-spy on banfeed during extra runs
    bench/serve_vs_nginx.py --pythonpath /tmp/extras  # banfeed with e.g. httptools/uvloop there
    bench/serve_vs_nginx.py --help         # the rest (--uvloop, --json FILE, --keep, ...)

Beside req/s and latency it reports the CPU the server used per request (from /proc), wrk's
CPU and how busy the whole machine was: on a 2-core box wrk shares the cores with the server,
and the 1.4 MB 200 responses are bound by the machine (kernel copies), not by either server.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
BANFEED = VENV / "bin" / "banfeed"
FEED = "quarantine"
INSTALL_HINT = "apt-get update && apt-get install -y nginx wrk"
TARGET_RPS_RATIO = 0.5  # banfeed req/s >= this x nginx's
TARGET_P99_RATIO = 2.0  # banfeed p99 <= this x nginx's


# -- wrk ---------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    label: str
    url: str
    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p75_ms: float
    p90_ms: float
    p99_ms: float
    avg_ms: float
    max_ms: float
    transfer_per_sec: str
    socket_errors: str | None
    non_2xx_3xx: int
    server_cpu_pct: float = 0.0  # of one core, all the server's processes
    server_cpu_us_per_req: float = 0.0
    wrk_cpu_pct: float = 0.0
    machine_busy_pct: float = 0.0  # all cores, user+system+irq+softirq, of nproc x 100%


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(label: str, url: str, out: str) -> WrkResult:
    def find(pattern: str) -> re.Match[str]:
        m = re.search(pattern, out, re.MULTILINE)
        if m is None:
            raise ValueError(f"wrk output has no {pattern!r}:\n{out}")
        return m

    pct = {p: _ms(find(rf"^\s+{p}%\s+(\S+)").group(1)) for p in (50, 75, 90, 99)}
    lat = find(r"^\s+Latency\s+(\S+)\s+\S+\s+(\S+)")
    done = find(r"^\s+(\d+) requests in ([\d.]+)(\w+),")
    errors = re.search(r"^\s+Socket errors: (.*)$", out, re.MULTILINE)
    non_ok = re.search(r"^\s+Non-2xx or 3xx responses: (\d+)", out, re.MULTILINE)
    return WrkResult(
        label=label,
        url=url,
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1000.0,
        rps=float(find(r"^Requests/sec:\s+([\d.]+)").group(1)),
        p50_ms=pct[50],
        p75_ms=pct[75],
        p90_ms=pct[90],
        p99_ms=pct[99],
        avg_ms=_ms(lat.group(1)),
        max_ms=_ms(lat.group(2)),
        transfer_per_sec=find(r"^Transfer/sec:\s+(\S+)").group(1),
        socket_errors=errors.group(1) if errors else None,
        non_2xx_3xx=int(non_ok.group(1)) if non_ok else 0,
    )


def wrk_command(args: argparse.Namespace, url: str, headers: Sequence[str] = ()) -> list[str]:
    cmd = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.seconds}s"]
    cmd += ["--latency", "--timeout", "10s"]
    for header in headers:
        cmd += ["-H", header]
    return [*cmd, url]


def run_wrk(
    args: argparse.Namespace,
    label: str,
    url: str,
    server_pid: int,
    headers: Sequence[str] = (),
) -> WrkResult:
    """One wrk run, with the CPU time the server (``server_pid`` and its children) and wrk
    used meanwhile: on a small machine wrk shares the cores, and may be the bottleneck."""
    cmd = wrk_command(args, url, headers)
    print(f"\n== {label}: {' '.join(_quote(c) for c in cmd)}", flush=True)
    server_before = cpu_seconds(server_pid)
    machine_before = machine_ticks()
    wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.seconds + 60, check=False
    )
    wall = time.monotonic() - start
    server_cpu = cpu_seconds(server_pid) - server_before
    machine_after = machine_ticks()
    wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = (wrk_after.ru_utime - wrk_before.ru_utime) + (
        wrk_after.ru_stime - wrk_before.ru_stime
    )
    print(done.stdout.rstrip(), flush=True)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()}")
    result = parse_wrk(label, url, done.stdout)
    result.server_cpu_pct = 100.0 * server_cpu / wall
    result.server_cpu_us_per_req = 1e6 * server_cpu / max(result.requests, 1)
    result.wrk_cpu_pct = 100.0 * wrk_cpu / wall
    busy, total = (a - b for a, b in zip(machine_after, machine_before, strict=True))
    result.machine_busy_pct = 100.0 * busy / max(total, 1)
    print(
        f"  CPU: server {result.server_cpu_pct:.0f}% of a core "
        f"({result.server_cpu_us_per_req:.0f} us/request), wrk {result.wrk_cpu_pct:.0f}%, "
        f"machine {result.machine_busy_pct:.0f}% busy",
        flush=True,
    )
    return result


_TICK = os.sysconf("SC_CLK_TCK")


def machine_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of all cores, from /proc/stat (busy: all but idle and iowait)."""
    fields = [int(f) for f in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    total = sum(fields[:8])  # user nice system idle iowait irq softirq steal
    return total - fields[3] - fields[4], total


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` and its live children (nginx's workers), from /proc."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        # after "(comm)": state ppid ... utime(12th) stime(13th), 1-based from state
        if int(entry.name) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / _TICK
    return total


def _quote(arg: str) -> str:
    return f"'{arg}'" if re.search(r"[\s\"]", arg) else arg


# -- processes -----------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child, before exec: get SIGTERM if this script dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """The servers this script started, stopped with SIGTERM (then SIGKILL) in reverse order."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.logs: dict[str, Path] = {}

    def start(self, name: str, cmd: list[str], log: Path, env: dict[str, str] | None = None) -> int:
        with log.open("wb") as out:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                preexec_fn=_die_with_parent,
            )
        self.started.append((name, proc))
        self.logs[name] = log
        return proc.pid

    def check_alive(self) -> None:
        for name, proc in self.started:
            if proc.poll() is not None:
                tail = self.logs[name].read_text(errors="replace").splitlines()[-20:]
                raise RuntimeError(
                    f"{name} exited early with status {proc.returncode}; its log ends:\n"
                    + "\n".join(tail)
                )

    def stop_all(self) -> None:
        for name, proc in reversed(self.started):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    print(f"{name} ignored SIGTERM for 10 s: SIGKILL", file=sys.stderr)
                    proc.kill()
                    proc.wait()
            print(f"stopped {name} (pid {proc.pid}, status {proc.returncode})", file=sys.stderr)
        self.started.clear()


def http_get(
    port: int, path: str, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers=headers or {})
        response = conn.getresponse()
        body = response.read()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, body
    finally:
        conn.close()


def wait_for_200(port: int, path: str, procs: Processes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        procs.check_alive()
        try:
            status, _, _ = http_get(port, path)
        except OSError as exc:
            last = str(exc)
        else:
            if status == 200:
                return
            last = f"HTTP {status}"
        time.sleep(0.2)
    raise RuntimeError(f"127.0.0.1:{port}{path} not 200 after {timeout:.0f} s ({last})")


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- banfeed -------------------------------------------------------------------------------


def public_ipv4(count: int, seed: int) -> list[str]:
    """Distinct random public addresses: ``is_global``, and none that banfeed never publishes
    (Python 3.11 counts multicast and 240.0.0.0/4 as global; banfeed's never-block list does
    not), so the feed has exactly ``count`` lines."""
    from banfeed.net import never_block_reason

    rng = random.Random(seed)
    seen: set[int] = set()
    ips: list[str] = []
    while len(ips) < count:
        n = rng.getrandbits(32)
        address = ipaddress.IPv4Address(n)
        if n not in seen and address.is_global and never_block_reason(address) is None:
            seen.add(n)
            ips.append(str(address))
    return ips


def fill_store(url: str, ips: Sequence[str], now: int) -> None:
    """Insert offenders through banfeed's own store API (the venv's banfeed)."""
    from banfeed.models import Offender, OffenderStatus
    from banfeed.store import open_store

    store = open_store(url)
    try:
        with store.write() as tx:
            rows = [
                Offender(
                    ipaddress.ip_address(ip),
                    now,
                    now,
                    1,
                    ("IPS",),
                    ("fw",),
                    ("fw/root",),
                    None,
                    OffenderStatus.LISTED,
                )
                for ip in ips
            ]
            tx.insert_offenders(rows, now)
            tx.bump_version()
    finally:
        store.close()


def uvicorn_stack(env: dict[str, str]) -> dict[str, Any]:
    """Versions, and whether httptools/uvloop are importable in banfeed's process (same env)."""
    code = (
        "import importlib.util as u, json, uvicorn, starlette\n"
        "print(json.dumps({'uvicorn': uvicorn.__version__, 'starlette': starlette.__version__,"
        " 'httptools installed': bool(u.find_spec('httptools')),"
        " 'uvloop installed': bool(u.find_spec('uvloop'))}))"
    )
    out = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    found: dict[str, Any] = json.loads(out.stdout)
    return found


def in_use(pid: int) -> dict[str, str]:
    """What the running server really uses, from the extension modules it has loaded: uvicorn
    loads httptools only when its http="auto" picks it; uvloop is loaded only if something set
    it up (banfeed calls asyncio.run itself, so uvicorn's loop="auto" does not)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {
        "http": "httptools" if "/httptools/" in maps else "h11",
        "loop": "uvloop" if "/uvloop/" in maps else "asyncio",
    }


# -- nginx ---------------------------------------------------------------------------------


def nginx_conf(tmp: Path, port: int) -> str:
    return f"""\
daemon off;
master_process on;
worker_processes auto;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    types {{ text/plain txt; }}
    default_type application/octet-stream;
    client_body_temp_path {tmp}/nginx-tmp/body;
    proxy_temp_path {tmp}/nginx-tmp/proxy;
    fastcgi_temp_path {tmp}/nginx-tmp/fastcgi;
    uwsgi_temp_path {tmp}/nginx-tmp/uwsgi;
    scgi_temp_path {tmp}/nginx-tmp/scgi;
    server {{
        listen 127.0.0.1:{port};
        root {tmp}/www;
    }}
}}
"""


def version_lines() -> dict[str, str]:
    nginx = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    wrk = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    git = subprocess.run(
        ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return {
        "banfeed tree": git.stdout.strip() or "?",
        "nginx": (nginx.stderr or nginx.stdout).strip(),
        "wrk": (wrk.stdout or wrk.stderr).strip().splitlines()[0],
    }


# -- profiling -----------------------------------------------------------------------------


def py_spy() -> str | None:
    """py-spy on PATH, else the venv's (``.venv/bin/pip install py-spy``)."""
    in_venv = VENV / "bin" / "py-spy"
    return shutil.which("py-spy") or (str(in_venv) if in_venv.exists() else None)


_COMPONENTS = (  # (file path prefix of a frame, component), first match wins
    ("uvicorn/protocols/http/h11_impl", "uvicorn h11 protocol"),
    ("uvicorn/protocols/http/httptools_impl", "uvicorn httptools protocol"),
    ("uvicorn/", "uvicorn other"),
    ("h11/", "h11 (pure-Python HTTP parse/serialize)"),
    ("httptools/", "httptools"),
    ("starlette/", "starlette (routing, middleware, Request/Response)"),
    ("banfeed/", "banfeed handler"),
    ("prometheus_client/", "prometheus_client"),
    ("asyncio/", "asyncio event loop, transports, socket I/O"),
    ("selectors", "asyncio event loop, transports, socket I/O"),
    ("socket", "asyncio event loop, transports, socket I/O"),
    ("uvloop/", "uvloop"),
)


def _component(frame: str) -> str:
    path = frame.rpartition(" (")[2]
    for prefix, name in _COMPONENTS:
        if path.startswith(prefix):
            return name
    return "other: " + path.split("/")[0].split(":")[0]


@dataclass
class Profile:
    samples: int
    self_by_component: list[tuple[str, float]]  # % of samples, by the frame on top of the stack
    self_by_function: list[tuple[str, float]]
    inclusive_banfeed: list[tuple[str, float]]  # % of samples with the frame on the stack


def summarize_raw_profile(path: Path, top: int = 20) -> Profile:
    """Shares of py-spy's samples, from its collapsed-stack ('raw') output."""
    by_component: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue  # py-spy can emit a frame name with a line break in it
        count = int(count_text)
        total += count
        frames = stack.split(";")
        by_component[_component(frames[-1])] += count
        by_function[frames[-1]] += count
        for function in {
            f.rpartition(":")[0] + ")"
            for f in frames
            if "(banfeed/" in f and "(banfeed/cli/" not in f
        }:
            inclusive[function] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(k, round(100.0 * n / max(total, 1), 1)) for k, n in counter.most_common(top)]

    return Profile(total, shares(by_component), shares(by_function), shares(inclusive))


@contextlib.contextmanager
def profiling(pid: int, out: Path, seconds: int) -> Iterator[None]:
    tool = py_spy()
    if tool is None:
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    cmd = [tool, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200"]
    cmd += ["--nonblocking", "--format", "raw", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)
        yield
    finally:
        try:
            _, err = proc.communicate(timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, err = proc.communicate()
        if proc.returncode != 0:
            print(f"py-spy: {err.decode(errors='replace').strip()}", file=sys.stderr)


# -- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {"nproc": os.cpu_count(), "cpu": cpu, "ram_gib": round(mem_kb / 1024**2, 1)}


def ratios(banfeed: WrkResult, nginx: WrkResult) -> dict[str, float]:
    return {
        "rps": banfeed.rps / nginx.rps,
        "p50": banfeed.p50_ms / nginx.p50_ms,
        "p99": banfeed.p99_ms / nginx.p99_ms,
    }


def print_table(results: Sequence[WrkResult], pairs: dict[str, dict[str, float]]) -> None:
    width = 100
    print("\n" + "=" * width)
    print(
        f"{'':14}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'max ms':>9}{'transfer/s':>12}"
        f"{'server CPU':>12}{'us/req':>8}{'wrk CPU':>9}{'box busy':>10}"
    )
    for r in results:
        print(
            f"{r.label:14}{r.rps:>10,.0f}{r.p50_ms:>9.2f}{r.p99_ms:>9.2f}{r.max_ms:>9.2f}"
            f"{r.transfer_per_sec:>12}{r.server_cpu_pct:>11.0f}%{r.server_cpu_us_per_req:>8.0f}"
            f"{r.wrk_cpu_pct:>8.0f}%{r.machine_busy_pct:>9.0f}%"
            + (f"  errors: {r.socket_errors}" if r.socket_errors else "")
            + (f"  non-2xx/3xx: {r.non_2xx_3xx}" if r.non_2xx_3xx else "")
        )
    print()
    for name, ratio in pairs.items():
        print(
            f"{name:20}req/s {ratio['rps']:.2f}x   p50 {ratio['p50']:.2f}x   "
            f"p99 {ratio['p99']:.2f}x"
        )
    print("=" * width)


def inner(args: argparse.Namespace) -> int:
    """Inside the network namespace: set up, measure, tear down."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=10)
    dev = Path("/proc/self/net/dev").read_text().splitlines()[2:]  # per network namespace
    interfaces = sorted(line.split(":", 1)[0].strip() for line in dev)
    if interfaces != ["lo"]:
        raise RuntimeError(f"expected a namespace with only lo, found {interfaces}")

    tmp = Path(tempfile.mkdtemp(prefix="banfeed-vs-nginx-"))
    tmp.chmod(0o755)  # nginx workers (user nobody) read www/ below it
    procs = Processes()
    try:
        return measure(args, tmp, procs)
    finally:
        signal.alarm(0)
        for sig in STOP_SIGNALS:  # a second Ctrl-C must not cut the cleanup short
            signal.signal(sig, signal.SIG_IGN)
        procs.stop_all()
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def busy_before(seconds: float = 2.0) -> float:
    """How busy the machine is before the benchmark starts, in % of all cores."""
    before = machine_ticks()
    time.sleep(seconds)
    busy, total = (a - b for a, b in zip(machine_ticks(), before, strict=True))
    return 100.0 * busy / max(total, 1)


def measure(args: argparse.Namespace, tmp: Path, procs: Processes) -> int:
    idle_check = busy_before()
    if idle_check > 15:
        print(
            f"WARNING: the machine is {idle_check:.0f}% busy before the benchmark starts: "
            "other load skews these figures (wrk, nginx and banfeed share the cores)",
            flush=True,
        )
    t0 = time.monotonic()
    banfeed_port, nginx_port = free_port(), free_port()
    while nginx_port == banfeed_port:
        nginx_port = free_port()

    # banfeed: config, store, 100,000 public addresses, serve
    db = tmp / "bench.db"
    cfg = tmp / "banfeed.toml"
    cfg.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n\n'
        f'[server]\nlisten = "127.0.0.1:{banfeed_port}"\n\n'
        '[retention]\nbase_ttl = "forever"\n\n'
        f'[[feeds]]\nname = "{FEED}"\n'
    )
    subprocess.run(
        [str(BANFEED), "--config", str(cfg), "db", "upgrade"],
        check=True,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )
    ips = public_ipv4(args.lines, args.seed)
    fill_store(f"sqlite:///{db}", ips, int(time.time()))
    print(f"store: {len(ips):,} offenders in {db} ({time.monotonic() - t0:.1f} s)", flush=True)

    env = dict(os.environ)
    paths = list(args.pythonpath)
    if args.uvloop:  # an experiment: banfeed's asyncio.run then makes a uvloop loop
        site = tmp / "uvloop-site"
        site.mkdir()
        (site / "sitecustomize.py").write_text(
            "import asyncio\n\nimport uvloop\n\n"
            "asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())\n"
        )
        paths.insert(0, str(site))
    if paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, env.get("PYTHONPATH", "")])
    stack: dict[str, Any] = uvicorn_stack(env)
    print(f"banfeed's environment: {stack}", flush=True)
    banfeed = procs.start(
        "banfeed serve", [str(BANFEED), "--config", str(cfg), "serve"], tmp / "banfeed.log", env
    )
    feed_path = f"/feeds/{FEED}.txt"
    wait_for_200(banfeed_port, feed_path, procs, timeout=90)
    stack.update(in_use(banfeed))
    print(f"banfeed serve uses: http {stack['http']}, loop {stack['loop']}", flush=True)
    status, headers, body = http_get(banfeed_port, feed_path)
    assert status == 200, status
    banfeed_etag = headers["etag"]
    lines = body.count(b"\n")
    if lines != args.lines:
        raise RuntimeError(f"banfeed serves {lines} lines, expected {args.lines}")

    # nginx: the identical bytes as a static file
    www = tmp / "www"
    www.mkdir(mode=0o755)
    (tmp / "nginx-tmp").mkdir()
    static = www / f"{FEED}.txt"
    static.write_bytes(body)
    static.chmod(0o644)
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_conf(tmp, nginx_port))
    nginx = procs.start(
        "nginx",
        ["nginx", "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-error.log")],
        tmp / "nginx.log",
    )
    static_path = f"/{FEED}.txt"
    wait_for_200(nginx_port, static_path, procs, timeout=30)
    n_status, n_headers, n_body = http_get(nginx_port, static_path)
    if n_body != body:
        raise RuntimeError("nginx and banfeed serve different bytes")
    nginx_etag = n_headers["etag"]
    digest = hashlib.sha256(body).hexdigest()[:16]
    print(
        f"identical bytes: banfeed {len(body):,} B, nginx {len(n_body):,} B, "
        f"{lines:,} lines, sha256 {digest}…",
        flush=True,
    )
    for port, path, etag in (
        (banfeed_port, feed_path, banfeed_etag),
        (nginx_port, static_path, nginx_etag),
    ):
        status, _, rest = http_get(port, path, {"If-None-Match": etag})
        if status != 304 or rest:
            raise RuntimeError(f"If-None-Match {etag} on :{port}{path}: {status}, {len(rest)} B")
    print(f"304 checked: banfeed ETag {banfeed_etag}, nginx ETag {nginx_etag}", flush=True)

    banfeed_url = f"http://127.0.0.1:{banfeed_port}{feed_path}"
    nginx_url = f"http://127.0.0.1:{nginx_port}{static_path}"
    results = [
        run_wrk(args, "nginx 200", nginx_url, nginx),
        run_wrk(args, "banfeed 200", banfeed_url, banfeed),
        run_wrk(args, "nginx 304", nginx_url, nginx, [f"If-None-Match: {nginx_etag}"]),
        run_wrk(args, "banfeed 304", banfeed_url, banfeed, [f"If-None-Match: {banfeed_etag}"]),
    ]
    procs.check_alive()
    by = {r.label: r for r in results}
    pairs = {
        "banfeed/nginx 200": ratios(by["banfeed 200"], by["nginx 200"]),
        "banfeed/nginx 304": ratios(by["banfeed 304"], by["nginx 304"]),
    }
    target = pairs["banfeed/nginx 200"]
    targets = {
        "rps_ratio_min": TARGET_RPS_RATIO,
        "p99_ratio_max": TARGET_P99_RATIO,
        "rps_met": target["rps"] >= TARGET_RPS_RATIO,
        "p99_met": target["p99"] <= TARGET_P99_RATIO,
    }

    profiles: dict[str, Profile] = {}
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        for label, extra in (("banfeed 200", []), ("banfeed 304", [banfeed_etag])):
            out = args.profile / f"py-spy-{label.replace(' ', '-')}.txt"
            with profiling(banfeed, out, args.seconds):
                inm = [f"If-None-Match: {e}" for e in extra]
                run_wrk(args, f"{label} (py-spy)", banfeed_url, banfeed, inm)
            if out.exists():
                profile = profiles[label] = summarize_raw_profile(out)
                print(f"\npy-spy, {label}: {out}, {profile.samples} samples")
                for title, rows in (
                    ("self time by component", profile.self_by_component),
                    ("self time by function", profile.self_by_function),
                    ("banfeed frames, inclusive", profile.inclusive_banfeed),
                ):
                    print(f"  -- {title}")
                    for name, share in rows:
                        print(f"  {share:5.1f}%  {name}")

    print_table(results, pairs)
    print(
        f"target (200): req/s >= {TARGET_RPS_RATIO}x nginx: "
        f"{'met' if targets['rps_met'] else 'MISSED'}; p99 <= {TARGET_P99_RATIO}x nginx: "
        f"{'met' if targets['p99_met'] else 'MISSED'}"
    )
    report = {
        "machine": {**machine(), "busy_before_pct": round(idle_check, 1)},
        "versions": {**version_lines(), **{f"banfeed {k}": v for k, v in stack.items()}},
        "nginx": {"worker_processes": "auto", "workers": os.cpu_count(), "sendfile": True},
        "wrk": " ".join(_quote(c) for c in wrk_command(args, "URL")),
        "feed": {"lines": lines, "bytes": len(body), "sha256": digest},
        "results": [asdict(r) for r in results],
        "ratios": pairs,
        "targets": targets,
        "profiles": {k: asdict(v) for k, v in profiles.items()},
        "wall_seconds": round(time.monotonic() - t0, 1),
    }
    text = json.dumps(report, indent=2)
    (tmp / "results.json").write_text(text)
    if args.json:
        args.json.write_text(text)
    print("\nJSON:\n" + text)
    missed = not (targets["rps_met"] and targets["p99_met"])
    return 1 if missed and args.fail_on_miss else 0


# -- the outside ---------------------------------------------------------------------------


def check_tools() -> list[str]:
    problems = []
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found: {INSTALL_HINT}")
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            problems.append(f"{tool} not found: apt-get install -y util-linux iproute2")
    if not BANFEED.exists():
        problems.append(
            f"{BANFEED} not found: python3.11 -m venv .venv && .venv/bin/pip install -e ."
        )
    if os.geteuid() != 0:
        problems.append("run as root: unshare -n (a network namespace of its own) needs it")
    return problems


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="banfeed feed serving vs nginx static file, side by side (wrk, loopback only)"
    )
    parser.add_argument("--seconds", type=int, default=15, help="per measurement (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 s per measurement (CI)")
    parser.add_argument("--threads", type=int, default=2, help="wrk -t (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk -c (default 32)")
    parser.add_argument("--lines", type=int, default=100_000, help="feed size (default 100000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, JSON)")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="py-spy banfeed during extra runs into DIR"
    )
    parser.add_argument(
        "--pythonpath",
        action="append",
        default=[],
        metavar="DIR",
        help="prepend DIR to banfeed serve's PYTHONPATH (e.g. pip install --target DIR httptools)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="experiment: banfeed serve on uvloop's event loop policy (via a sitecustomize); "
        "uvloop must be importable (see --pythonpath)",
    )
    parser.add_argument(
        "--fail-on-miss", action="store_true", help="exit 1 when banfeed misses a target (200)"
    )
    parser.add_argument("--in-netns", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.seconds = 3
    for name in ("json", "profile"):
        if getattr(args, name) is not None:
            setattr(args, name, getattr(args, name).resolve())
    args.pythonpath = [str(Path(p).resolve()) for p in args.pythonpath]
    return args


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _raise_on_signal(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def budget(args: argparse.Namespace) -> int:
    """Seconds the whole run may take before it is stopped (cleanly)."""
    seconds: int = args.seconds
    return 4 * seconds + 100 + (2 * seconds + 40 if args.profile else 0)


def in_namespace(argv: Sequence[str], limit: int) -> int:
    """Run this script again inside ``unshare -n``; pass stop signals on; wait for it."""
    cmd = ["unshare", "-n", "--", sys.executable, __file__, "--in-netns", *argv]
    child = subprocess.Popen(cmd)

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, forward)
    try:
        return child.wait(timeout=limit + 30)
    except subprocess.TimeoutExpired:
        print(f"gave up after {limit + 30} s", file=sys.stderr)
        child.terminate()  # its servers get SIGTERM too (PR_SET_PDEATHSIG)
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
        return 1


def main(argv: Sequence[str]) -> int:
    if Path(sys.prefix).resolve() != VENV.resolve():  # run with the project's venv
        python = VENV / "bin" / "python"
        if not python.exists():
            print(f"{python} not found: create the venv first", file=sys.stderr)
            return 2
        os.execv(python, [str(python), __file__, *argv])
    args = parse_args(argv)
    if not args.in_netns:
        problems = check_tools()
        if problems:
            print("\n".join(problems), file=sys.stderr)
            return 2
        return in_namespace(argv, budget(args))

    for sig in (*STOP_SIGNALS, signal.SIGALRM):
        signal.signal(sig, _raise_on_signal)
    signal.alarm(budget(args))
    return inner(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
