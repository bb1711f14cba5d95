#!/usr/bin/env python3
"""The dashboard's offenders search under concurrent users (issue 14 "Load", issue 12 bench).

    .venv/bin/python bench/search_load.py            # 1,000,000 offenders, 20 users, 30 s
    .venv/bin/python bench/search_load.py --quick    # 50,000 offenders, 5 users, 10 s (CI)
    .venv/bin/python bench/search_load.py --n 200000 --users 10 --seconds 20 --json out.json

Fills a SQLite store with N offenders (``tx.insert_offenders``, as bench/million.py does):
IPv4 addresses drawn from about 2N/65,536 /16s of 11.0.0.0/8 plus 2 % public IPv6 in 2a00::/12
(no traffic goes to any offender), five causes and twelve devices (two VDOMs each) with skewed
weights, offense counts with a long tail, last offenses over 30 days, about a third expired and
1 % unbanned. Adds an admin user with `banfeed user add` (password on stdin), starts `banfeed
serve` with ``[dashboard] enabled = true`` on 127.0.0.1 (a port of its own choosing) as a child
and waits for ``/readyz``.

Each simulated user signs in through the real flow (GET the login form: CSRF cookie and hidden
field; POST it with ``Origin``; a session cookie), then loops for the duration: it picks a query
kind at random (every kind equally likely) and sends it to ``GET /api/v1/offenders`` (one in
five to the HTML page ``/dashboard/offenders`` instead); after a page that has a ``next``, half
the time it follows the cursor for three more pages (kind ``cursor, sort=…``). Kinds: an address,
a containing /16 and /24, a cause, a device, ``state=active``, ``min_offenses=20``, and every
sortable column both ways (no other filter: the whole active set in that order).

Reports, per kind and overall: requests, errors (any status but 200, timeouts, connection
errors), p50 / p95 / p99 latency, mean rows per answer; requests/s over the run; the server's
RSS. Target (issue 12): p95 ≤ 300 ms overall with 1,000,000 offenders and 20 users — a figure,
exit status 0 unless there were errors. Only loopback traffic; no name but 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if Path(sys.executable).resolve() != (ROOT / ".venv/bin/python").resolve():
    os.execv(str(ROOT / ".venv/bin/python"), [str(ROOT / ".venv/bin/python"), *sys.argv])
sys.path.insert(0, str(ROOT / "src"))

import httpx  # noqa: E402

from banfeed.models import Offender, OffenderStatus  # noqa: E402
from banfeed.store import open_store  # noqa: E402

USER, PASSWORD = "bench-admin", "bench search password 0123"
CAUSES = (("IPS", 50), ("DoS", 25), ("AV", 12), ("APP", 8), ("DLP", 5))
DEVICES = tuple(f"fw-{i:02d}" for i in range(1, 13))
SORTS = ("ip", "last_offense", "first_offense", "offense_count")
HTML_SHARE = 0.2  # of the requests go to the page instead of the API
CURSOR_SHARE = 0.5  # of the answers with a `next` are followed for CURSOR_PAGES more pages
CURSOR_PAGES = 3
DAY = 86400


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# -- the store -----------------------------------------------------------------------------


def addresses(n: int, rng: random.Random) -> list[Any]:
    v6 = n // 50
    v4 = n - v6
    blocks = max(1, math.ceil(2 * v4 / 65536))
    base = int(IPv4Address("11.0.0.0"))
    found: list[Any] = [IPv4Address(base + o) for o in rng.sample(range(blocks * 65536), v4)]
    base6 = int(IPv6Address("2a00::"))
    found += [IPv6Address(base6 + (o << 64) + 1) for o in rng.sample(range(1 << 20), v6)]
    return found


def offenders(ips: list[Any], now: int, rng: random.Random) -> list[Offender]:
    causes, cause_weights = zip(*CAUSES, strict=True)
    device_weights = [1 / (i + 1) for i in range(len(DEVICES))]
    made = []
    for ip in ips:
        last = now - int(rng.random() * 30 * DAY)
        first = last - int(rng.expovariate(1 / (3 * DAY)))
        count = 1 + min(int(rng.expovariate(1 / 6)), 5000)
        picked = rng.choices(causes, cause_weights, k=2 if rng.random() < 0.1 else 1)
        device = rng.choices(DEVICES, device_weights)[0]
        vdom = f"{device}/{'root' if rng.random() < 0.8 else 'dmz'}"
        until = last + rng.choice((7 * DAY, 30 * DAY, 45 * DAY))
        status = OffenderStatus.UNBANNED if rng.random() < 0.01 else OffenderStatus.LISTED
        sources = tuple(dict.fromkeys(picked))
        made.append(Offender(ip, first, last, count, sources, (device,), (vdom,), until, status))
    return made


def fill(url: str, n: int, now: int, seed: int) -> list[Any]:
    rng = random.Random(seed)
    ips = addresses(n, rng)
    rows = offenders(ips, now, rng)
    store = open_store(url, create=True)
    try:
        with store.write() as tx:
            tx.insert_offenders(rows, now)
            tx.bump_version()
    finally:
        store.close()
    return ips


# -- the server ----------------------------------------------------------------------------


class Server:
    """`banfeed serve` as a child; ``url`` once it listens."""

    def __init__(self, config: Path, env: dict[str, str]) -> None:
        self.lines: list[str] = []
        argv = [sys.executable, "-m", "banfeed", "--config", str(config), "serve"]
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        threading.Thread(target=self._read, daemon=True).start()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := re.search(r"serving (http://127\.0\.0\.1:\d+)/feeds/", line):
                    self.url = found.group(1)
                    return
            if self.proc.poll() is not None:
                raise SystemExit("banfeed serve exited:\n" + "".join(self.lines))
            time.sleep(0.05)
        self.stop()
        raise SystemExit("banfeed serve did not start:\n" + "".join(self.lines[-20:]))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def rss_mib(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        found = re.search(r"VmRSS:\s+(\d+) kB", status)
        return int(found.group(1)) / 1024 if found else 0.0

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/readyz", timeout=10, trust_env=False).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise SystemExit("banfeed serve never became ready:\n" + "".join(self.lines[-20:]))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- the queries ---------------------------------------------------------------------------


class Queries:
    """Parameters of each first-page kind, drawn from the store's own addresses."""

    def __init__(self, ips: list[Any], rng: random.Random, skip: str | None = None) -> None:
        self.v4 = [ip for ip in ips if ip.version == 4]
        self.all = ips
        self.rng = rng
        self.kinds: dict[str, Any] = {
            "address": lambda: {"q": str(rng.choice(self.all))},
            "network /16": lambda: {"q": str(ip_network(f"{rng.choice(self.v4)}/16", False))},
            "network /24": lambda: {"q": str(ip_network(f"{rng.choice(self.v4)}/24", False))},
            "cause": lambda: {"cause": rng.choices(*zip(*CAUSES, strict=True))[0]},
            "device": lambda: {"device": rng.choice(DEVICES)},
            "state=active": lambda: {"state": "active"},
            "min_offenses=20": lambda: {"min_offenses": "20"},
        }
        for column in SORTS:
            for sign in ("", "-"):
                self.kinds[f"sort={sign}{column}"] = lambda s=sign + column: {"sort": s}
        if skip:
            self.kinds = {k: v for k, v in self.kinds.items() if not re.search(skip, k)}

    def pick(self) -> tuple[str, dict[str, str]]:
        kind = self.rng.choice(list(self.kinds))
        return kind, self.kinds[kind]()


def check(kind: str, params: dict[str, str], rows: list[dict[str, Any]]) -> str | None:
    """What is wrong with an answer's rows for its query, if anything."""
    q = params.get("q")
    if kind == "address" and q and [r["ip"] for r in rows] not in ([q], []):
        return f"address {q}: {[r['ip'] for r in rows][:3]}"
    if q and "/" in q:
        net = ip_network(q)
        if any(ip_address(r["ip"]) not in net for r in rows):
            return f"a row outside {q}"
    return None


class Recorder:
    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.rows: dict[str, list[int]] = defaultdict(list)
        self.errors: dict[str, int] = defaultdict(int)
        self.samples: list[str] = []
        self.first = self.last = 0.0

    def ok(self, kind: str, seconds: float, rows: int) -> None:
        self.times[kind].append(seconds)
        self.rows[kind].append(rows)
        self.last = time.perf_counter()

    def fail(self, kind: str, why: str) -> None:
        self.errors[kind] += 1
        self.last = time.perf_counter()
        if len(self.samples) < 10:
            self.samples.append(f"{kind}: {why}")


def sign_in_csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    if not found:
        raise SystemExit("no CSRF field in the sign-in form")
    return found.group(1)


async def sign_in(client: httpx.AsyncClient, base: str) -> None:
    form = await client.get("/dashboard/login")
    form.raise_for_status()
    fields = {"csrf": sign_in_csrf(form.text), "username": USER, "password": PASSWORD, "next": ""}
    answer = await client.post("/dashboard/login", data=fields, headers={"Origin": base})
    if answer.status_code != 303:
        raise SystemExit(f"sign-in: {answer.status_code} {answer.text[:200]}")
    me = await client.get("/api/v1/me")
    if me.status_code != 200 or me.json().get("user") != USER:
        raise SystemExit(f"/api/v1/me after sign-in: {me.status_code} {me.text[:200]}")


async def one(
    client: httpx.AsyncClient, rec: Recorder, kind: str, params: dict[str, str], html: bool
) -> str | None:
    """One search; the `next` cursor of an API answer (None for the page or the last page)."""
    path = "/dashboard/offenders" if html else "/api/v1/offenders"
    label = f"{kind} (page)" if html else kind
    start = time.perf_counter()
    try:
        answer = await client.get(path, params=params)
    except httpx.HTTPError as exc:
        rec.fail(label, f"{type(exc).__name__}: {exc}")
        return None
    seconds = time.perf_counter() - start
    if answer.status_code != 200:
        rec.fail(label, f"{answer.status_code} {answer.text[:200]}")
        return None
    if html:
        rec.ok(label, seconds, answer.text.count("/dashboard/offenders/"))
        return None
    body = answer.json()
    rows = body["offenders"]
    if problem := check(kind, params, rows):
        rec.fail(label, problem)
        return None
    rec.ok(label, seconds, len(rows))
    nxt: str | None = body["next"]
    return nxt


async def user(base: str, queries: Queries, rec: Recorder, deadline: float, seed: int) -> None:
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=1)
    async with httpx.AsyncClient(
        base_url=base, timeout=120, trust_env=False, limits=limits
    ) as client:
        await sign_in(client, base)
        while time.perf_counter() < deadline:
            kind, params = queries.pick()
            html = rng.random() < HTML_SHARE
            nxt = await one(client, rec, kind, params, html)
            if nxt is None or rng.random() >= CURSOR_SHARE:
                continue
            sort = params.get("sort", "ip").lstrip("-")
            for _ in range(CURSOR_PAGES):
                if nxt is None or time.perf_counter() >= deadline:
                    break
                nxt = await one(
                    client, rec, f"cursor, sort={sort}", {**params, "cursor": nxt}, False
                )


async def warm(base: str, queries: Queries) -> None:
    """Each kind once, one at a time (not counted): the page cache warm, as in daily use."""
    async with httpx.AsyncClient(base_url=base, timeout=300, trust_env=False) as client:
        await sign_in(client, base)
        for make in queries.kinds.values():
            (await client.get("/api/v1/offenders", params=make())).raise_for_status()


async def drive(base: str, queries: Queries, users: int, seconds: float) -> Recorder:
    rec = Recorder()
    await warm(base, queries)
    rec.first = time.perf_counter()
    deadline = rec.first + seconds
    await asyncio.gather(*(user(base, queries, rec, deadline, 1000 + i) for i in range(users)))
    return rec


# -- figures -------------------------------------------------------------------------------


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def summary(times: list[float], rows: list[int], errors: int, elapsed: float) -> dict[str, Any]:
    ms = [t * 1000 for t in times]
    return {
        "requests": len(times) + errors,
        "errors": errors,
        "requests_per_s": round((len(times) + errors) / elapsed, 2),
        "p50_ms": round(percentile(ms, 50), 1),
        "p95_ms": round(percentile(ms, 95), 1),
        "p99_ms": round(percentile(ms, 99), 1),
        "max_ms": round(max(ms), 1) if ms else float("nan"),
        "mean_rows": round(statistics.fmean(rows), 1) if rows else 0.0,
    }


def figures(rec: Recorder) -> dict[str, Any]:
    elapsed = rec.last - rec.first
    kinds = sorted(set(rec.times) | set(rec.errors))
    every = [t for k in kinds for t in rec.times[k]]
    rows = [r for k in kinds for r in rec.rows[k]]
    api = [k for k in kinds if not k.endswith("(page)")]
    return {
        "elapsed_s": round(elapsed, 1),
        "kinds": {k: summary(rec.times[k], rec.rows[k], rec.errors[k], elapsed) for k in kinds},
        "api": summary(
            [t for k in api for t in rec.times[k]],
            [r for k in api for r in rec.rows[k]],
            sum(rec.errors[k] for k in api),
            elapsed,
        ),
        "page": summary(
            [t for k in kinds if k not in api for t in rec.times[k]],
            [r for k in kinds if k not in api for r in rec.rows[k]],
            sum(rec.errors[k] for k in kinds if k not in api),
            elapsed,
        ),
        "overall": summary(every, rows, sum(rec.errors.values()), elapsed),
        "error_samples": rec.samples,
    }


def table(found: dict[str, Any]) -> str:
    head = f"{'kind':<32} {'req':>6} {'err':>4} {'req/s':>7} {'p50':>8} {'p95':>8} {'p99':>8} "
    head += f"{'max':>8} {'rows':>5}"
    lines = [head, "-" * len(head)]

    def line(name: str, s: dict[str, Any]) -> str:
        return (
            f"{name:<32} {s['requests']:>6} {s['errors']:>4} {s['requests_per_s']:>7.1f} "
            f"{s['p50_ms']:>8.1f} {s['p95_ms']:>8.1f} {s['p99_ms']:>8.1f} {s['max_ms']:>8.1f} "
            f"{s['mean_rows']:>5.1f}"
        )

    lines += [line(k, s) for k, s in found["kinds"].items()]
    lines.append("-" * len(head))
    lines += [line(k, found[k]) for k in ("api", "page", "overall")]
    return "\n".join(lines) + "\n(latencies in ms; rows: mean rows per answer)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="50,000 offenders, 5 users, 10 s")
    parser.add_argument("--n", type=int, help="offenders (default 1,000,000)")
    parser.add_argument("--users", type=int, help="concurrent users (default 20)")
    parser.add_argument("--seconds", type=float, help="duration of the load (default 30)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--skip", help="leave out the kinds whose name matches this regex")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    n = args.n or (50_000 if args.quick else 1_000_000)
    users = args.users or (5 if args.quick else 20)
    seconds = args.seconds or (10.0 if args.quick else 30.0)
    work = Path(tempfile.mkdtemp(prefix="banfeed-search-load-"))
    db = work / "banfeed.db"
    now = int(time.time())
    start = time.perf_counter()
    ips = fill(f"sqlite:///{db}", n, now, args.seed)
    filled_s = time.perf_counter() - start
    log(f"store filled with {n:,} offenders in {filled_s:.1f} s ({db.stat().st_size >> 20} MiB)")
    config = work / "banfeed.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{db}"\n[server]\nlisten = "127.0.0.1:0"\n'
        '[[feeds]]\nname = "all"\n[dashboard]\nenabled = true\n',
        encoding="utf-8",
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "NO_PROXY": "*"}
    add = [sys.executable, "-m", "banfeed", "--config", str(config), "user", "add", USER]
    done = subprocess.run(
        [*add, "--role", "admin"], input=PASSWORD + "\n", text=True, capture_output=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"banfeed user add: {done.stdout}{done.stderr}")
    server = Server(config, env)
    try:
        server.wait_ready(300)
        log(f"banfeed serve ready at {server.url} (RSS {server.rss_mib():.0f} MiB)")
        queries = Queries(ips, random.Random(args.seed + 1), args.skip)
        rss_before = server.rss_mib()
        log(f"load: {users} users for {seconds:.0f} s")
        rec = asyncio.run(drive(server.url, queries, users, seconds))
        found = figures(rec)
        found |= {
            "offenders": n,
            "users": users,
            "seconds": seconds,
            "fill_s": round(filled_s, 1),
            "server_rss_mib": [round(rss_before, 1), round(server.rss_mib(), 1)],
            "skipped": args.skip,
            "target_p95_ms": 300,
        }
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    print(table(found))
    overall = found["overall"]
    log(
        f"{n:,} offenders, {users} users: {overall['requests']} requests in "
        f"{found['elapsed_s']} s ({overall['requests_per_s']} req/s), {overall['errors']} errors; "
        f"p50 {overall['p50_ms']} ms, p95 {overall['p95_ms']} ms, p99 {overall['p99_ms']} ms "
        f"(target p95 <= 300 ms); server RSS {found['server_rss_mib'][0]} -> "
        f"{found['server_rss_mib'][1]} MiB"
    )
    for sample in found["error_samples"]:
        log(f"error: {sample}")
    if args.json:
        args.json.write_text(json.dumps(found, indent=2) + "\n", encoding="utf-8")
    return 1 if overall["errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
