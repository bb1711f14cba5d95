#!/usr/bin/env python3
"""A million offenders: feed builds side by side with iprange, and what a republish costs.

    bench/million.py            # N = 1,000,000 (about 2 minutes here, most of it filling the store)
    bench/million.py --quick    # N = 100,000 (CI)
    bench/million.py --n 200000 --json out.json

Run as root from the repo root (iprange runs in a network namespace of its own, `unshare -n`).

- **Aggregated feed vs iprange** (issue 11, target 1). N distinct IPv4 addresses drawn from
  about 2N/65,536 /16s of 11.0.0.0/8 go into a SQLite store as offenders. banfeed builds
  ``FeedSpec(aggregate=True, family=ipv4)`` and renders its text two ways: *from the store*
  (read the active offenders' narrow columns, build, render: what ``banfeed export`` does) and
  *kept* (build and render from the active set a daemon keeps in memory). iprange reads the same
  addresses as text. Every line of iprange's input is checked to be IPv4 text first; the CIDRs of
  banfeed, iprange and ``collapse_addresses`` are checked equal.
- **Republish after a cycle** (target 2). A ``Publisher`` with three feeds (every offender, the
  aggregated IPv4 feed, IPS only) publishes once from a fresh start (the full build: read
  whole, build, guard, record), then 1,000 new offenders are written in one transaction, and it
  publishes again (the kept set brought up to date by the rows stamped since its version). The
  two are timed in the same process, in the same run.

Figures are medians of ``--repeats`` (3) runs, in seconds of wall-clock time inside the process.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address, IPv4Network, collapse_addresses, ip_network
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if Path(sys.executable).resolve() != (ROOT / ".venv/bin/python").resolve():
    os.execv(str(ROOT / ".venv/bin/python"), [str(ROOT / ".venv/bin/python"), *sys.argv])
sys.path.insert(0, str(ROOT / "src"))

from banfeed.models import Family, Offender, OffenderStatus  # noqa: E402
from banfeed.policy import PrefixGuard, build_allowlist  # noqa: E402
from banfeed.publish import FeedPolicy, FeedSpec, Publisher  # noqa: E402
from banfeed.publish.build import build_feeds  # noqa: E402
from banfeed.publish.inputs import read_inputs  # noqa: E402
from banfeed.store import open_store  # noqa: E402

BIG = 10_000_000  # max_entries: every address is published, as iprange publishes them all


def dense_ipv4(n: int, seed: int) -> list[int]:
    blocks = max(1, math.ceil(2 * n / 65536))
    base = int(IPv4Address("11.0.0.0"))
    return [base + o for o in random.Random(seed).sample(range(blocks * 65536), n)]


def offenders(values: list[int], now: int, source: str = "IPS") -> list[Offender]:
    return [
        Offender(
            IPv4Address(v),
            now,
            now,
            1,
            (source,),
            ("fw",),
            ("fw/root",),
            now + 86400 * 30,
            OffenderStatus.LISTED,
        )
        for v in values
    ]


def timed(work: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def iprange(source: Path, out: Path, repeats: int) -> float:
    script = (
        "ip link set lo up\n"
        f"for i in $(seq {repeats}); do s=$EPOCHREALTIME; iprange {source} > {out}; "
        'e=$EPOCHREALTIME; echo "$s $e"; done'
    )
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, check=True
    )
    return statistics.median(
        float(e) - float(s) for s, e in (x.split() for x in done.stdout.splitlines())
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 100,000")
    parser.add_argument("--n", type=int, help="number of offenders (default 1,000,000)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures here")
    args = parser.parse_args()
    n = args.n or (100_000 if args.quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="banfeed-million-"))
    now = int(time.time())
    values = dense_ipv4(n, 11)
    source = work / "addresses.txt"
    source.write_text("".join(f"{IPv4Address(v)}\n" for v in values), encoding="ascii")
    with source.open(encoding="ascii") as handle:  # only validated IPv4 text reaches iprange
        assert all(str(IPv4Address(line.rstrip("\n"))) == line.rstrip("\n") for line in handle)
    store = open_store(f"sqlite:///{work / 'banfeed.db'}", create=True)
    start = time.perf_counter()
    with store.write() as tx:
        tx.insert_offenders(offenders(values, now), now)
    print(f"store filled with {n:,} offenders in {time.perf_counter() - start:.1f} s", flush=True)

    policy = FeedPolicy(build_allowlist([]), PrefixGuard(16, 48))
    spec = FeedSpec("aggregated", family=Family.IPV4, aggregate=True, max_entries=BIG)
    figures: dict[str, Any] = {"n": n}

    # -- target 1: aggregated feed vs iprange -------------------------------------------------
    def from_store() -> bytes:  # what `banfeed export` does in a new process
        with store.read() as tx:
            return build_feeds([spec], policy, read_inputs(tx, now))[spec.name].text()

    def full_read() -> bytes:  # the same on a store with no saved active set (the first time)
        with sqlite3.connect(work / "banfeed.db") as conn:
            conn.execute("DELETE FROM active_snapshots")
        return from_store()

    full_s, _ = timed(full_read, args.repeats)
    Publisher(store, [spec], policy, lambda: float(now)).publish()  # saves the active set

    with store.read() as tx:
        kept = read_inputs(tx, now)

    def from_kept() -> bytes:
        return build_feeds([spec], policy, kept)[spec.name].text()

    def read_only() -> int:
        with store.read() as tx:
            return len(read_inputs(tx, now).active)

    store_s, body = timed(from_store, args.repeats)
    kept_s, body_kept = timed(from_kept, args.repeats)
    read_s, _ = timed(read_only, args.repeats)
    theirs = work / "iprange.txt"
    iprange_s = iprange(source, theirs, args.repeats)
    mine = [ip_network(x) for x in body.decode().split()]
    other = [ip_network(x) for x in theirs.read_text().split()]
    expected = list(collapse_addresses(IPv4Network(v) for v in values))
    assert body == body_kept and sorted(mine) == sorted(other) == expected, "CIDRs differ"
    figures["aggregated"] = {
        "cidrs": len(other),
        "from_store_s": store_s,
        "full_read_s": full_s,
        "read_s": read_s,
        "kept_s": kept_s,
        "iprange_s": iprange_s,
        "from_store_ratio": store_s / iprange_s,
        "kept_ratio": kept_s / iprange_s,
    }
    print(
        f"target 1, aggregated feed of {n:,} -> {len(other):,} CIDRs (identical to iprange's):\n"
        f"  from the store {store_s:.3f} s (of which reading {read_s:.3f} s; with no saved set, "
        f"a full read: {full_s:.3f} s), kept set {kept_s:.3f} s, iprange {iprange_s:.3f} s: "
        f"ratios {store_s / iprange_s:.2f}x, full read {full_s / iprange_s:.2f}x, kept "
        f"{kept_s / iprange_s:.2f}x (target <= 2x)",
        flush=True,
    )

    # -- target 2: republish after a cycle that adds 1,000 offenders ---------------------------
    specs = [
        FeedSpec("all", max_entries=BIG),
        spec,
        FeedSpec("ips", causes=frozenset({"ips"}), max_entries=BIG),
    ]
    full_times, incremental_times = [], []
    taken = set(values)
    spare = [v for v in range(int(IPv4Address("12.0.0.0")), int(IPv4Address("13.0.0.0")), 7)]
    spare = [v for v in spare if v not in taken]
    for round_ in range(args.repeats):
        publisher = Publisher(store, specs, policy, lambda: float(now))
        with sqlite3.connect(work / "banfeed.db") as conn:
            conn.execute("DELETE FROM active_snapshots")
        start = time.perf_counter()
        publisher.publish()  # from scratch: reads every active offender, builds, guards, records
        full_times.append(time.perf_counter() - start)
        added = spare[round_ * 1000 : (round_ + 1) * 1000]
        with store.write() as tx:
            tx.insert_offenders(offenders(added, now, "DoS"), now)
        start = time.perf_counter()
        results = publisher.publish()
        incremental_times.append(time.perf_counter() - start)
        assert all(r.version is not None and r.version.added >= 1 for r in results[:1])
    full, incremental = statistics.median(full_times), statistics.median(incremental_times)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures["peak_rss_mib"] = peak
    figures["republish"] = {
        "feeds": len(specs),
        "full_s": full,
        "after_1000_new_s": incremental,
        "ratio": incremental / full,
    }
    print(
        f"target 2, three feeds over {n:,} offenders: full publish {full:.3f} s, after a cycle "
        f"adding 1,000: {incremental:.3f} s = {incremental / full:.1%} of a full build "
        "(target <= 5% and <= 0.25 s)",
        flush=True,
    )
    print(
        f"peak RSS of this process (the store, the kept set, three feeds built and recorded): "
        f"{peak:,.0f} MiB",
        flush=True,
    )
    store.close()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
