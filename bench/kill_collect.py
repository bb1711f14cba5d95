"""SIGKILL `banfeed collect` and `banfeed export` at random points; check nothing is lost.

    .venv/bin/python bench/kill_collect.py [--quick] [--entries 100000] [--kills 20]
        [--export-kills 10] [--seed 1] [--json FILE] [--keep]

Collect: two simulated FortiGates on 127.0.0.1 list ``--entries`` quarantined addresses between
them (no expiry: what was served stays listed). `banfeed collect` (a real process, a real SQLite
file) is SIGKILLed at a uniformly random moment of its run, ``--kills`` times; whenever a killed
run had committed its ingest anyway, another ``--entries`` addresses are listed, so every kill
lands in an ingest of that size. After each kill: ``PRAGMA integrity_check`` and
``foreign_key_check`` pass, no offense is stored twice, every offender's ``offense_count`` is
the number of its offenses, and the store holds either the whole ingest or none of it. Then
one `collect` runs to the end, and what is stored is compared with every (device, vdom, ip,
created) the simulators ever served: lost, duplicated, never served — each must be 0.

Export: `banfeed export --output ips.<fmt>` (txt and JSON in turn, the feed changed by a `ban`
before each) SIGKILLed ``--export-kills`` times: the file must be exactly the old bytes or the
new (the next export's), never partial, and the temp file a kill leaves must be gone after the
next export.

Prints one line per kill and a JSON summary; exit status 0 only if every check held.
``--quick`` (CI): 10,000 entries, 6 kills, 4 export kills (under a minute).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if __name__ == "__main__" and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
    os.execv(ROOT / ".venv/bin/python", [str(ROOT / ".venv/bin/python"), *sys.argv])

from banfeed import simulator  # noqa: E402

TOKEN = "kill-collect-token-0123456789"
DEVICES = ("fw-1", "fw-2")


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Site:
    """The simulators, a config, and the banfeed processes run against them."""

    def __init__(self, folder: Path, seed: int) -> None:
        self.folder = folder
        self.fleet = simulator.SimFleet(seed=seed)
        for name in DEVICES:
            device = self.fleet.add_device(name, token=TOKEN, vdoms=["root"])
            device.ledger = set()
        self.sim = simulator.start(self.fleet)
        self.db = folder / "banfeed.db"
        self.config = self.write_config(folder / "banfeed.toml", self.db)
        self.env = {**os.environ, "KC_TOKEN": TOKEN}

    def write_config(self, path: Path, db: Path) -> Path:
        body = "".join(
            f'[[fortigates]]\nname = "{n}"\nurl = "{u}"\ntoken_env = "KC_TOKEN"\n'
            'timeout = "120s"\n\n'
            for n, u in self.sim.urls.items()
        )
        path.write_text(
            f'[store]\nurl = "sqlite:///{db}"\n\n{body}'
            '[[feeds]]\nname = "quarantine"\nmax_entries = 10000000\n'
        )
        return path

    def populate(self, entries: int) -> None:
        per = entries // len(DEVICES)
        for n, name in enumerate(DEVICES):
            self.fleet.devices[name].populate(
                "root", per + (entries % len(DEVICES) if not n else 0), ttl=None
            )

    def banfeed(self, *args: str, config: Path | None = None) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "banfeed", "--config", str(config or self.config), *args]
        return subprocess.Popen(
            argv, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )

    def run(self, *args: str, config: Path | None = None) -> float:
        began = time.monotonic()
        proc = self.banfeed(*args, config=config)
        _, stderr = proc.communicate(timeout=900)
        if proc.returncode != 0:
            raise RuntimeError(f"banfeed {' '.join(args)}: exit {proc.returncode}: {stderr!r}")
        return time.monotonic() - began

    def served(self) -> set[tuple[str, str, str, int]]:
        return {
            (name, vdom, ip, created)
            for name, device in self.fleet.devices.items()
            for vdom, ip, created in set(device.ledger or ())
        }

    def stop(self) -> None:
        self.sim.stop()


def kill_at(proc: subprocess.Popen[bytes], delay: float) -> bool:
    """SIGKILL ``proc`` ``delay`` seconds from now; False when it had ended before."""
    try:
        proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        return True
    return False


def store_facts(db: Path) -> dict[str, Any]:
    """What a consistent store must satisfy, read with plain sqlite3 (WAL recovered on open)."""
    conn = sqlite3.connect(db)
    try:
        integrity = [r[0] for r in conn.execute("PRAGMA integrity_check")]
        foreign = conn.execute("PRAGMA foreign_key_check").fetchall()
        rows = conn.execute("SELECT device, vdom, ip, created FROM offenses").fetchall()
        counts = conn.execute(
            "SELECT count(*) FROM offenders o WHERE o.offense_count != "
            "(SELECT count(*) FROM offenses f WHERE f.ip = o.ip)"
        ).fetchone()[0]
        orphans = conn.execute(
            "SELECT count(DISTINCT ip) FROM offenses WHERE ip NOT IN (SELECT ip FROM offenders)"
        ).fetchone()[0]
    finally:
        conn.close()
    stored = {(d, v, ip, int(c)) for d, v, ip, c in rows}
    return {
        "integrity": integrity == ["ok"],
        "foreign_keys": not foreign,
        "offenses": len(rows),
        "duplicated": len(rows) - len(stored),
        "bad_counts": counts,
        "orphans": orphans,
        "stored": stored,
    }


def collect_phase(site: Site, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    site.populate(args.entries)
    # Calibrate on a scratch store: how long one uninterrupted ingest of this size takes.
    scratch = site.folder / "scratch"
    scratch.mkdir()
    calibration = site.write_config(scratch / "banfeed.toml", scratch / "banfeed.db")
    site.run("db", "upgrade", config=calibration)
    seconds = site.run("collect", config=calibration)
    shutil.rmtree(scratch)
    site.run("db", "upgrade")
    log(f"an uninterrupted collect of {args.entries:,} entries takes {seconds:.1f}s")
    kills: list[dict[str, Any]] = []
    ok, rounds = True, 0
    before = store_facts(site.db)["offenses"]
    while len(kills) < args.kills and rounds < args.kills * 4:
        rounds += 1
        delay = rng.uniform(0.0, seconds * 1.1)
        proc = site.banfeed("collect")
        if not kill_at(proc, delay):
            log(f"round {rounds}: collect ended before {delay:.2f}s (exit {proc.returncode})")
            before = store_facts(site.db)["offenses"]
            site.populate(args.entries)
            continue
        facts = store_facts(site.db)
        served = site.served()
        committed = facts["offenses"] != before
        whole = facts["stored"] == served if committed else facts["offenses"] == before
        good = (
            facts["integrity"]
            and facts["foreign_keys"]
            and facts["duplicated"] == 0
            and facts["bad_counts"] == 0
            and facts["orphans"] == 0
            and facts["stored"] <= served
            and whole
        )
        ok = ok and good
        kills.append(
            {
                "at_seconds": round(delay, 3),
                "ingest": "committed" if committed else "rolled back",
                "offenses": facts["offenses"],
                "integrity_ok": facts["integrity"],
                "consistent": good,
            }
        )
        log(
            f"kill {len(kills)}: at {delay:.2f}s, ingest {kills[-1]['ingest']}, "
            f"{facts['offenses']:,} offenses stored, integrity "
            f"{'ok' if facts['integrity'] else 'FAILED'}, {'consistent' if good else 'BROKEN'}"
        )
        if committed:
            before = facts["offenses"]
            site.populate(args.entries)  # the next kill lands in a full-size ingest again
    final_seconds = site.run("collect")  # the next cycle completes
    facts = store_facts(site.db)
    served = site.served()
    lost = len(served - facts["stored"])
    extra = len(facts["stored"] - served)
    ok = ok and len(kills) == args.kills and facts["integrity"] and lost == 0 and extra == 0
    ok = ok and facts["duplicated"] == 0 and facts["bad_counts"] == 0
    log(
        f"final collect {final_seconds:.1f}s: served {len(served):,}, stored "
        f"{facts['offenses']:,}; lost {lost}, duplicated {facts['duplicated']}, never served "
        f"{extra}"
    )
    return {
        "entries_per_ingest": args.entries,
        "uninterrupted_seconds": round(seconds, 2),
        "kills": kills,
        "committed_when_killed": sum(k["ingest"] == "committed" for k in kills),
        "served": len(served),
        "stored": facts["offenses"],
        "lost": lost,
        "duplicated": facts["duplicated"],
        "never_served": extra,
        "final_collect_ok": True,
        "ok": ok,
    }


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else None


def temps(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.glob(f".{path.name}.*.tmp"))


def export_phase(site: Site, args: argparse.Namespace, rng: random.Random) -> dict[str, Any]:
    out = site.folder / "published"
    out.mkdir()
    kills: list[dict[str, Any]] = []
    ok = True
    for n in range(args.export_kills):
        fmt = ("txt", "json")[n % 2]
        target = out / f"ips.{fmt}"
        # A new offender each round, so the old file and the new differ.
        ip = f"2a00:1450:{n + 1:x}::1"
        site.run("ban", ip, "--note", "kill_collect")
        seconds = site.run("export", "--format", fmt, "--output", str(out / "timing.tmpout"))
        old = digest(target)
        delay = rng.uniform(0.0, seconds)
        killed = kill_at(site.banfeed("export", "--format", fmt, "--output", str(target)), delay)
        after_kill, left = digest(target), temps(target)
        site.run("export", "--format", fmt, "--output", str(target))
        new, left_after = digest(target), temps(target)
        outcome = "old" if after_kill == old else "new" if after_kill == new else "PARTIAL"
        good = outcome != "PARTIAL" and not left_after
        ok = ok and good
        kills.append(
            {
                "format": fmt,
                "at_seconds": round(delay, 3),
                "killed": killed,
                "file_after_kill": outcome,
                "old_and_new_differ": old != new,
                "temp_files_after_kill": len(left),
                "temp_files_after_next_export": len(left_after),
            }
        )
        log(
            f"export kill {n + 1} ({fmt}, at {delay:.2f}s of {seconds:.2f}s"
            f"{'' if killed else ', ended first'}): file is the {outcome} one, {len(left)} temp "
            f"file(s) left, {len(left_after)} after the next export"
        )
    (out / "timing.tmpout").unlink(missing_ok=True)
    return {
        "kills": kills,
        "partial": sum(k["file_after_kill"] == "PARTIAL" for k in kills),
        "temp_files_left": sum(k["temp_files_after_next_export"] for k in kills),
        "ok": ok,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small and short, for CI")
    parser.add_argument("--entries", type=int, default=None, help="per ingest (100000)")
    parser.add_argument("--kills", type=int, default=None, help="collect kills (20)")
    parser.add_argument("--export-kills", type=int, default=None, help="export kills (10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", type=Path, default=None, help="also write the summary here")
    parser.add_argument("--keep", action="store_true", help="keep the temp folder")
    args = parser.parse_args()
    quick = {"entries": 10_000, "kills": 6, "export_kills": 4}
    full = {"entries": 100_000, "kills": 20, "export_kills": 10}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    rng = random.Random(args.seed)
    folder = Path(tempfile.mkdtemp(prefix="banfeed-kill-"))
    site = Site(folder, args.seed)
    try:
        summary = {
            "collect": collect_phase(site, args, rng),
            "export": export_phase(site, args, rng),
        }
    finally:
        site.stop()
        if args.keep:
            log(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    summary["ok"] = summary["collect"]["ok"] and summary["export"]["ok"]
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json is not None:
        args.json.write_text(text + "\n")
    log("PASS" if summary["ok"] else "FAIL")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
