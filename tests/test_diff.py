"""Answer diffing: a changed answer is validated only in its changed entries, and nothing is
lost by it — checked against the full parse, and against real simulated FortiGates and stores.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import given, settings
from hypothesis import strategies as st
from test_collector import make_runtime, table_rows

from banfeed import simulator
from banfeed.fortios.diff import entry_keys, seen_in
from banfeed.fortios.parse import diffed_lists
from banfeed.store.schema import offenses
from conftest import T0, Clock

NOW = T0

# Entries as a device may send them: good ones, and the odd shapes validation rejects.
_good = st.fixed_dictionaries(
    {
        "ip_address": st.sampled_from(["198.51.100.7", "203.0.113.9", "2001:db8::5", "45.1.2.3"]),
        "created": st.integers(NOW - 1000, NOW + 10),
        "source": st.sampled_from(["IPS", "DoS", "Antivirus"]),
    },
    optional={"expires": st.integers(NOW, NOW + 5000), "ipv6": st.sampled_from([0, 1])},
)
_odd = st.one_of(
    st.just("not an object"),
    st.just({"ip_address": "999.1.1.1", "created": NOW}),
    st.just({"ip_address": "198.51.100.8", "created": [NOW]}),  # unhashable
    st.just({"ip_address": "198.51.100.8", "created": NOW + 10**6}),  # far ahead
    st.just({"ip_address": "198.51.100.8"}),
)
_entries = st.lists(st.one_of(_good, _good, _odd), max_size=12)


def _parse(vdom: str, entries: list[Any], known: Any) -> tuple[list[Any], Any]:
    document = {"vdom": vdom, "results": json.loads(json.dumps(entries))}
    return diffed_lists("fw", vdom, document, now=NOW, known=known)


@settings(max_examples=300, deadline=None)
@given(before=_entries, after=_entries)
def test_a_diffed_parse_is_the_full_parse_without_the_entries_stored_before(
    before: list[Any], after: list[Any]
) -> None:
    _, known = _parse("root", before, None)
    [full], full_keys = _parse("root", after, None)
    [diffed], diffed_keys = _parse("root", after, known)
    # Every entry of the new answer is either validated again or was accepted before.
    accepted_before = seen_in(entry_keys("root", json.loads(json.dumps(after))), known)
    again = [o for o, seen in zip(_accepted(after), accepted_before, strict=False) if not seen]
    assert diffed.unchanged == int(accepted_before.sum())
    assert diffed.entries == full.entries
    assert [r.reason for r in diffed.rejected] == [r.reason for r in full.rejected]
    assert diffed.offenses == [o for o in full.offenses if o in again]
    # What is remembered for the next answer does not depend on how this one was parsed.
    assert list(diffed_keys) == list(full_keys)


def _accepted(entries: list[Any]) -> list[Any]:
    """For each entry, its offense from a full parse alone (None where it is rejected)."""
    out = []
    for entry in entries:
        [one], _ = _parse("root", [entry], None)
        out.append(one.offenses[0] if one.offenses else None)
    return out


def test_a_key_names_its_vdom() -> None:
    entry = {"ip_address": "198.51.100.7", "created": NOW, "source": "IPS"}
    _, known = _parse("root", [entry], None)
    [other], _ = _parse("dmz", [entry], known)
    assert other.unchanged == 0 and len(other.offenses) == 1


# -- against real simulated FortiGates and stores ----------------------------------------------


@pytest.fixture
def one(
    fleet: simulator.SimFleet, run_sim: Any, store_url: str, tmp_path: Path, monkeypatch: Any
) -> Any:
    fleet.add_device("fw-a", token="tok-a", vdoms=["root"], entries=200)
    urls = run_sim()
    monkeypatch.setenv("TOK_A", "tok-a")
    devices = [{"name": "fw-a", "url": urls["fw-a"], "token_env": "TOK_A"}]
    return fleet, devices, store_url, tmp_path


def test_a_changed_answer_is_validated_only_where_it_changed(one: Any, clock: Clock) -> None:
    fleet, devices, store_url, tmp_path = one
    rt = make_runtime(store_url, devices, tmp_path, clock)
    collector = rt.collector()
    first = asyncio.run(collector.cycle())
    assert first.new_offenses == 200
    device = fleet.devices["fw-a"]
    device.remove("root", device.vdoms["root"][0].ip)
    device.add("root", "198.51.100.44", created=int(clock.now) - 5)
    clock.now += 60
    second = asyncio.run(collector.cycle())
    [result] = second.results
    assert not result.unchanged
    assert result.entries == 200
    assert second.new_offenses == 1
    assert _listed_validated(second) == 1
    with rt.store.read() as tx:
        assert tx.get_offender("198.51.100.44") is not None
    rt.store.close()


def _listed_validated(report: Any) -> int:
    return sum(r.validated for r in report.results)


def test_a_fresh_collector_or_a_replaced_store_validates_everything(
    one: Any, clock: Clock, tmp_path: Path
) -> None:
    fleet, devices, store_url, _ = one
    rt = make_runtime(store_url, devices, tmp_path, clock)
    collector = rt.collector()
    asyncio.run(collector.cycle())
    device = fleet.devices["fw-a"]
    device.add("root", "198.51.100.45", created=int(clock.now) - 5)
    clock.now += 60
    # Another collector (a restart) has nothing remembered: the whole answer is validated.
    restarted = asyncio.run(rt.collector().cycle())
    assert _listed_validated(restarted) == 201 and restarted.new_offenses == 1
    # The first collector remembers an answer the store no longer has as its last one (the
    # restarted collector stored another): it validates everything again, and loses nothing.
    device.add("root", "198.51.100.46", created=int(clock.now) - 5)
    clock.now += 60
    again = asyncio.run(collector.cycle())
    assert _listed_validated(again) == 202 and again.new_offenses == 1
    rt.store.close()


def test_an_answer_whose_write_failed_is_validated_again(
    fleet: simulator.SimFleet, run_sim: Any, tmp_path: Path, monkeypatch: Any, clock: Clock
) -> None:
    """A cycle that polled but could not write remembers nothing of it: the next cycle
    validates those entries again and stores them (nothing lost)."""
    fleet.add_device("fw-a", token="tok-a", vdoms=["root"], entries=50)
    urls = run_sim()
    monkeypatch.setenv("TOK_A", "tok-a")
    db = tmp_path / "store.db"
    devices = [{"name": "fw-a", "url": urls["fw-a"], "token_env": "TOK_A"}]
    rt = make_runtime(f"sqlite:///{db}", devices, tmp_path, clock)
    collector = rt.collector()
    asyncio.run(collector.cycle())
    device = fleet.devices["fw-a"]
    device.add("root", "198.51.100.47", created=int(clock.now) - 5)
    with sqlite3.connect(db) as conn:
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON offenses BEGIN SELECT RAISE(ABORT, 'no'); END"
        )
    clock.now += 60
    with pytest.raises(Exception, match="no"):
        asyncio.run(collector.cycle())
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TRIGGER refuse")
    clock.now += 60
    report = asyncio.run(collector.cycle())
    assert report.new_offenses == 1 and _listed_validated(report) == 1
    stored = {row.ip for row in table_rows(rt, offenses)}
    assert "198.51.100.47" in stored and len(stored) == 51
    with rt.store.read() as tx:
        assert tx.conn.execute(sa.select(sa.func.count()).select_from(offenses)).scalar() == 51
    rt.store.close()
