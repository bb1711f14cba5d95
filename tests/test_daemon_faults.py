"""The daemon's failure paths, made to happen: a store that refuses writes, a push whose record
cannot be written, a second `run` on one SQLite file, a wrong token beside a right one, a loop
that fails unexpectedly. Real simulator, real SQLite file, real uvicorn on 127.0.0.1."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from banfeed import compose, simulator
from banfeed import config as config_mod
from banfeed.daemon import Daemon
from banfeed.errors import StoreError
from banfeed.store import open_store
from conftest import RunningDaemon, cli, wait_for

REFUSE = (
    "CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} "
    "BEGIN SELECT RAISE(ABORT, 'refused'); END"
)


def refuse(db: Path, table: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(REFUSE.format(table=table))


def allow(db: Path, table: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute(f"DROP TRIGGER refuse_{table}")


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    fleet = simulator.SimFleet(seed=5)
    fw_a = fleet.add_device("fw-a", token="ta", entries=0)
    fw_b = fleet.add_device("fw-b", token="tb", entries=0)
    sim = simulator.start(fleet)
    monkeypatch.setenv("TA", "ta")
    monkeypatch.setenv("TB", "tb")
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///b.db"
[collect]
interval = "1s"
jitter = 0.0
[server]
listen = "127.0.0.1:0"
[push]
quarantine = true
[[fortigates]]
name = "fw-a"
url = "{sim.urls["fw-a"]}"
token_env = "TA"
timeout = "2s"
[[fortigates]]
name = "fw-b"
url = "{sim.urls["fw-b"]}"
token_env = "TB"
timeout = "2s"
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    yield {"a": fw_a, "b": fw_b, "path": path, "db": tmp_path / "b.db", "sim": sim}
    sim.stop()


def feed(url: str) -> httpx.Response:
    return httpx.get(f"{url}/feeds/quarantine.txt", timeout=5)


def test_a_store_that_refuses_writes_keeps_serving_and_skips_no_version(
    site: dict[str, Any],
) -> None:
    now = int(time.time())
    site["a"].add("root", "93.184.216.34", created=now, source="IPS")
    assert cli("--config", str(site["path"]), "collect").exit_code == 0  # publishes version 1
    refuse(site["db"], "feed_versions")  # from now on no version can be recorded
    site["a"].add("root", "93.184.216.35", created=now, source="IPS")
    daemon = RunningDaemon(config_mod.load(site["path"]), collect=False)
    try:
        assert cli("--config", str(site["path"]), "collect").exit_code == 1  # cannot publish
        assert wait_for(lambda: feed(daemon.url).status_code == 200, what="a feed")
        assert feed(daemon.url).text == "93.184.216.34\n"  # the recorded version, not a 503
        ready = wait_for(
            lambda: (r := httpx.get(f"{daemon.url}/readyz", timeout=5)).json()["publishing"] and r,
            what="the publish failure reported",
        )
        assert ready.status_code == 200 and "refused" in ready.json()["publishing"]
        assert feed(daemon.url).text == "93.184.216.34\n"
        allow(site["db"], "feed_versions")
        # The version that could not be recorded is published as soon as the store takes it:
        # nothing marked it as done.
        wait_for(
            lambda: feed(daemon.url).text == "93.184.216.34\n93.184.216.35\n",
            what="the new offender published after the store recovered",
        )
        assert httpx.get(f"{daemon.url}/readyz", timeout=5).json()["publishing"] is None
    finally:
        daemon.stop()


def test_a_push_whose_record_fails_never_stops_collection(site: dict[str, Any]) -> None:
    refuse(site["db"], "pushes")
    daemon = RunningDaemon(config_mod.load(site["path"]))
    try:
        wait_for(lambda: daemon.daemon.cycles >= 1, what="a first cycle")
        site["a"].add("root", "93.184.216.40", created=int(time.time()), source="IPS")
        wait_for(
            lambda: any(path.endswith("/add_users") for _m, path, _b in site["b"].calls),
            what="the push to fw-b",
        )
        cycles = daemon.daemon.cycles
        wait_for(lambda: daemon.daemon.cycles >= cycles + 2, what="cycles after the failure")
        site["a"].add("root", "93.184.216.41", created=int(time.time()), source="DoS")
        wait_for(lambda: "93.184.216.41" in feed(daemon.url).text, what="later offenses")
        assert daemon.daemon.crashed is None
    finally:
        daemon.stop()


def test_a_second_run_on_one_sqlite_store_is_refused(site: dict[str, Any]) -> None:
    config = config_mod.load(site["path"])
    first = Daemon(config)
    try:
        with pytest.raises(StoreError, match="in use by another `banfeed run`"):
            Daemon(config)
        beside = Daemon(config, collect=False)  # `serve` beside it is fine
        beside.store.close()
    finally:
        first.store.close()
        assert first._lock is not None
        first._lock.release()
    result = cli("--config", str(site["path"]), "check")
    assert "in use" not in result.output


def test_a_wrong_token_beside_the_right_one_backs_off_only_itself(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    site["a"].add("root", "93.184.216.50", created=int(time.time()), source="IPS")
    config = config_mod.load(site["path"])
    store = open_store(config.store_url())
    try:
        right = compose.Runtime(config, store, time.time)
        wrong_targets = [
            t if t.name != "fw-a" else dataclasses.replace(t, token=SecretStr("nope"))
            for t in compose.targets(config)
        ]
        wrong = right.collector()
        wrong.targets = wrong_targets
        wrong._tokens = {t.name: compose_token(t) for t in wrong_targets}
        report = asyncio.run(wrong.cycle())
        assert {r.device: r.error.kind for r in report.failed if r.error} == {"fw-a": "auth"}
        again = asyncio.run(wrong.cycle())  # the same wrong token: backed off, not polled
        assert {r.device: r.error.kind for r in again.failed if r.error} == {"fw-a": "backoff"}
        fixed = asyncio.run(right.collector().cycle())  # the right token is tried at once
        assert not fixed.failed and fixed.new_offenses == 1
    finally:
        store.close()
    retried = cli("--config", str(site["path"]), "collect", "--retry-now")
    assert retried.exit_code == 0


def compose_token(target: Any) -> str | None:
    from banfeed.devicestatus import token_id

    return token_id(target)


def test_an_unexpected_error_in_a_loop_stops_the_daemon_loudly(
    site: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    daemon = Daemon(config_mod.load(site["path"]), collect=False)
    daemon.bind()

    async def broken() -> None:
        raise RuntimeError("a bug")

    daemon._refresh_step = broken  # type: ignore[method-assign]  # before the loops start
    thread = threading.Thread(target=lambda: asyncio.run(daemon.run(signals=False)))
    thread.start()
    thread.join(timeout=15)
    assert not thread.is_alive()  # it stopped by itself
    assert isinstance(daemon.crashed, RuntimeError)
    assert any(
        r.levelname == "CRITICAL" and "feed refresh stopped unexpectedly" in r.getMessage()
        for r in caplog.records
    )


def test_postgresql_connections_killed_mid_run_are_replaced(
    pg_url: str, pg_admin: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = simulator.SimFleet(seed=9)
    device = fleet.add_device("fw-a", token="ta", entries=0)
    sim = simulator.start(fleet)
    monkeypatch.setenv("TA", "ta")
    url = f"{pg_url}&application_name=banfeed-kill-test"
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f'[store]\nurl = "{url}"\n[collect]\ninterval = "1s"\njitter = 0.0\n'
        f'[server]\nlisten = "127.0.0.1:0"\n'
        f'[[fortigates]]\nname = "fw-a"\nurl = "{sim.urls["fw-a"]}"\ntoken_env = "TA"\n'
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    daemon = RunningDaemon(config_mod.load(path))
    try:
        device.add("root", "93.184.216.60", created=int(time.time()), source="IPS")
        wait_for(lambda: "93.184.216.60" in feed(daemon.url).text, what="a first offense")
        with pg_admin.connect() as conn:
            killed = conn.exec_driver_sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'banfeed-kill-test'"
            ).scalar_one()
        assert killed >= 1  # the daemon's pooled connections are gone
        device.add("root", "93.184.216.61", created=int(time.time()), source="DoS")
        wait_for(
            lambda: "93.184.216.61" in feed(daemon.url).text,
            timeout=20,
            what="collection and publication after the connections were killed",
        )
        assert daemon.daemon.crashed is None and daemon.thread.is_alive()
    finally:
        daemon.stop()
        sim.stop()
