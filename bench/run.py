#!/usr/bin/env python3
"""banfeed at fleet scale, every figure a ratio against its anchor measured in the same run.

    bench/run.py            # the full suite (N = 10,000 / 100,000 / 1,000,000; 200 x 5,000)
    bench/run.py --quick    # CI: N = 20,000, 20 devices x 500, T5 with --quick (< 2 minutes)

Targets (banfeed vs its anchor, same input, same run):

- T1 first ingest of N new entries from one device to a written plain feed (collect cycle into
  a fresh SQLite store + build/render/write the feed) vs the old cron way: <= 2x its time.
- T2 one fleet cycle, D devices x E entries, 50 ms per answer: banfeed (concurrent) vs the old
  way (device after device): >= 10x faster. Measured cold (empty store / empty list), with
  churn (1% of each device's entries replaced) and unchanged (same answers again).
- T3 steady state, N known entries, nothing new: banfeed's cycle (must write 0 offense and
  offender rows) vs httpx GET + json.loads of the same answers at the same concurrency:
  <= 1.5x. Also, without a target, a cycle whose answer changed (one entry gone) but holds
  nothing new: the path that parses instead of matching the fingerprint.
- T4 an aggregated (lossless CIDR) feed of N IPv4 offenders from a few /16s, built from the
  store and rendered, vs iprange aggregating the same addresses from text: <= 2x its time.
  Both outputs must cover exactly the same addresses.
- T5 feed serving vs nginx: bench/serve_vs_nginx.py (run if present; --quick passed through).
- T6 peak RSS of the N-entry first-ingest cycle vs the old way's peak (max over its processes,
  python + requests and sort): <= the old way's.

Inputs come from banfeed's simulator (captured once per device, replayed byte for byte by
bench/replay.py to both sides); the old way is bench/oldway.py. Only 127.0.0.1 is contacted;
iprange runs in a network namespace with loopback only. Where a target is missed, banfeed's
side is profiled (pyinstrument; tracemalloc for memory) and the top hot spots are printed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network, collapse_addresses, ip_address, ip_network
from pathlib import Path
from typing import Any

_VENV = Path(__file__).resolve().parent.parent / ".venv"
if Path(sys.prefix).resolve() != _VENV.resolve() and __name__ == "__main__":
    # Run with the project's venv (banfeed, httpx, requests), as `bench/run.py` from anywhere.
    if not (_VENV / "bin" / "python").exists():
        raise SystemExit(f"{_VENV} not found: create the venv first (scripts/setup)")
    os.execv(_VENV / "bin" / "python", [str(_VENV / "bin" / "python"), __file__, *sys.argv[1:]])
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BENCH,
    PYTHON,
    TOKEN,
    BanfeedSide,
    OldRun,
    OldWay,
    Replay,
    capture,
    check_tools,
    log,
    machine,
    make_fleet,
    median,
    mib,
    netns,
    versions,
)

LATENCY = 0.05  # seconds per answer in T2
CONCURRENCY = 16  # banfeed's default [collect] concurrency, used for banfeed and its anchors
GOALS = {
    "T1": ("<= 2x the old way's time", 2.0),
    "T2": (">= 10x faster than the old way", 10.0),
    "T3": ("<= 1.5x fetch + json.loads", 1.5),
    "T4": ("<= 2x iprange's time", 2.0),
    "T6": ("<= the old way's peak RSS", 1.0),
}


@dataclass
class Row:
    target: str
    what: str
    size: str
    banfeed: float
    anchor: float
    unit: str
    ratio: float  # banfeed / anchor; for T2 the speed-up, anchor / banfeed
    goal: str
    met: bool | None  # None: reported without a target
    note: str = ""


@dataclass
class Suite:
    args: argparse.Namespace
    work: Path
    rows: list[Row] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    profiles: dict[str, Any] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        verdict = "" if row.met is None else ("  met" if row.met else "  MISSED")
        unit = row.unit
        log(
            f"  {row.target} {row.what} [{row.size}]: banfeed {row.banfeed:.3f} {unit}, "
            f"anchor {row.anchor:.3f} {unit}, ratio {row.ratio:.2f}x{verdict}"
            + (f" ({row.note})" if row.note else "")
        )

    def check(self, ok: bool, text: str) -> None:
        self.checks.append(("ok: " if ok else "FAILED: ") + text)
        log(("  check ok: " if ok else "  CHECK FAILED: ") + text)
        if not ok:
            raise SystemExit(f"consistency check failed: {text}")


def slower(target: str, banfeed: float, anchor: float) -> tuple[float, bool]:
    ratio = banfeed / anchor
    return ratio, ratio <= GOALS[target][1]


def fmt_n(n: int) -> str:
    return f"N={n:,}"


# -- T1, T3, T6: one device with N entries ---------------------------------------------------


def feed_set(path: Path) -> set[str]:
    """A feed's lines, canonical (the old way publishes IPv6 as FortiOS spells it, exploded)."""
    with path.open(encoding="ascii") as handle:
        return {str(ip_address(line.strip())) for line in handle if line.strip()}


def single_device(suite: Suite, n: int) -> None:
    args, work = suite.args, suite.work / f"single-{n}"
    log(f"\n== T1/T3/T6, one device, {n:,} entries")
    t = time.perf_counter()
    fleet = make_fleet(1, n, args.seed)
    folder = work / "replay"
    size = capture(fleet, folder, "base")["fw"]
    device = fleet.devices["fw"]
    device.remove("root", device.vdoms["root"][0].ip)  # the answer changes, nothing new
    capture(fleet, folder, "changed")
    del fleet, device
    base_sha = hashlib.sha256((folder / "fw.base.json").read_bytes()).hexdigest()
    log(f"  input: {n:,} entries, {size / 1e6:.1f} MB of JSON ({time.perf_counter() - t:.1f} s)")
    reps = 1 if n >= 1_000_000 else args.repeats
    steady_reps = 3 if n >= 1_000_000 else 5
    old_runs: list[OldRun] = []
    ingest: list[dict[str, Any]] = []
    exports: list[dict[str, Any]] = []
    with Replay(folder) as replay:
        urls = list(replay.urls.values())
        devices = [[name, url] for name, url in replay.urls.items()]
        for i in range(reps):
            old = OldWay(work / f"old-{i}")
            old_runs.append(old.run(urls))
            with BanfeedSide(work) as side:
                opened = side.call(
                    "open",
                    db=str(work / f"banfeed-{i}.db"),
                    devices=devices,
                    token=TOKEN,
                    concurrency=CONCURRENCY,
                )
                cycle = side.call("cycle")
                ingest.append(cycle)
                feed = work / f"feed-{i}.txt"
                exports.append(side.call("export", out=str(feed)))
                if i == 0:
                    suite.check(
                        cycle["written"]["offenses"] == n and cycle["written"]["offenders"] == n,
                        f"N={n:,}: first cycle stored {cycle['written']}",
                    )
                    fp = side.call("fingerprints")["fingerprints"]["fw"]
                    suite.check(fp == base_sha, "banfeed read the captured bytes (sha256 equal)")
                    same = feed_set(feed) == feed_set(old.feed)
                    suite.check(same, f"N={n:,}: banfeed's feed and the old way's list are equal")
                    steady(suite, n, side, replay, steady_reps, opened)
        old_rss = OldWay(work / "old-rss").run(urls, rss=True)

    old_t = median([r.seconds for r in old_runs])
    ban_t = median([c["seconds"] + e["seconds"] for c, e in zip(ingest, exports, strict=True)])
    ratio, met = slower("T1", ban_t, old_t)
    cyc = median([c["seconds"] for c in ingest])
    exp = median([e["seconds"] for e in exports])
    note = (
        f"cycle {cyc:.2f} s + export {exp:.2f} s; old way's whole process "
        f"{median([r.process_seconds for r in old_runs]):.2f} s, banfeed's imports "
        f"{opened['import_seconds']:.2f} s; median of {reps}"
    )
    suite.add(
        Row(
            "T1",
            "first ingest -> plain feed",
            fmt_n(n),
            ban_t,
            old_t,
            "s",
            ratio,
            GOALS["T1"][0],
            met,
            note,
        )
    )
    peak_ban = ingest[0]["peak_kib"]
    peak_old = max(old_rss.python_peak_kib, old_rss.tree_peak_kib, *old_rss.child_peak_kib.values())
    sort_peak = max(old_rss.child_peak_kib.get("sort", 0), 1)
    ratio, met = slower("T6", peak_ban, peak_old)
    note = (
        f"old way: python+requests {mib(old_rss.python_peak_kib):.0f} MiB, sort "
        f"{mib(sort_peak):.0f} MiB, whole tree {mib(old_rss.tree_peak_kib):.0f} MiB; "
        f"banfeed after export {mib(exports[0]['peak_kib']):.0f} MiB, "
        f"idle after imports {mib(opened['peak_kib']):.0f} MiB"
    )
    suite.add(
        Row(
            "T6",
            "peak RSS, first ingest cycle",
            fmt_n(n),
            mib(peak_ban),
            mib(peak_old),
            "MiB",
            ratio,
            GOALS["T6"][0],
            met,
            note,
        )
    )
    suite.raw[f"single-{n}"] = {
        "json_bytes": size,
        "old_runs": [asdict(r) for r in old_runs],
        "old_rss": asdict(old_rss),
        "ingest": ingest,
        "export": exports,
        "opened": opened,
    }


def steady(
    suite: Suite, n: int, side: BanfeedSide, replay: Replay, reps: int, opened: dict[str, Any]
) -> None:
    """T3 on the store the first cycle filled: unchanged answers, then changed ones."""
    fetches, cycles = [], []
    for _ in range(reps):
        fetches.append(side.call("fetch"))
        cycles.append(side.call("cycle"))
    written = [c["written"] for c in cycles]
    zero = all(w["offenses"] == 0 and w["offenders"] == 0 for w in written)
    suite.check(
        zero and all(c["unchanged"] == 1 for c in cycles),
        f"N={n:,}: unchanged cycles wrote {written[0]} and matched the fingerprint",
    )
    ban, anchor = median([c["seconds"] for c in cycles]), median([f["seconds"] for f in fetches])
    ratio, met = slower("T3", ban, anchor)
    suite.add(
        Row(
            "T3",
            "steady cycle, same answer",
            fmt_n(n),
            ban,
            anchor,
            "s",
            ratio,
            GOALS["T3"][0],
            met,
            f"0 offense/offender rows written; one device, so sequential = concurrent; "
            f"median of {reps}",
        )
    )
    fetches, cycles = [], []
    reps = 1 if n >= 1_000_000 else reps  # ~20 s a cycle at 1M: once is enough
    for i in range(reps):
        replay.variant("changed" if i % 2 == 0 else "base")
        fetches.append(side.call("fetch"))
        cycles.append(side.call("cycle"))
    replay.variant("base")
    written = [c["written"] for c in cycles]
    zero = all(w["offenses"] == 0 and w["offenders"] == 0 for w in written)
    suite.check(
        zero and all(c["unchanged"] == 0 for c in cycles),
        f"N={n:,}: changed-answer cycles parsed and wrote {written[0]}",
    )
    ban, anchor = median([c["seconds"] for c in cycles]), median([f["seconds"] for f in fetches])
    suite.add(
        Row(
            "T3",
            "steady cycle, answer changed, nothing new",
            fmt_n(n),
            ban,
            anchor,
            "s",
            ban / anchor,
            "no target",
            None,
            f"one entry removed/restored in turn; 0 rows written; median of {reps}",
        )
    )
    suite.raw[f"steady-{n}"] = {"unchanged_written": written}


# -- T4: aggregation vs iprange --------------------------------------------------------------


def dense_ipv4(n: int, seed: int) -> tuple[list[str], int]:
    """``n`` distinct public IPv4 addresses from about 2n/65,536 /16s inside 11.0.0.0/8."""
    blocks = max(1, math.ceil(2 * n / 65536))
    if blocks > 256:
        raise SystemExit("T4: at most 8,388,608 addresses (256 /16s of 11.0.0.0/8)")
    base = int(IPv4Address("11.0.0.0"))
    offsets = random.Random(seed).sample(range(blocks * 65536), n)
    return [str(IPv4Address(base + o)) for o in offsets], blocks


def networks_of(path: Path) -> list[Any]:
    with path.open(encoding="ascii") as handle:
        return [ip_network(line.strip()) for line in handle if line.strip()]


def aggregation(suite: Suite, n: int) -> None:
    args, work = suite.args, suite.work / f"agg-{n}"
    work.mkdir(parents=True)
    log(f"\n== T4, aggregated feed of {n:,} IPv4 offenders vs iprange")
    ips, blocks = dense_ipv4(n, args.seed)
    source = work / "addresses.txt"
    source.write_text("".join(f"{ip}\n" for ip in ips), encoding="ascii")
    # Only validated IPv4 text reaches iprange: every line must round-trip through IPv4Address.
    with source.open(encoding="ascii") as handle:
        valid = all(str(IPv4Address(line.rstrip("\n"))) == line.rstrip("\n") for line in handle)
    suite.check(valid, f"N={n:,}: iprange's input is validated IPv4 text ({blocks} /16s)")
    reps = 1 if n >= 1_000_000 else args.repeats  # ~55 s a build at 1M: once is enough
    ours = work / "banfeed.txt"
    with BanfeedSide(work) as side:
        side.call(
            "open", db=str(work / "banfeed.db"), devices=[], token=TOKEN, concurrency=CONCURRENCY
        )
        side.call("fill", ips=str(source))
        runs = [side.call("aggfeed", out=str(ours)) for _ in range(reps)]
    theirs = work / "iprange.txt"
    script = (
        f"for i in $(seq {reps}); do s=$EPOCHREALTIME; iprange {source} > {theirs}; "
        'e=$EPOCHREALTIME; echo "$s $e"; done'
    )
    stamps = [line.split() for line in netns(script).splitlines()]
    ip_times = [float(e) - float(s) for s, e in stamps]
    mine, other = networks_of(ours), networks_of(theirs)
    expected = list(collapse_addresses(IPv4Network(ip) for ip in ips))
    suite.check(
        sorted(mine) == sorted(other) == expected,
        f"N={n:,}: banfeed and iprange give the same {len(other):,} CIDRs (= collapse of input)",
    )
    ban, anchor = median([r["seconds"] for r in runs]), median(ip_times)
    ratio, met = slower("T4", ban, anchor)
    suite.add(
        Row(
            "T4",
            "aggregated feed vs iprange",
            fmt_n(n),
            ban,
            anchor,
            "s",
            ratio,
            GOALS["T4"][0],
            met,
            f"{n:,} addresses in {blocks} /16s -> {len(other):,} CIDRs; median of {reps}",
        )
    )
    suite.raw[f"agg-{n}"] = {"banfeed": runs, "iprange": ip_times, "cidrs": len(other)}


# -- T2: the fleet ---------------------------------------------------------------------------


def churn(fleet: Any, share: float) -> int:
    """Replace ``share`` of each device's entries by new ones; the number replaced per device."""
    replaced = 0
    for device in fleet.devices.values():
        entries = device.vdoms["root"]
        k = max(1, int(len(entries) * share))
        device.vdoms["root"] = entries[k:]
        device.populate("root", k, ttl=None)
        replaced = k
    return replaced


def fleet_cycle(suite: Suite, count: int, entries: int) -> None:
    args, work = suite.args, suite.work / "fleet"
    size = f"{count} x {entries:,}"
    log(f"\n== T2, fleet of {count} devices x {entries:,} entries, {LATENCY * 1000:.0f} ms/answer")
    t = time.perf_counter()
    fleet = make_fleet(count, entries, args.seed)
    folder = work / "replay"
    capture(fleet, folder, "base")
    replaced = churn(fleet, 0.01)
    capture(fleet, folder, "churn")
    del fleet
    log(f"  input captured ({time.perf_counter() - t:.1f} s); churn: {replaced} per device")
    results: dict[str, Any] = {}
    with Replay(folder, latency=LATENCY) as replay:
        urls = list(replay.urls.values())
        devices = [[name, url] for name, url in replay.urls.items()]
        old = OldWay(work / "old")
        with BanfeedSide(work) as side:
            side.call(
                "open",
                db=str(work / "banfeed.db"),
                devices=devices,
                token=TOKEN,
                concurrency=CONCURRENCY,
            )
            for label, variant in (("cold", "base"), ("churn", "churn"), ("unchanged", "churn")):
                replay.variant(variant)
                old_run = old.run(urls)
                cycle = side.call("cycle")
                suite.check(not cycle["failed"], f"T2 {label}: no device failed")
                results[label] = {"old": asdict(old_run), "banfeed": cycle}
                if label == "unchanged":
                    results["fetch"] = side.call("fetch")
    expect_new = {"cold": count * entries, "churn": count * replaced, "unchanged": 0}
    for label, what in (
        ("cold", "first cycle, empty store / empty list"),
        ("churn", "cycle with 1% of entries new"),
        ("unchanged", "cycle, same answers"),
    ):
        cycle, old_run = results[label]["banfeed"], results[label]["old"]
        suite.check(
            cycle["new_offenses"] == expect_new[label],
            f"T2 {label}: {cycle['new_offenses']:,} new offenses stored",
        )
        speedup = old_run["seconds"] / cycle["seconds"]
        suite.add(
            Row(
                "T2",
                what,
                size,
                cycle["seconds"],
                old_run["seconds"],
                "s",
                speedup,
                GOALS["T2"][0],
                speedup >= GOALS["T2"][1],
                f"ratio = old / banfeed; banfeed {CONCURRENCY} requests at once; "
                f"rows written {cycle['written']}",
            )
        )
    cycle, fetch = results["unchanged"]["banfeed"], results["fetch"]
    ratio, met = slower("T3", cycle["seconds"], fetch["seconds"])
    suite.add(
        Row(
            "T3",
            "fleet steady cycle, same answers",
            size,
            cycle["seconds"],
            fetch["seconds"],
            "s",
            ratio,
            GOALS["T3"][0],
            met,
            f"anchor: httpx GET + json.loads, {CONCURRENCY} at once like banfeed",
        )
    )
    suite.raw["fleet"] = results


# -- profiles of misses ----------------------------------------------------------------------


def profile_misses(suite: Suite) -> None:
    missed = {r.target for r in suite.rows if r.met is False}
    if any(r.met is False and " x " in r.size for r in suite.rows):
        missed.add("T2")  # T2 or the fleet's T3: the fleet is profiled
    if not missed or not suite.args.profile:
        return
    n = suite.args.profile_size
    log(f"\n== profiles of banfeed's side for missed targets {sorted(missed)} (N={n:,})")
    work = suite.work / "profiles"
    if missed & {"T1", "T3", "T6"}:
        fleet = make_fleet(1, n, suite.args.seed)
        capture(fleet, work / "replay", "base")
        device = fleet.devices["fw"]
        device.remove("root", device.vdoms["root"][0].ip)
        capture(fleet, work / "replay", "changed")
        del fleet, device
        with Replay(work / "replay") as replay:
            devices = [[name, url] for name, url in replay.urls.items()]
            with BanfeedSide(work) as side:
                side.call(
                    "open",
                    db=str(work / "repr.db"),
                    devices=devices,
                    token=TOKEN,
                    concurrency=CONCURRENCY,
                )
                answer = side.call("cycle", repr_cost=True)
                suite.profiles["banfeed collect's asyncio.run repr tax"] = {
                    "cycle_seconds": answer["seconds"],
                    "repr_seconds": answer["repr_seconds"],
                }
            if "T6" in missed:
                with BanfeedSide(work) as side:
                    side.call(
                        "open",
                        db=str(work / "mem.db"),
                        devices=devices,
                        token=TOKEN,
                        concurrency=CONCURRENCY,
                    )
                    suite.profiles["T6 memory of the first cycle"] = side.call("memprofile")
            with BanfeedSide(work) as side:
                side.call(
                    "open",
                    db=str(work / "p.db"),
                    devices=devices,
                    token=TOKEN,
                    concurrency=CONCURRENCY,
                )
                for name, cmd, params in (
                    ("T1 first cycle", "cycle", {}),
                    ("T1 export", "export", {"out": str(work / "feed.txt")}),
                    ("T3 cycle, same answer", "cycle", {}),
                ):
                    suite.profiles[name] = side.call(cmd, profile=True, **params)["profile"]
                replay.variant("changed")
                changed = side.call("cycle", profile=True)["profile"]
                suite.profiles["T3 cycle, answer changed, nothing new"] = changed
    if "T4" in missed:
        ips, _ = dense_ipv4(n, suite.args.seed)
        source = work / "agg-addresses.txt"
        source.write_text("".join(f"{ip}\n" for ip in ips), encoding="ascii")
        with BanfeedSide(work) as side:
            side.call(
                "open", db=str(work / "agg.db"), devices=[], token=TOKEN, concurrency=CONCURRENCY
            )
            side.call("fill", ips=str(source))
            suite.profiles["T4 aggregated feed"] = side.call(
                "aggfeed", out=str(work / "agg.txt"), profile=True
            )["profile"]
    if "T2" in missed:
        count, entries = suite.args.profile_fleet
        fleet = make_fleet(count, entries, suite.args.seed)
        capture(fleet, work / "fleet", "base")
        churn(fleet, 0.01)
        capture(fleet, work / "fleet", "churn")
        del fleet
        with Replay(work / "fleet", latency=LATENCY) as replay, BanfeedSide(work) as side:
            devices = [[name, url] for name, url in replay.urls.items()]
            side.call(
                "open",
                db=str(work / "fleet.db"),
                devices=devices,
                token=TOKEN,
                concurrency=CONCURRENCY,
            )
            key = f"T2 fleet {count} x {entries:,}"
            suite.profiles[f"{key}, cold"] = side.call("cycle", profile=True)["profile"]
            replay.variant("churn")
            suite.profiles[f"{key}, churn"] = side.call("cycle", profile=True)["profile"]
            suite.profiles[f"{key}, unchanged"] = side.call("cycle", profile=True)["profile"]
    for name, summary in suite.profiles.items():
        print_profile(name, summary)


def print_profile(name: str, summary: dict[str, Any]) -> None:
    if "repr_seconds" in summary:
        log(
            f"\n-- {name}: a first cycle of {summary['cycle_seconds']:.2f} s; a CycleReport "
            f"returned to asyncio.run (as `banfeed collect` does) adds "
            f"{summary['repr_seconds']:.2f} s of repr on exit"
        )
        return
    if "tracemalloc" in summary:
        log(f"\n-- {name}")
        for key, value in summary.items():
            if key == "tracemalloc":
                for phase, data in value.items():
                    log(f"   {phase}: traced peak {data['peak_mib']:.0f} MiB; top allocations:")
                    for where, size in data["top"]:
                        log(f"      {size:8.1f} MiB  {where}")
            elif key != "peak_kib":
                log(f"   {key}: {value}")
        return
    log(f"\n-- {name}: {summary['seconds']:.2f} s under pyinstrument")
    log("   self time by package: " + ", ".join(f"{k} {v}%" for k, v in summary["by_package"]))
    log("   self time, top functions:")
    for label, share in summary["self"][:12]:
        log(f"     {share:5.1f}%  {label}")
    log("   banfeed functions, inclusive:")
    for label, share in summary["inclusive_banfeed"][:12]:
        log(f"     {share:5.1f}%  {label}")


# -- T5: bench/serve_vs_nginx.py -------------------------------------------------------------


def serving(suite: Suite) -> None:
    script = BENCH / "serve_vs_nginx.py"
    if not script.exists():
        log("\n== T5: bench/serve_vs_nginx.py not present; skipped")
        return
    log("\n== T5, feed serving vs nginx: bench/serve_vs_nginx.py")
    out = suite.work / "serve.json"
    argv = [str(PYTHON), str(script), "--json", str(out)]
    argv += ["--quick"] if suite.args.quick else []
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=1800)
    log(f"  exit status {done.returncode} after {time.perf_counter() - t:.0f} s")
    if done.returncode != 0 or not out.exists():
        tail = (done.stdout + done.stderr).strip().splitlines()[-15:]
        log("  T5 failed:\n    " + "\n    ".join(tail))
        suite.raw["serve"] = {"failed": done.returncode, "tail": tail}
        return
    report = json.loads(out.read_text())
    suite.raw["serve"] = report
    targets = report.get("targets", {})
    for name, ratio in report.get("ratios", {}).items():
        met: bool | None = None
        goal = "no target"
        if name.endswith("200") and "rps_met" in targets:
            met = bool(targets["rps_met"] and targets.get("p99_met", True))
            goal = (
                f"req/s >= {targets.get('rps_ratio_min')}x nginx, "
                f"p99 <= {targets.get('p99_ratio_max')}x"
            )
        rps = ratio.get("rps", float("nan"))
        note = ", ".join(f"{k} {v:.2f}x" for k, v in ratio.items())
        by = {r["label"]: r for r in report.get("results", [])}
        kind = name.rsplit(" ", 1)[-1]
        ours, theirs = by.get(f"banfeed {kind}", {}), by.get(f"nginx {kind}", {})
        lines = report.get("feed", {}).get("lines")
        suite.add(
            Row(
                "T5",
                f"serving {kind} (req/s), wrk",
                f"{lines:,} lines" if isinstance(lines, int) else "-",
                ours.get("rps", float("nan")),
                theirs.get("rps", float("nan")),
                "req/s",
                rps,
                goal,
                met,
                note,
            )
        )


# -- the report ------------------------------------------------------------------------------


def print_results(suite: Suite) -> None:
    log("\n" + "=" * 110)
    log("RESULTS (ratio = banfeed / anchor; T2: anchor / banfeed, the speed-up)")
    head = f"{'':4}{'what':42}{'size':14}{'banfeed':>14}{'anchor':>14}{'ratio':>9}  verdict"
    log(head)
    for r in suite.rows:
        verdict = "-" if r.met is None else ("met" if r.met else "MISSED")
        log(
            f"{r.target:4}{r.what[:41]:42}{r.size[:13]:14}{figure(r.banfeed, r.unit):>14}"
            f"{figure(r.anchor, r.unit):>14}{r.ratio:>8.2f}x  {verdict} ({r.goal})"
        )
    sizes = sorted({int(r.size[2:].replace(",", "")) for r in suite.rows if r.size[:2] == "N="})
    if len(sizes) > 1:
        log("\nSCALING (seconds; per-entry cost in us in brackets)")
        log(f"{'':44}" + "".join(f"{f'N={n:,}':>24}" for n in sizes))
        for target, what in (
            ("T1", "first ingest -> plain feed"),
            ("T1", "old way"),
            ("T3", "steady cycle, same answer"),
            ("T3", "fetch + json.loads"),
            ("T3", "steady cycle, answer changed, nothing new"),
            ("T4", "aggregated feed vs iprange"),
            ("T4", "iprange"),
            ("T6", "peak RSS, first ingest cycle"),
            ("T6", "old way peak RSS"),
        ):
            cells = []
            for n in sizes:
                row = scaling_cell(suite, target, what, n)
                cells.append(f"{row:>24}")
            log(f"{target + ' ' + what:44}" + "".join(cells))
    log("=" * 110)


def figure(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.3f} s"
    return f"{value:,.0f} {unit}"


def scaling_cell(suite: Suite, target: str, what: str, n: int) -> str:
    anchor = what in ("old way", "fetch + json.loads", "iprange", "old way peak RSS")
    wanted = {
        "old way": "first ingest -> plain feed",
        "fetch + json.loads": "steady cycle, same answer",
        "iprange": "aggregated feed vs iprange",
        "old way peak RSS": "peak RSS, first ingest cycle",
    }.get(what, what)
    for r in suite.rows:
        if r.target == target and r.what == wanted and r.size == fmt_n(n):
            value = r.anchor if anchor else r.banfeed
            if r.unit == "MiB":
                return f"{value:,.0f} MiB"
            return f"{value:.3f} ({value / n * 1e6:.1f})"
    return "-"


def snapshot_code(folder: Path) -> dict[str, Any]:
    """Copy src/banfeed and make every child import that copy (PYTHONPATH comes before the
    editable install's .pth): the whole run measures one version of banfeed even if src/
    changes meanwhile. Returns the git commit, whether src/ differs from it, and a digest."""
    src = BENCH.parent / "src" / "banfeed"
    shutil.copytree(src, folder / "banfeed", ignore=shutil.ignore_patterns("__pycache__"))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(folder), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    digest = hashlib.sha256()
    for path in sorted((folder / "banfeed").rglob("*.py")):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=BENCH.parent, capture_output=True, text=True)
        return done.stdout

    dirty = git("status", "--porcelain", "--", "src/banfeed").splitlines()
    return {
        "commit": git("rev-parse", "--short", "HEAD").strip(),
        "src_changed_since_commit": [line[3:] for line in dirty],
        "sha256_of_sources": digest.hexdigest()[:16],
    }


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI sizes (< 2 minutes)")
    parser.add_argument("--sizes", help="comma-separated N for T1/T3/T4/T6")
    parser.add_argument("--fleet", help="DEVICESxENTRIES for T2 (full 200x5000, quick 20x500)")
    parser.add_argument("--only", default="t1,t2,t4,t5", help="subset of t1 (T1/T3/T6), t2, t4, t5")
    parser.add_argument("--repeats", type=int, default=3, help="runs per figure below N=1M")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        help="profile banfeed's side where a target is missed (default: on, off with --quick)",
    )
    parser.add_argument("--profile-size", type=int, help="N for profiles (default 100,000)")
    parser.add_argument("--profile-fleet", help="fleet for the T2 profile (default 200x500)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, help="write every figure as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args(argv)
    quick = args.quick
    default_sizes = "20000" if quick else "10000,100000,1000000"
    args.sizes = [int(s) for s in (args.sizes or default_sizes).split(",")]
    fleet = args.fleet or ("20x500" if quick else "200x5000")
    args.fleet = tuple(int(x) for x in fleet.split("x"))
    args.profile_fleet = tuple(
        int(x) for x in (args.profile_fleet or ("20x500" if quick else "200x500")).split("x")
    )
    args.profile_size = args.profile_size or (20_000 if quick else 100_000)
    args.only = {s.strip().lower() for s in args.only.split(",")}
    if args.profile is None:
        args.profile = not quick
    return args


def main(argv: Sequence[str]) -> int:
    args = parse_args(argv)
    need = ["unshare", "ip", "sort", "uniq", "sed", "find", "/usr/bin/time"]
    if "t4" in args.only:
        need.append("iprange")
    if problems := check_tools(need):
        log("\n".join(problems), sys.stderr)
        return 2
    began = time.perf_counter()
    info = {"machine": machine(), "versions": versions(), "argv": ["bench/run.py", *argv]}
    info["loadavg_start"] = Path("/proc/loadavg").read_text().split()[:3]
    log(f"machine: {info['machine']}\nversions: {info['versions']}")
    log(f"load average at start: {' '.join(info['loadavg_start'])} (other work skews figures)")
    keep = tempfile.mkdtemp(prefix="banfeed-bench-") if args.keep else None
    with tempfile.TemporaryDirectory(prefix="banfeed-bench-") as tmp:
        suite = Suite(args, Path(keep or tmp))
        info["code"] = snapshot_code(suite.work / "code")
        log(f"banfeed measured: {info['code']}")
        steps: list[tuple[str, Callable[[], None]]] = []
        for n in args.sizes:
            steps.append(("t1", lambda n=n: single_device(suite, n)))  # type: ignore[misc]
        for n in args.sizes:
            steps.append(("t4", lambda n=n: aggregation(suite, n)))  # type: ignore[misc]
        steps.append(("t2", lambda: fleet_cycle(suite, *args.fleet)))
        for key, step in steps:
            if key in args.only:
                step()
        profile_misses(suite)
        if "t5" in args.only:
            serving(suite)
        print_results(suite)
        wall = time.perf_counter() - began
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        log(f"wall time: {wall:.0f} s; load average at end {' '.join(info['loadavg_end'])}")
        if keep:
            log(f"files kept in {keep}")
        if args.json:
            report = {
                **info,
                "wall_seconds": wall,
                "rows": [asdict(r) for r in suite.rows],
                "checks": suite.checks,
                "profiles": suite.profiles,
                "raw": suite.raw,
            }
            args.json.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
