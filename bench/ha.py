"""Several replicas on one PostgreSQL: kill one mid-cycle, restart PostgreSQL, check nothing
was lost, duplicated or served differently.

    .venv/bin/python bench/ha.py [--quick] [--pg-url postgresql://postgres@127.0.0.1/test]

Starts 20 simulated FortiGates (two VDOMs each, churn) and 3 `banfeed run` processes sharing
a fresh PostgreSQL database; SIGKILLs one replica while it is polling, restarts PostgreSQL
once (pg_ctlcluster: needs root, as in CI), stops churn, lets the survivors settle, then checks:
- every (device, vdom, ip, created) the simulators ever served is stored, exactly once;
- after the takeover, every device was polled in every interval (outside the PostgreSQL
  restart window, when no replica can run a cycle);
- the surviving replicas serve byte-identical feeds with the same ETag.
Exit status 0 only if all hold. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from banfeed import simulator

ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Replica:
    def __init__(self, name: str, config: Path, env: dict[str, str]) -> None:
        self.name = name
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banfeed", "--config", str(config), "run"],
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        threading.Thread(target=self._read, daemon=True).start()
        self.url = self._wait_url()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    def _wait_url(self) -> str:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            for line in self.lines:
                found = re.search(r"serving (http://[\d.:]+)/feeds/", line)
                if found:
                    return found.group(1)
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited: {''.join(self.lines)}")
            time.sleep(0.05)
        raise SystemExit(f"{self.name} did not start: {''.join(self.lines)}")

    def feed(self) -> httpx.Response:
        return httpx.get(f"{self.url}/feeds/quarantine.txt", timeout=10)


def pg_ctl(action: str) -> None:
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action], check=True
    )


def wait(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = check()
        except (httpx.HTTPError, sa.exc.OperationalError):
            value = None
        if value:
            return value
        time.sleep(0.2)
    raise SystemExit(f"timed out waiting for {what}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short intervals, for CI")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get(
            "BANFEED_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    args = parser.parse_args()
    interval = 2 if args.quick else 5
    devices, replicas_n = 20, 3
    admin = sa.create_engine(
        args.pg_url.replace("postgresql://", "postgresql+psycopg://", 1),
        isolation_level="AUTOCOMMIT",
    )
    database = f"banfeed_ha_{os.getpid()}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {database}")
    store_url = args.pg_url.rsplit("/", 1)[0] + f"/{database}"
    engine = sa.create_engine(
        store_url.replace("postgresql://", "postgresql+psycopg://", 1), pool_pre_ping=True
    )
    fleet = simulator.SimFleet(seed=42)
    for i in range(devices):
        device = fleet.add_device(
            f"fw-{i:02d}", token="t", vdoms=["root", "dmz"], entries=20, churn=2, latency=0.3
        )
        device.ledger = set()
    sim = simulator.start(fleet)
    running: list[Replica] = []
    folder = Path(tempfile.mkdtemp(prefix="banfeed-ha-"))
    ok = True
    try:
        body = "".join(
            f'[[fortigates]]\nname = "{n}"\nurl = "{u}"\ntoken_env = "T"\nvdoms = ["*"]\n\n'
            for n, u in sim.urls.items()
        )
        config = folder / "banfeed.toml"
        config.write_text(
            f'[store]\nurl = "{store_url}"\n[collect]\ninterval = "{interval}s"\njitter = 0.0\n'
            f'[server]\nlisten = "127.0.0.1:0"\n{body}'
        )
        env = {**os.environ, "T": "t", "PYTHONUNBUFFERED": "1"}
        subprocess.run(
            [sys.executable, "-m", "banfeed", "--config", str(config), "db", "upgrade"],
            check=True,
            env=env,
            capture_output=True,
        )
        running = [Replica(f"r{i}", config, env) for i in range(replicas_n)]
        log(f"{replicas_n} replicas up: {', '.join(r.url for r in running)}")
        # (replica, status, body length) a FortiGate would have got
        answers: list[tuple[str, int, int]] = []
        sampling = threading.Event()

        def sample() -> None:
            while not sampling.is_set():
                for replica in list(running):
                    try:
                        r = replica.feed()
                        answers.append((replica.name, r.status_code, len(r.content)))
                    except httpx.HTTPError:
                        answers.append((replica.name, 0, 0))
                time.sleep(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        wait(lambda: all(r.feed().status_code == 200 for r in running), 60, "first feeds")
        time.sleep(3 * interval)

        # Kill the replica owning fw-00 while it polls (the simulator has 0.3 s latency).
        with engine.connect() as conn:
            owners = dict(conn.execute(sa.text("SELECT device, owner FROM leases")).all())
        victim_pid = int(owners["fw-00"].split(":")[1])
        victim = next(r for r in running if r.proc.pid == victim_pid)
        target = fleet.devices["fw-00"]
        seen = target.requests
        wait(lambda: target.requests > seen, 5 * interval, "the victim's next poll")
        time.sleep(0.1)  # the answer is still on its way: mid-cycle
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        killed_at = time.time()
        running.remove(victim)
        log(f"SIGKILLed {victim.name} (pid {victim_pid}) mid-cycle")
        time.sleep(4 * interval)

        log("restarting PostgreSQL")
        restart_began = time.time()
        pg_ctl("restart")
        wait(lambda: engine.connect().close() is None, 60, "PostgreSQL")
        restart_ended = time.time()
        down = wait(
            lambda: all(r.feed().status_code == 200 for r in running), 60, "feeds after restart"
        )
        log(f"PostgreSQL back after {restart_ended - restart_began:.1f}s; replicas serve: {down}")
        time.sleep(4 * interval)

        for device in fleet.devices.values():
            device.churn = 0  # settle: lists stop changing, every served entry gets collected
        time.sleep(4 * interval)
        stopped_at = time.time()
        etags = wait(
            lambda: (lambda rs: len({(x.content, x.headers["etag"]) for x in rs}) == 1 and rs)(
                [r.feed() for r in running]
            ),
            10 * interval,
            "identical feeds",
        )
        sampling.set()
        sampler.join()
    finally:
        for replica in running:
            replica.proc.send_signal(signal.SIGTERM)
        for replica in running:
            try:
                replica.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                replica.proc.kill()
        sim.stop()

    # -- checks --------------------------------------------------------------------------------
    with engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT device, vdom, ip, created FROM offenses")).all()
    engine.dispose()
    served = {(name, *entry) for name, d in fleet.devices.items() for entry in (d.ledger or ())}
    stored_set = set(map(tuple, stored))
    lost = served - stored_set
    duplicated = len(stored) - len(stored_set)
    extra = stored_set - served
    log(f"served {len(served)} offenses; stored {len(stored)}")
    if lost or duplicated or extra:
        ok = False
        log(f"FAIL: lost {len(lost)}, duplicated {duplicated}, never served {len(extra)}")
    gaps = []
    takeover = killed_at + 10 + interval  # STALE seconds, then the next cycle
    for name, device in fleet.devices.items():
        times = [t for t in device.poll_times if takeover <= t <= stopped_at]
        for before, after in zip(times, times[1:], strict=False):
            if before < restart_ended + interval and after > restart_began:
                continue  # no cycle can run while PostgreSQL restarts
            gaps.append((after - before, name))
    worst = max(gaps, default=(0.0, "-"))
    limit = interval * 1.5 + 1.0  # one interval, plus latency and write time
    log(f"after takeover: longest gap between polls {worst[0]:.1f}s ({worst[1]}), limit {limit}s")
    if worst[0] > limit:
        ok = False
        log("FAIL: a device was not polled in some interval")
    log(f"surviving replicas serve the same bytes and ETag {etags[0].headers['etag']}")
    # An empty 200 is honest before the first offense; after a non-empty feed it would empty
    # every FortiGate's list.
    empty, had_content = 0, set()
    for name, status, size in answers:
        if status == 200 and size:
            had_content.add(name)
        elif status == 200 and name in had_content:
            empty += 1
    unavailable = sum(1 for _, status, _ in answers if status == 503)
    log(f"{len(answers)} feed fetches: {unavailable} answered 503, {empty} empty 200s")
    if empty:
        ok = False
        log("FAIL: a feed was served empty")
    admin.dispose()  # its pooled connection died with the restart
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    admin.dispose()
    log("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
