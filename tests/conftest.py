"""Shared fixtures: real simulated FortiGates on 127.0.0.1, real SQLite files, the real
PostgreSQL on this machine (a fresh schema per test), and the CLI through click's runner."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.cli import main
from banfeed.daemon import Daemon

PG_URL = os.environ.get("BANFEED_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_admin() -> Iterator[sa.Engine]:
    """The real PostgreSQL. Unreachable is a failure, never a skip: CI starts it."""
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except sa.exc.OperationalError as exc:
        pytest.fail(f"PostgreSQL at {PG_URL} is not reachable ({exc.orig}); start it first")
    yield engine
    engine.dispose()


@pytest.fixture
def pg_url(pg_admin: sa.Engine) -> Iterator[str]:
    """A URL whose search_path is a fresh schema, dropped after the test."""
    schema = f"t_{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    with pg_admin.begin() as conn:
        conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store test runs on a real SQLite file and on the real PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'banfeed.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


class Clock:
    """A settable clock shared by the simulated devices and banfeed in a test."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# Tests run at a fixed moment of their own: a whole minute shortly before the machine's clock.
# Devices (the simulator) and banfeed share it; CLI commands read the real clock, which banfeed
# compares device times with (more than a day ahead is refused), so T0 must be "now".
T0 = int(time.time()) // 60 * 60 - 60


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def fleet(clock: Clock) -> simulator.SimFleet:
    return simulator.SimFleet(seed=7, clock=clock)


@pytest.fixture
def run_sim(fleet: simulator.SimFleet) -> Iterator[Any]:
    """Call ``run_sim()`` after adding devices: starts them, returns {name: url}."""
    running: list[simulator.RunningSimulator] = []

    def start() -> dict[str, str]:
        sim = simulator.start(fleet)
        running.append(sim)
        return sim.urls

    yield start
    for sim in running:
        sim.stop()


def fortigate_toml(
    name: str, url: str, token_env: str, vdoms: str = '["root"]', **extra: Any
) -> str:
    lines = [
        "[[fortigates]]",
        f'name = "{name}"',
        f'url = "{url}"',
        f'token_env = "{token_env}"',
        f"vdoms = {vdoms}",
        'timeout = "2s"',
    ]
    lines += [f"{k} = {v}" for k, v in extra.items()]
    return "\n".join(lines) + "\n\n"


def write_config(path: Path, store_url: str, body: str = "", allow: str = "[]") -> Path:
    path.write_text(
        f'[store]\nurl = "{store_url}"\n\n[allowlist]\nnetworks = {allow}\n\n{body}',
        encoding="utf-8",
    )
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


def stop_banfeed(proc: subprocess.Popen[str], reader: threading.Thread, lines: list[str]) -> None:
    """Stop a spawned banfeed with SIGTERM: it must exit 0 and have logged no traceback."""
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    reader.join(timeout=5)
    if proc.stderr is not None:
        proc.stderr.close()
    assert "Traceback" not in "".join(lines), "".join(lines)


def served_url(lines: list[str], timeout: float = 30) -> str:
    """The base URL a spawned ``banfeed run``/``serve`` prints (``serving http://HOST:PORT/feeds/``)."""
    line = wait_for(
        lambda: next((x for x in lines if "serving http" in x), None),
        timeout=timeout,
        what="banfeed's URL",
    )
    return str(line.split("serving ")[1].split("/feeds/")[0])


def spawn_banfeed(
    *args: str, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[str], list[str], threading.Thread]:
    """``python -m banfeed ARGS`` as a real process; its standard error lines are collected
    into the returned list as they come, by the returned reader thread (join it after the
    process ended to have every line), so a test can wait for one."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "banfeed", *args],
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    reader = threading.Thread(target=lambda: lines.extend(iter(stderr.readline, "")), daemon=True)
    reader.start()
    return proc, lines, reader


def wait_for(check: Callable[[], Any], timeout: float = 10.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class RunningDaemon:
    def __init__(self, cfg: config_mod.Config, collect: bool = True) -> None:
        self.daemon = Daemon(cfg, collect=collect)
        self.daemon.bind()
        self.url = self.daemon.url
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.daemon.run(signals=False)), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        wait_for(lambda: self.daemon._loop is not None, what="daemon loop")
        self.daemon.stop_threadsafe()
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


def daemon_on_a_new_store(
    folder: Path, server: str = "", *, collect: bool = False
) -> RunningDaemon:
    """A daemon in this process on a new SQLite store in ``folder``, listening on a free port,
    with ``server`` added to its ``[server]`` section."""
    path = write_config(
        folder / "banfeed.toml",
        f"sqlite:///{folder / 'b.db'}",
        f'[server]\nlisten = "127.0.0.1:0"\n{server}',
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    return RunningDaemon(config_mod.load(path), collect=collect)


def build_feed(tx: Any, spec: Any, policy: Any, now: int) -> Any:
    """One feed built from a read transaction, the way the publisher builds it."""
    from banfeed.publish import build_feeds
    from banfeed.publish.inputs import read_inputs

    return build_feeds([spec], policy, read_inputs(tx, now))[spec.name]


def offender_rows(tx: Any, offenders: list[Any], updated: int) -> None:
    tx.insert_offenders(offenders, updated)


def feed_specs(vdom: str, max_entries: int) -> Any:
    """Generated feed specs named "f": every filter, on and off (property tests of builds)."""
    from hypothesis import strategies as st

    from banfeed.models import Family
    from banfeed.publish import FeedSpec

    return st.builds(
        FeedSpec,
        name=st.just("f"),
        family=st.sampled_from([Family.ANY, Family.IPV4, Family.IPV6]),
        causes=st.sampled_from([frozenset(), frozenset({"dos"}), frozenset({"ips", "manual"})]),
        devices=st.sampled_from([frozenset(), frozenset({"fw-1"})]),
        vdoms=st.sampled_from([frozenset(), frozenset({vdom})]),
        min_offenses=st.integers(1, 3),
        seen_within=st.sampled_from([None, 86400]),
        max_entries=st.integers(1, max_entries),
        aggregate=st.booleans(),
    )
