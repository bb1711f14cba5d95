"""Figures for the loop: a 100,000-entry collect, then steady-state cycles.

Runs the real path: a simulated FortiGate on 127.0.0.1 (HTTP), the FortiOS client, the
collector and a SQLite file. Prints wall time and the rows written by each cycle.

    .venv/bin/python bench/collect_100k.py [--entries 100000]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from banfeed import compose, config, simulator
from banfeed.store import open_store
from banfeed.store.schema import events, offenders, offenses


def counts(rt: compose.Runtime) -> dict[str, int]:
    with rt.store.read() as tx:
        return {
            t.name: tx.conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (offenses, offenders, events)
        }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--entries", type=int, default=100_000)
    args = parser.parse_args()
    now = [1_800_000_000.0]
    fleet = simulator.SimFleet(seed=1, clock=lambda: now[0])
    device = fleet.add_device("fw", token="t", vdoms=["root"])
    t = time.perf_counter()
    device.populate("root", args.entries, ttl=None)
    print(f"simulator populated {args.entries:,} entries in {time.perf_counter() - t:.2f}s")
    with simulator.start(fleet) as sim, tempfile.TemporaryDirectory() as tmp:
        cfg = config.parse(
            {
                "store": {"url": f"sqlite:///{Path(tmp) / 'b.db'}"},
                "fortigates": [{"name": "fw", "url": sim.urls["fw"], "token": "t"}],
            },
            base_dir=Path(tmp),
        )
        rt = compose.Runtime(cfg, open_store(cfg.store_url(), create=True), lambda: now[0])
        before = counts(rt)
        runs = [
            ("first collect", None),
            ("second collect, same answer", None),
            ("third collect, answer changed (1 entry removed), nothing new", "remove"),
            ("fourth collect, 100 new entries", "add"),
        ]
        for label, change in runs:
            if change == "remove":
                device.remove("root", device.vdoms["root"][0].ip)
            elif change == "add":
                device.populate("root", 100, ttl=None)
            now[0] += 60
            t = time.perf_counter()
            report = asyncio.run(rt.collector().cycle())
            elapsed = time.perf_counter() - t
            after = counts(rt)
            written = {k: after[k] - before[k] for k in after}
            before = after
            print(
                f"{label}: {elapsed:.2f}s, new offenses {report.new_offenses:,}, "
                f"rows written {written}"
            )
        rt.store.close()


if __name__ == "__main__":
    main()
