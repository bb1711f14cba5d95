"""The collector against real simulated FortiGates and a real store (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from banfeed import compose, simulator
from banfeed import config as config_mod
from banfeed.collector import CycleReport
from banfeed.policy import BACKOFF_BASE
from banfeed.store import open_store
from banfeed.store.schema import offenders, offenses
from conftest import T0, Clock, build_feed

DAY = 86400


def free_port() -> int:
    """A loopback port with nothing listening (connection refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_runtime(
    store_url: str, devices: list[dict[str, Any]], tmp_path: Path, clock: Clock, **sections: Any
) -> compose.Runtime:
    data = {"store": {"url": store_url}, "fortigates": devices, **sections}
    cfg = config_mod.parse(data, base_dir=tmp_path)
    return compose.Runtime(cfg, open_store(cfg.store_url(), create=True), clock)


def cycle(rt: compose.Runtime) -> CycleReport:
    return asyncio.run(rt.collector().cycle())


def table_rows(rt: compose.Runtime, table: sa.Table) -> list[Any]:
    with rt.store.read() as tx:
        return list(tx.conn.execute(sa.select(table)))


@pytest.fixture
def four(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: Any,
    clock: Clock,
) -> Iterator[tuple[compose.Runtime, simulator.SimFleet, Clock]]:
    """The issue's scenario: healthy with two VDOMs, down, invalid + never-block, bad token."""
    healthy = fleet.add_device("fw-a", token="tok-a", vdoms=["root", "dmz"], entries=20)
    healthy.add("root", "2a00:1450:4001:81c::200e", created=T0 - 1000, expires=None)
    dirty = fleet.add_device("fw-c", token="tok-c", vdoms=["root"], entries=5, fault="invalid")
    for ip in ("10.1.2.3", "127.0.0.1", "192.0.2.77", "::ffff:192.168.1.1", "8.8.8.8"):
        dirty.add("root", ip, created=T0 - 50)
    fleet.add_device("fw-d", token="tok-d", vdoms=["root"], entries=5)
    urls = run_sim()
    monkeypatch.setenv("TOK_A", "tok-a")
    monkeypatch.setenv("TOK_C", "tok-c")
    monkeypatch.setenv("TOK_WRONG", "not-the-token")
    devices = [
        {"name": "fw-a", "url": urls["fw-a"], "token_env": "TOK_A", "vdoms": ["root", "dmz"]},
        {"name": "fw-b", "url": f"http://127.0.0.1:{free_port()}", "token_env": "TOK_A"},
        {"name": "fw-c", "url": urls["fw-c"], "token_env": "TOK_C"},
        {"name": "fw-d", "url": urls["fw-d"], "token_env": "TOK_WRONG"},
    ]
    rt = make_runtime(store_url, devices, tmp_path, clock, allowlist={"networks": ["8.8.8.0/24"]})
    yield rt, fleet, clock
    rt.store.close()


def test_one_failing_device_never_stops_the_others(four: Any) -> None:
    rt, fleet, _clock = four
    report = cycle(rt)
    by = {(r.device, r.vdom): r for r in report.results}
    assert by[("fw-a", "root")].error is None and by[("fw-a", "root")].entries == 21
    assert by[("fw-a", "dmz")].error is None and by[("fw-a", "dmz")].entries == 20
    assert by[("fw-b", "root")].error is not None
    assert by[("fw-b", "root")].error.kind == "unreachable"
    assert by[("fw-c", "root")].error is None
    assert by[("fw-d", "root")].error is not None and by[("fw-d", "root")].error.kind == "auth"
    # fw-c: 5 random + 5 added valid addresses stored; its 7 invalid entries rejected
    assert by[("fw-c", "root")].entries == 10
    assert by[("fw-c", "root")].rejected == 7
    assert report.new_offenses == 21 + 20 + 10
    assert report.suppressed == 5  # four never-block, one allowlisted
    with rt.store.read() as tx:
        status = tx.device_statuses()
    assert status[("fw-b", "root")].error_kind == "unreachable"
    assert status[("fw-d", "root")].error_kind == "auth"
    assert status[("fw-a", "dmz")].last_success == T0
    assert status[("fw-c", "root")].rejected == 7


def test_invalid_and_never_block_entries_are_never_published(four: Any) -> None:
    rt, _fleet, clock = four
    cycle(rt)
    with rt.store.read() as tx:
        published = build_feed(
            tx, compose.feed_spec(rt.config.feeds[0]), compose.feed_policy(rt.config), T0
        ).offenders
        stored = {r.ip for r in tx.conn.execute(sa.select(offenders.c.ip))}
    texts = {str(o.ip) for o in published}
    assert len(texts) == 21 + 20 + 5
    for never in ("10.1.2.3", "127.0.0.1", "192.0.2.77", "192.168.1.1", "8.8.8.8"):
        assert never not in texts
        assert never in stored  # recorded (suppressed), for `show` to explain
    for garbage in ("999.1.1.1", "01.02.03.04", "", "1.2.3.4"):
        assert garbage not in stored
    with rt.store.read() as tx:
        events = tx.events_of("127.0.0.1")
    assert [e.kind for e in events] == ["suppressed"] and "loopback" in events[0].detail
    del clock


def test_steady_state_cycle_writes_no_offense_or_offender_rows(four: Any) -> None:
    rt, fleet, clock = four
    cycle(rt)
    before_offenses = table_rows(rt, offenses)
    before_offenders = table_rows(rt, offenders)
    with rt.store.read() as tx:
        version = tx.store_version()
    clock.now += 60
    report = cycle(rt)
    assert report.new_offenses == 0
    assert next(r for r in report.results if r.device == "fw-a").unchanged
    assert table_rows(rt, offenses) == before_offenses
    assert table_rows(rt, offenders) == before_offenders  # not even `updated` moved
    # A device that stops listing an address (or lists one fewer) is not an unban: the answer
    # changed, it is parsed, and still nothing is written.
    fleet.devices["fw-a"].remove("root", "2a00:1450:4001:81c::200e")
    clock.now += 60
    report = cycle(rt)
    assert not next(r for r in report.results if (r.device, r.vdom) == ("fw-a", "root")).unchanged
    assert report.new_offenses == 0
    assert table_rows(rt, offenders) == before_offenders
    with rt.store.read() as tx:
        assert tx.store_version() == version
        kept = tx.get_offender("2a00:1450:4001:81c::200e")
    assert kept is not None and kept.status == "listed" and kept.active_until is not None
    assert kept.active_until > clock.now


def test_a_new_created_is_a_new_offense_and_escalates(four: Any) -> None:
    rt, fleet, clock = four
    device = fleet.devices["fw-a"]
    ip = "2a00:1450:4001:81c::200e"
    cycle(rt)
    device.remove("root", ip)
    device.add("dmz", ip, created=T0 + 100, source="DoS")  # quarantined again
    clock.now += 60
    report = cycle(rt)
    assert report.new_offenses == 1 and report.updated_offenders == 1
    with rt.store.read() as tx:
        offender = tx.get_offender(ip)
        history = tx.offenses_of(ip)
    assert offender is not None
    assert offender.offense_count == 2
    assert offender.first_offense == T0 - 1000 and offender.last_offense == T0 + 100
    assert offender.sources == ("DoS", "IPS")
    assert offender.vdoms == ("fw-a/dmz", "fw-a/root")
    # 30 days × 2 for the second offense (the default retention)
    assert offender.active_until == T0 + 100 + 60 * DAY
    assert [(o.vdom, o.source) for o in history] == [("root", "IPS"), ("dmz", "DoS")]


def test_auth_failure_backs_off_exponentially_without_polling(four: Any) -> None:
    rt, fleet, clock = four
    bad = fleet.devices["fw-d"]
    cycle(rt)
    assert bad.requests == 1
    with rt.store.read() as tx:
        first = tx.device_statuses()[("fw-d", "root")]
    assert first.backoff_until == clock.now + BACKOFF_BASE
    for _ in range(3):  # every cycle inside the window: not one request
        clock.now += 10
        report = cycle(rt)
        assert bad.requests == 1
        failed = next(r for r in report.results if r.device == "fw-d")
        assert failed.error is not None and failed.error.kind == "backoff"
    clock.now = first.backoff_until + 1
    cycle(rt)
    assert bad.requests == 2
    with rt.store.read() as tx:
        second = tx.device_statuses()[("fw-d", "root")]
    assert second.backoff_until == clock.now + 2 * BACKOFF_BASE
    assert second.consecutive_failures == 2


def test_rate_limit_honours_retry_after(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: Any,
    clock: Clock,
) -> None:
    fleet.add_device("fw", token="t", fault="429")
    urls = run_sim()
    monkeypatch.setenv("T", "t")
    rt = make_runtime(
        store_url, [{"name": "fw", "url": urls["fw"], "token_env": "T"}], tmp_path, clock
    )
    report = cycle(rt)
    assert report.results[0].error is not None
    assert report.results[0].error.kind == "rate_limited"
    with rt.store.read() as tx:
        status = tx.device_statuses()[("fw", "root")]
    assert status.backoff_until == clock.now + max(BACKOFF_BASE, 60)
    rt.store.close()


def test_a_cycle_is_one_transaction(four: Any) -> None:
    """If any write of the cycle fails, nothing of it is stored."""
    rt, _fleet, _clock = four
    with rt.store.write() as tx:
        tx.conn.execute(sa.text("DROP TABLE events"))  # the last insert of the cycle will fail
    with pytest.raises(Exception) as failure:
        cycle(rt)
    assert "events" in str(failure.value)
    assert table_rows(rt, offenses) == []
    assert table_rows(rt, offenders) == []


def test_vdom_star_polls_every_vdom_in_one_request(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: Any,
    clock: Clock,
) -> None:
    device = fleet.add_device("fw", token="t", vdoms=["root", "guest", "dmz"], entries=4)
    urls = run_sim()
    monkeypatch.setenv("T", "t")
    rt = make_runtime(
        store_url,
        [{"name": "fw", "url": urls["fw"], "token_env": "T", "vdoms": ["*"]}],
        tmp_path,
        clock,
    )
    report = cycle(rt)
    assert device.requests == 1
    assert report.results[0].entries == 12
    stored_vdoms = {row.vdom for row in table_rows(rt, offenses)}
    assert stored_vdoms == {"dmz", "guest", "root"}
    assert report.new_offenses == 12
    with rt.store.read() as tx:
        assert {s.vdom for s in tx.device_statuses().values()} == {"*"}
        assert tx.count_offenses() == 12
    rt.store.close()


def test_stopping_mid_write_finishes_the_transaction(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: Any,
    clock: Clock,
) -> None:
    device = fleet.add_device("fw", token="t")
    device.populate("root", 20_000, ttl=None)
    urls = run_sim()
    monkeypatch.setenv("T", "t")
    rt = make_runtime(
        store_url, [{"name": "fw", "url": urls["fw"], "token_env": "T"}], tmp_path, clock
    )
    collector = rt.collector()

    async def stop_while_writing() -> None:
        task = asyncio.create_task(collector.cycle())
        while collector.phase != "writing":
            await asyncio.sleep(0.001)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(stop_while_writing())
    assert collector.phase == "idle"
    with rt.store.read() as tx:
        assert tx.count_offenses() == 20_000  # the whole cycle, not part of it
        assert tx.count_offenders() == 20_000
    rt.store.close()


@pytest.mark.parametrize(("concurrency", "expected"), [(2, 2), (16, 6)])
def test_polls_run_concurrently_within_the_bound(
    fleet: simulator.SimFleet,
    run_sim: Any,
    tmp_path: Path,
    monkeypatch: Any,
    clock: Clock,
    concurrency: int,
    expected: int,
) -> None:
    for i in range(3):
        fleet.add_device(f"fw{i}", token="t", vdoms=["root", "dmz"], entries=2, latency=0.3)
    urls = run_sim()
    monkeypatch.setenv("T", "t")
    devices = [
        {"name": name, "url": url, "token_env": "T", "vdoms": ["root", "dmz"]}
        for name, url in urls.items()
    ]
    rt = make_runtime(
        f"sqlite:///{tmp_path / 'c.db'}",
        devices,
        tmp_path,
        clock,
        collect={"concurrency": concurrency},
    )
    report = cycle(rt)
    assert not report.failed and report.new_offenses == 12
    assert fleet.max_in_flight == expected  # six VDOM polls: all at once, or two at a time
    rt.store.close()
