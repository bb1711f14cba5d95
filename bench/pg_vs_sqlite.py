"""A fleet cycle on PostgreSQL vs SQLite, side by side on the same simulated fleet.

    .venv/bin/python bench/pg_vs_sqlite.py [--devices 200] [--entries 5000] [--quick]

The simulated FortiGates run in their own process (`banfeed simulate`, one port a device), so
they do not share banfeed's interpreter. For each store: a first cycle (every entry is new:
offenses, offenders written), then a steady-state cycle (same answers: nothing written), then
a cycle where every answer changed but nothing is new (one entry fewer per device).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from banfeed import compose
from banfeed import config as config_mod
from banfeed.store import open_store
from banfeed.timeutil import system_clock


def free_base_port(count: int) -> int:
    for base in range(21000, 60000, 1000):
        try:
            socks = []
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            for s in socks:
                s.close()
            return base
        except OSError:
            for s in socks:
                s.close()
    raise SystemExit("no free port range")


def cycle(rt: compose.Runtime) -> tuple[float, int]:
    began = time.perf_counter()
    report = asyncio.run(rt.collector().cycle())
    assert not report.failed, [r.error for r in report.failed]
    return time.perf_counter() - began, report.new_offenses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--entries", type=int, default=5000)
    parser.add_argument("--quick", action="store_true", help="20 devices × 500 entries")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "BANFEED_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    devices, entries = (20, 500) if args.quick else (args.devices, args.entries)
    base = free_base_port(devices)
    env = {**os.environ, "BANFEED_SIM_TOKEN": "t"}
    sim = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "banfeed",
            "simulate",
            "--port",
            str(base),
            "--devices",
            str(devices),
            "--entries",
            str(entries),
            "--seed",
            "1",
        ],
        stderr=subprocess.DEVNULL,
        env=env,
    )
    admin = sa.create_engine(
        args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    database = f"banfeed_bench_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    folder = Path(tempfile.mkdtemp(prefix="banfeed-pgbench-"))
    try:
        for _ in range(300):  # wait for the last device's port
            try:
                socket.create_connection(("127.0.0.1", base + devices - 1), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        fortigates = [
            {
                "name": f"sim-{i + 1}",
                "url": f"http://127.0.0.1:{base + i}",
                "token": "t",
                "timeout": "60s",
            }
            for i in range(devices)
        ]
        stores = {
            "sqlite": f"sqlite:///{folder / 'bench.db'}",
            "postgresql": args.pg_url.rsplit("/", 1)[0] + f"/{database}",
        }
        print(f"{devices} devices × {entries} entries = {devices * entries:,} entries per cycle")
        results: dict[str, list[float]] = {}
        for name, url in stores.items():
            cfg = config_mod.parse(
                {"store": {"url": url}, "fortigates": fortigates}, base_dir=folder
            )
            rt = compose.Runtime(cfg, open_store(cfg.store_url(), create=True), system_clock)
            first, new = cycle(rt)
            steady, none = cycle(rt)
            results[name] = [first, steady]
            print(
                f"{name:>10}: first cycle {first:6.2f}s ({new:,} new offenses), "
                f"steady {steady:5.2f}s ({none} new)"
            )
            rt.store.close()
        ratio = results["postgresql"][0] / results["sqlite"][0]
        steady = results["postgresql"][1] / results["sqlite"][1]
        print(f"PostgreSQL / SQLite: first cycle {ratio:.2f}×, steady-state cycle {steady:.2f}×")
    finally:
        sim.terminate()
        sim.wait()
        admin.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


if __name__ == "__main__":
    main()
