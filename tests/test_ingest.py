"""The first-ingest path: rows streamed in batches, first offenders built from their offense.

Against real simulated FortiGates and real stores (SQLite and PostgreSQL). Batches are made
small (``ROWS_PER_EXECUTE``) so a few hundred entries cross many batch boundaries; that they
bound memory at a million entries is measured by the bench (T6), not here.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from banfeed import compose, simulator
from banfeed import config as config_mod
from banfeed.collector import CycleReport
from banfeed.fortios import parse_banned
from banfeed.fortios.parse import banned_text
from banfeed.ingest import Published, first_offender, repeated
from banfeed.models import EventKind, Offense
from banfeed.net import parse_address
from banfeed.policy import Retention
from banfeed.store import _common, open_store
from banfeed.store._common import OFFENDER_COLUMNS, first_offender_tuple, offender_tuple
from banfeed.store.schema import events, offenders, offenses
from conftest import T0, Clock

NEVER = ("10.1.2.3", "127.0.0.1", "::ffff:192.168.1.1")  # never-block: stored, suppressed
ALLOWED = "8.8.8.8"  # in the config's allowlist: stored, suppressed


def make_runtime(store_url: str, urls: dict[str, str], tmp_path: Path, clock: Clock) -> Any:
    data = {
        "store": {"url": store_url},
        "fortigates": [
            {"name": "fw-a", "url": urls["fw-a"], "token": "tok-a", "vdoms": ["*"]},
            {"name": "fw-b", "url": urls["fw-b"], "token": "tok-b"},
        ],
        "allowlist": {"networks": ["8.8.8.0/24"]},
    }
    cfg = config_mod.parse(data, base_dir=tmp_path)
    return compose.Runtime(cfg, open_store(cfg.store_url(), create=True), clock)


def cycle(rt: Any) -> CycleReport:
    return asyncio.run(rt.collector().cycle())


def rows(rt: Any, table: sa.Table, columns: tuple[str, ...]) -> list[tuple[Any, ...]]:
    with rt.store.read() as tx:
        found = tx.conn.execute(sa.select(*(table.c[c] for c in columns)))
        return sorted(tuple(bytes(v) if isinstance(v, memoryview) else v for v in r) for r in found)


@pytest.fixture
def ingest(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    clock: Clock,
    monkeypatch: pytest.MonkeyPatch,
) -> Any:
    """Two devices with a few hundred entries: random ones (10% IPv6), never-block and
    allowlisted ones, an address listed by both devices, one listed twice by one device (two
    `created`), and fw-a polled as `*` (an array of VDOM objects)."""
    monkeypatch.setattr(_common, "ROWS_PER_EXECUTE", 7)
    a = fleet.add_device("fw-a", token="tok-a", vdoms=["root", "dmz"])
    b = fleet.add_device("fw-b", token="tok-b", vdoms=["root"])
    a.populate("root", 150, ttl=None, source="IPS")
    a.populate("dmz", 60, ttl=None, source="DoS")
    b.populate("root", 90, ttl=None)
    for ip in (*NEVER, ALLOWED):
        a.add("root", ip, created=T0 - 50)
    a.add("root", "45.33.1.1", created=T0 - 300, expires=None)
    a.add("root", "45.33.1.1", created=T0 - 200, expires=None)
    a.add("dmz", "2a00:1450:4001:81c::200e", created=T0 - 100)
    b.add("root", "2a00:1450:4001:81c::200e", created=T0 - 90, source="AV")
    rt = make_runtime(store_url, run_sim(), tmp_path, clock)
    yield rt
    rt.store.close()


def test_first_ingest_stores_the_rows_the_object_path_gives(ingest: Any) -> None:
    rt = ingest
    report = cycle(rt)
    assert not report.failed
    stored = rows(rt, offenses, ("device", "vdom", "ip", "created", "expires", "source"))
    assert len(stored) == len(set(stored)) == 150 + 60 + 90 + 4 + 2 + 1 + 1
    assert report.new_offenses == len(stored)
    # Every offender row is what the general path (merge the offenses into an Offender, then
    # offender_tuple) makes of the stored offenses.
    by_ip: dict[str, list[Offense]] = defaultdict(list)
    for device, vdom, ip, created, expires, source in stored:
        by_ip[ip].append(Offense(device, vdom, parse_address(ip), created, expires, source))
    collector = rt.collector()
    with rt.store.read() as tx:
        version = tx.store_version()
    expected = sorted(
        offender_tuple(collector._merge(None, group), T0, version, ip)
        for ip, group in by_ip.items()
    )
    assert rows(rt, offenders, OFFENDER_COLUMNS) == expected
    assert report.new_offenders == len(expected) == len(stored) - 2
    by_text = {r[0]: dict(zip(OFFENDER_COLUMNS, r, strict=True)) for r in expected}
    merged = by_text["45.33.1.1"]
    assert merged["offense_count"] == 2 and merged["first_offense"] == T0 - 300
    both = by_text["2a00:1450:4001:81c::200e"]
    assert json.loads(both["devices"]) == ["fw-a", "fw-b"]


def test_first_ingest_suppresses_and_publishes_as_before(ingest: Any) -> None:
    rt = ingest
    report = cycle(rt)
    assert report.suppressed == len(NEVER) + 1
    suppressed = {r[0] for r in rows(rt, events, ("ip", "kind"))}
    assert suppressed == {"10.1.2.3", "127.0.0.1", "192.168.1.1", ALLOWED}
    assert {r[1] for r in rows(rt, events, ("ip", "kind"))} == {EventKind.SUPPRESSED.value}
    published = list(report.published)
    assert len(published) == len(report.published) == report.new_offenders - 4
    texts = [str(o.ip) for o, _ in published]
    assert len(set(texts)) == len(texts) and not set(texts) & suppressed
    stored = {r[0]: r for r in rows(rt, offenders, OFFENDER_COLUMNS)}
    for offender, reporters in published:
        row = offender_tuple(offender, T0, stored[str(offender.ip)][-1])
        assert row == stored[str(offender.ip)]
        assert reporters == offender.devices
    assert report.published[3] == published[3] and report.published[2:5] == published[2:5]


def test_a_second_identical_collect_writes_nothing(ingest: Any, clock: Clock) -> None:
    rt = ingest
    cycle(rt)
    before = [rows(rt, t, tuple(t.c.keys())) for t in (offenses, offenders, events)]
    clock.now += 60
    report = cycle(rt)
    assert report.new_offenses == report.new_offenders == report.updated_offenders == 0
    assert [rows(rt, t, tuple(t.c.keys())) for t in (offenses, offenders, events)] == before


def test_the_first_offender_row_is_the_offender_tuple_of_its_offender() -> None:
    retention = Retention(base_ttl=86400, factor=2.0, max_ttl=None)
    for text, source in (("45.33.1.1", "IPS"), ("2a00:1450:4001:81c::200e", "Administrative")):
        offense = Offense("fw", "root", parse_address(text), T0, None, source)
        until = retention.active_until(T0, 1)
        assert first_offender_tuple(offense, text, until, T0 + 5, 9) == offender_tuple(
            first_offender(offense, retention), T0 + 5, 9
        )


def test_published_builds_first_offenders_when_read() -> None:
    retention = Retention(base_ttl=None)
    first = Offense("fw", "dmz", parse_address("45.33.1.1"), T0, None, "DoS")
    merged = first_offender(first._replace(ip=parse_address("45.33.1.2")), retention)
    published = Published(retention)
    published.add(merged, ("fw", "fw-2"))
    published.add_first(first)
    assert len(published) == 2 and bool(published)
    assert list(published) == [
        (merged, ("fw", "fw-2")),
        (first_offender(first, retention), ("fw",)),
    ]
    assert published[1] == published[-1] == list(published)[1]
    assert published[:1] == [(merged, ("fw", "fw-2"))]
    assert not Published()


def test_repeated_finds_addresses_listed_more_than_once() -> None:
    assert repeated(["a", "b", "a", "c", "b", "a"]) == {"a", "b"}
    assert repeated([]) == set()


@pytest.mark.parametrize(
    "body",
    [
        b'{"results": [{"ip_address": "45.33.1.1", "created": 1700000000}]}',
        b'\xef\xbb\xbf{"results": [{"ip_address": "45.33.1.1", "created": 1700000000}]}',
        '{"results": [{"ip_address": "45.33.1.1", "created": 1700000000}]}'.encode("utf-16"),
        b'{"results": [{"ip_address": "45.33.1.1", "source": "\xc3\xa9", "created": 1}]}',
    ],
)
def test_the_decoded_text_parses_as_the_bytes_do(body: bytes) -> None:
    now = 1_700_000_100
    assert parse_banned("fw", "root", banned_text("fw", body), now=now) == parse_banned(
        "fw", "root", body, now=now
    )
    assert json.loads(banned_text("fw", body)) == json.loads(body)
