"""The overview's counts over time in the store (``Tx.offense_counts``,
``first_offenses_per_bucket``, ``expiries_per_bucket``) and the kept cycles (``cyclelog``), on a
real SQLite file and the real PostgreSQL: offenses, offenders and cycles at known times,
bucket edges included."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from ipaddress import ip_address

import pytest

from banfeed import cyclelog
from banfeed.errors import DeviceTimeout
from banfeed.models import Offender, OffenderStatus, Offense, PollResult
from banfeed.store import Store, open_store

START, STEP, COUNT = 1_700_000_000 // 3600 * 3600, 3600, 4  # four hourly buckets
END = START + STEP * COUNT


@pytest.fixture
def store(store_url: str) -> Store:
    made = open_store(store_url, create=True)
    yield made  # type: ignore[misc]
    made.close()


def offense(ip: str, created: int, source: str = "IPS", device: str = "fw-1", vdom: str = "root"):
    return Offense(device, vdom, ip_address(ip), created, None, source), ip


def offender(ip: str, first: int, until: int | None, status: str = "listed") -> Offender:
    return Offender(
        ip_address(ip), first, first, 1, ("IPS",), ("fw-1",), ("fw-1/root",), until,
        OffenderStatus(status),
    )  # fmt: skip


def test_offenses_per_bucket_cause_device_and_vdom_with_the_edges(store: Store) -> None:
    with store.write() as tx:
        tx.insert_offenses(
            [
                offense("45.33.1.1", START - 1),  # before the range: not counted
                offense("45.33.1.1", START),  # the first second of bucket 0
                offense("45.33.1.2", START + STEP - 1, "DoS"),  # the last second of bucket 0
                offense("45.33.1.2", START + STEP, "DoS", "fw-2"),  # the first of bucket 1
                offense("45.33.1.3", START + 3 * STEP + 5, "AV", "fw-2", "dmz"),
                offense("45.33.1.4", END - 1, "DoS", "fw-2", "dmz"),  # the last second counted
                offense("45.33.1.4", END, "DoS"),  # the range's end: not counted
            ],
            seen=END,
        )
    with store.read() as tx:
        counts = tx.offense_counts(START, STEP, COUNT)
    assert counts.per_bucket == [2, 1, 0, 2]
    assert counts.by_source == {"IPS": 1, "DoS": 3, "AV": 1}
    assert counts.by_device == {"fw-1": 2, "fw-2": 3}
    assert counts.by_vdom == {"fw-1/root": 2, "fw-2/root": 1, "fw-2/dmz": 2}
    assert counts.by_source.most_common(1) == [("DoS", 3)]
    with store.read() as tx:
        empty = tx.offense_counts(END + STEP, STEP, COUNT)
    assert empty.per_bucket == [0, 0, 0, 0] and not empty.by_source


def test_new_offenders_count_by_their_first_offense(store: Store) -> None:
    with store.write() as tx:
        tx.insert_offenders(
            [
                offender("45.33.1.1", START - 1, None),
                offender("45.33.1.2", START, None),
                offender("45.33.1.3", START + 2 * STEP, None),
                offender("45.33.1.4", START + 2 * STEP + 1, None, "unbanned"),  # still new then
                offender("2a00:1450::1", END - 1, None),
                offender("45.33.1.5", END, None),
            ],
            END,
        )
    with store.read() as tx:
        assert tx.first_offenses_per_bucket(START, STEP, COUNT) == [1, 0, 2, 1]


def test_expiries_count_listed_offenders_aged_out_up_to_now(store: Store) -> None:
    now = START + 2 * STEP + 10  # inside bucket 2
    with store.write() as tx:
        tx.insert_offenders(
            [
                offender("45.33.1.1", 1, START - 1),  # before the range
                offender("45.33.1.2", 1, START),  # bucket 0's first second
                offender("45.33.1.3", 1, START + STEP - 1),  # bucket 0's last second
                offender("45.33.1.4", 1, START + STEP, "unbanned"),  # left by the operator
                offender("45.33.1.5", 1, now),  # expired at now: active_until > now is active
                offender("45.33.1.6", 1, now + 1),  # still active
                offender("45.33.1.7", 1, None),  # forever
            ],
            now,
        )
    with store.read() as tx:
        assert tx.expiries_per_bucket(START, STEP, COUNT, now) == [2, 0, 1, 0]
        assert tx.expiries_per_bucket(START, STEP, COUNT, END) == [2, 0, 2, 0]


@dataclass
class Report:
    """What ``cyclelog.record`` reads of ``collector.CycleReport``."""

    started: int
    results: list[PollResult] = field(default_factory=list)
    new_offenses: int = 0
    new_offenders: int = 0
    rejected: int = 0


def polls(ok: int, failed: int) -> list[PollResult]:
    made = [PollResult(f"fw-{i}", "root", started=0.0) for i in range(ok + failed)]
    for result in made[ok:]:
        result.error = DeviceTimeout(result.device, "no answer within 10 s")
    return made


def test_the_last_50_cycles_are_kept_newest_first(store: Store) -> None:
    for i in range(55):
        with store.write() as tx:
            cyclelog.record(tx, Report(START + 60 * i, polls(2, i % 2), i, i // 2, 3), 0.25)
    with store.read() as tx:
        kept = cyclelog.recent(tx)
        raw = json.loads(tx.get_meta(cyclelog.KEY) or "")
    assert len(kept) == len(raw) == cyclelog.KEEP == 50
    assert [c.started for c in kept] == [START + 60 * i for i in range(54, 4, -1)]
    newest = kept[0]
    assert (newest.polls_ok, newest.polls_failed, newest.new_offenses) == (2, 0, 54)
    assert (newest.new_offenders, newest.rejected, newest.duration) == (27, 3, 0.25)
    assert kept[1].failed == ("fw-2/root timeout",) and kept[1].polls_failed == 1


def test_a_cycle_that_polled_nothing_is_not_kept(store: Store) -> None:
    with store.write() as tx:
        cyclelog.record(tx, Report(START), 0.1)
    with store.read() as tx:
        assert cyclelog.recent(tx) == [] and tx.get_meta(cyclelog.KEY) is None


def test_a_cycle_list_it_cannot_read_starts_again_and_says_so(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    with store.write() as tx:
        tx.set_meta(cyclelog.KEY, '{"not": "a list"}')
    with caplog.at_level(logging.WARNING, logger="banfeed.cyclelog"):
        with store.write() as tx:
            assert cyclelog.recent(tx) == []
            cyclelog.record(tx, Report(START, polls(1, 0)), 0.1)  # the cycle is still stored
    assert "the cycle list cannot be read" in caplog.text
    with store.read() as tx:
        assert [c.started for c in cyclelog.recent(tx)] == [START]
    with store.write() as tx:
        tx.set_meta(cyclelog.KEY, '[{"started": 1}]')  # an element without its fields
    with store.read() as tx:
        assert cyclelog.recent(tx) == []
