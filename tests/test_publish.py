"""The publication core: explain agrees with the served feed, each filter excludes what it says,
guards hold what they must (allowlist changes included), and versions are recorded, pinned and
released — on a real SQLite store, through the real Publisher."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banfeed import control
from banfeed.errors import InputError
from banfeed.models import (
    AllowEntry,
    Ban,
    BanOrigin,
    EventKind,
    Family,
    Offender,
    OffenderStatus,
)
from banfeed.policy import Escalation, PrefixGuard, build_allowlist
from banfeed.publish import FeedPolicy, FeedSpec, Outcome, Publisher, Why, explain, served
from banfeed.store import Store, open_store
from banfeed.timeutil import MAX_TIME
from conftest import T0, Clock, cli, feed_specs

DAY = 86400
GUARD = PrefixGuard(16, 48)
REGION = ip_network("45.33.0.0/23")  # public space, small enough that things overlap


def offender(
    ip: str,
    *,
    last: int = T0 - 60,
    count: int = 1,
    sources: tuple[str, ...] = ("IPS",),
    device: str = "fw-1",
    vdom: str = "root",
    until: int | None = T0 + DAY,
    status: OffenderStatus = OffenderStatus.LISTED,
) -> Offender:
    return Offender(
        ip_address(ip),
        last - 10,
        last,
        count,
        sources,
        (device,),
        (f"{device}/{vdom}",),
        until,
        status,
    )


@pytest.fixture(scope="module")
def prop_store() -> Iterator[Store]:
    folder = tempfile.mkdtemp(prefix="banfeed-publish-")
    store = open_store(f"sqlite:///{Path(folder) / 'p.db'}", create=True)
    yield store
    store.close()


def fill(
    store: Store, offenders: list[Offender], bans: list[Ban] = (), allows: list[AllowEntry] = ()
) -> None:  # type: ignore[assignment]
    with store.write() as tx:
        for table in ("offenders", "bans", "allow_entries", "feed_versions", "feed_state"):
            tx.conn.execute(sa.text(f"DELETE FROM {table}"))
        tx.insert_offenders(offenders, T0)
        for ban in bans:
            tx.save_ban(ban)
        for entry in allows:
            tx.save_allow_entry(entry)
        tx.bump_version()


# -- explain(ip).listed ⇔ the served feed covers ip ------------------------------------------

addresses = st.integers(0, REGION.num_addresses - 1).map(
    lambda i: str(IPv4Address(int(REGION.network_address) + i))
)
networks = st.tuples(st.integers(0, REGION.num_addresses - 1), st.integers(26, 32)).map(
    lambda t: ip_network((int(REGION.network_address) + t[0], t[1]), strict=False)
)

offender_cases = st.builds(
    lambda ip, count, source, device, vdom, age, expired, unbanned: offender(
        ip,
        last=T0 - age,
        count=count,
        sources=(source,),
        device=device,
        vdom=vdom,
        until=T0 - 1 if expired else T0 + DAY,
        status=OffenderStatus.UNBANNED if unbanned else OffenderStatus.LISTED,
    ),
    addresses,
    st.integers(1, 4),
    st.sampled_from(["IPS", "DoS"]),
    st.sampled_from(["fw-1", "fw-2"]),
    st.sampled_from(["root", "dmz"]),
    st.integers(0, 3 * DAY),
    st.booleans(),
    st.booleans(),
)

specs = feed_specs("dmz", max_entries=40)

SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@SETTINGS
@given(
    offenders=st.lists(offender_cases, max_size=40, unique_by=lambda o: o.ip),
    bans=st.lists(networks, max_size=3, unique=True),
    allows=st.lists(networks, max_size=2, unique=True),
    spec=specs,
    escalate=st.booleans(),
    probes=st.lists(addresses, min_size=1, max_size=15),
)
def test_explain_agrees_with_the_served_feed(
    prop_store: Store,
    offenders: list[Offender],
    bans: list[Any],
    allows: list[Any],
    spec: FeedSpec,
    escalate: bool,
    probes: list[str],
) -> None:
    fill(
        prop_store,
        offenders,
        [Ban(n, T0, None, BanOrigin.MANUAL, "test") for n in bans],
        [AllowEntry(n, T0, None, "test") for n in allows],
    )
    policy = FeedPolicy(
        build_allowlist([]), GUARD, Escalation(3, 30, 64) if escalate else None, max_drop=1.0
    )
    publisher = Publisher(prop_store, [spec], policy, Clock(T0))
    [result] = publisher.publish()
    with prop_store.read() as tx:
        shown = served(tx, "f")
    assert shown is not None
    coverage = shown.lines()
    rows = {str(o.ip): o for o in offenders}
    for text in probes + list(rows):
        ip = ip_address(text)
        verdict = explain(result.build, ip, rows.get(text))
        assert verdict.listed == (coverage.line_for(ip) is not None), (text, verdict)
        offender_row = rows.get(text)
        if verdict.listed:
            assert verdict.why in (Why.OFFENDER, Why.AGGREGATED, Why.BAN, Why.ESCALATED)
            if verdict.why is Why.BAN:
                assert any(ip in n for n in bans)
        elif offender_row is not None and offender_row.status is OffenderStatus.UNBANNED:
            assert verdict.why in (Why.UNBANNED, Why.ALLOWLISTED, Why.FILTERED, Why.CAPPED)
        elif offender_row is not None and offender_row.active_until == T0 - 1:
            assert verdict.why in (Why.EXPIRED, Why.ALLOWLISTED, Why.FILTERED, Why.CAPPED)
        elif any(ip in n for n in allows):
            assert verdict.why is Why.ALLOWLISTED
        elif offender_row is None and not any(ip in n for n in bans):
            assert verdict.why is Why.UNKNOWN


# -- each filter excludes something, and says so -----------------------------------------------

FILTER_CASES = [
    (FeedSpec("f", family=Family.IPV6), offender("45.33.0.1"), "family is ipv6"),
    (FeedSpec("f", causes=frozenset({"dos"})), offender("45.33.0.2"), "causes ['dos']"),
    (FeedSpec("f", devices=frozenset({"fw-9"})), offender("45.33.0.3"), "devices ['fw-9']"),
    (FeedSpec("f", vdoms=frozenset({"dmz"})), offender("45.33.0.4"), "vdoms ['dmz']"),
    (FeedSpec("f", min_offenses=3), offender("45.33.0.5", count=2), "fewer than 3 offenses"),
    (
        FeedSpec("f", seen_within=DAY),
        offender("45.33.0.6", last=T0 - 2 * DAY),
        "older than seen_within",
    ),
]


@pytest.mark.parametrize(("spec", "excluded", "words"), FILTER_CASES)
def test_each_filter_excludes_and_says_why(
    prop_store: Store, spec: FeedSpec, excluded: Offender, words: str
) -> None:
    kept = offender("45.33.1.1", count=5, sources=("DoS",), vdom="dmz")
    fill(prop_store, [excluded, kept])
    publisher = Publisher(prop_store, [spec], FeedPolicy(build_allowlist([])), Clock(T0))
    [result] = publisher.publish()
    lines = result.build.lines()
    assert str(excluded.ip) not in lines
    verdict = explain(result.build, excluded.ip, excluded)
    assert not verdict.listed and verdict.why is Why.FILTERED and words in verdict.reason
    if spec.family is not Family.IPV6 and not spec.devices:
        assert lines == ["45.33.1.1"]  # the filter leaves the rest in


def test_explain_names_the_aggregated_block_and_the_escalated_prefix(prop_store: Store) -> None:
    block = [offender(f"45.33.0.{i}") for i in range(8)]  # 45.33.0.0/29
    fill(prop_store, block)
    spec = FeedSpec("f", max_entries=1)  # met only by lossless aggregation
    [result] = Publisher(prop_store, [spec], FeedPolicy(build_allowlist([])), Clock(T0)).publish()
    assert result.build.lines() == ["45.33.0.0/29"]
    verdict = explain(result.build, ip_address("45.33.0.3"), block[3])
    assert verdict.listed and verdict.why is Why.AGGREGATED and "45.33.0.0/29" in verdict.reason
    policy = FeedPolicy(build_allowlist([]), escalation=Escalation(8, 24, 64))
    [result] = Publisher(prop_store, [FeedSpec("f")], policy, Clock(T0)).publish()
    inside = explain(result.build, ip_address("45.33.0.200"), None)  # not an offender at all
    assert inside.listed and inside.why is Why.ESCALATED and "45.33.0.0/24" in inside.reason


# -- guards ------------------------------------------------------------------------------------


def store_at(tmp_path: Path) -> Store:
    return open_store(f"sqlite:///{tmp_path / 'g.db'}", create=True)


def test_allow_add_refuses_broad_networks_without_force(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    for network in ("0.0.0.0/0", "45.0.0.0/8", "2a00::/16"):
        with pytest.raises(InputError, match="--force"):
            control.allow_add(
                store, network, expires=None, note=None, actor="a", now=T0, guard=GUARD
            )
    entry = control.allow_add(
        store, "45.0.0.0/8", expires=None, note=None, actor="a", now=T0, guard=GUARD, force=True
    )
    assert str(entry.network) == "45.0.0.0/8"
    with store.read() as tx:
        [event] = tx.events_of("45.0.0.0/8")
    assert "--force" in event.detail
    store.close()


def test_an_allowlist_change_that_empties_a_feed_is_held(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    fill(store, [offender(f"45.33.0.{i}") for i in range(1, 21)])
    clock = Clock(T0)
    publisher = Publisher(store, [FeedSpec("f")], FeedPolicy(build_allowlist([])), clock)
    assert publisher.publish()[0].outcome is Outcome.PUBLISHED
    control.allow_add(
        store, "45.0.0.0/8", expires=None, note="oops", actor="a", now=T0, guard=GUARD, force=True
    )
    [result] = publisher.publish()
    assert result.outcome is Outcome.HELD and result.decision is not None
    assert "removed by allowlist" in result.decision.reason
    with store.read() as tx:
        shown = served(tx, "f")
    assert shown is not None and shown.held and shown.version.entries == 20  # last good served
    assert control.approve_feed(store, "f", actor="b", now=T0 + 1) is control.Approval.APPROVED
    # Approved again before the next build: nothing recorded twice, the first approver kept.
    assert control.approve_feed(store, "f", actor="c", now=T0 + 2) is control.Approval.ALREADY
    with store.read() as tx:
        approvals = tx.events_since(0, [EventKind.FEED_APPROVED])
    assert [e.actor for e in approvals] == ["b"]
    [result] = publisher.publish()
    assert result.outcome is Outcome.PUBLISHED and result.version is not None
    assert result.version.entries == 0 and result.version.approver == "b"
    assert control.approve_feed(store, "f", actor="c", now=T0 + 3) is control.Approval.NOT_HELD
    store.close()


def test_a_small_allowlist_change_is_published_at_once(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    fill(store, [offender(f"45.33.0.{i}") for i in range(1, 21)])
    publisher = Publisher(store, [FeedSpec("f")], FeedPolicy(build_allowlist([])), Clock(T0))
    publisher.publish()
    control.allow_add(store, "45.33.0.1", expires=None, note=None, actor="a", now=T0, guard=GUARD)
    [result] = publisher.publish()
    assert result.outcome is Outcome.PUBLISHED and result.version is not None
    assert result.version.removed == 1 and result.version.number == 2
    store.close()


def test_rollback_pins_a_version_until_released(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    fill(store, [offender("45.33.0.1"), offender("45.33.0.2")])
    publisher = Publisher(store, [FeedSpec("f")], FeedPolicy(build_allowlist([])), Clock(T0))
    publisher.publish()
    with store.write() as tx:
        tx.insert_offenders([offender("45.33.0.3")], T0)
        tx.bump_version()
    publisher.publish()
    control.pin_feed(store, "f", 1, actor="a", now=T0)
    assert publisher.publish()[0].outcome is Outcome.PINNED
    with store.read() as tx:
        shown = served(tx, "f")
    assert shown is not None and shown.pinned and shown.body() == b"45.33.0.1\n45.33.0.2\n"
    with pytest.raises(InputError, match="no version 9"):
        control.pin_feed(store, "f", 9, actor="a", now=T0)
    assert control.release_feed(store, "f", actor="a", now=T0)
    with store.read() as tx:
        again = served(tx, "f")
    assert again is not None and not again.pinned and again.version.number == 2
    store.close()


def test_a_held_feed_is_shown_held_by_export_feeds_and_show(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[store]\nurl = "sqlite:///b.db"\n', encoding="utf-8")
    env = {"BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "alice"}
    assert cli("init", env=env).exit_code == 0
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    fill(store, [offender(f"45.33.0.{i}") for i in range(1, 11)])
    store.close()
    first = cli("export", env=env)
    assert first.exit_code == 0 and len(first.stdout.splitlines()) == 10
    assert cli("allow", "add", "45.33.0.0/24", env=env).exit_code == 0  # within /16: allowed
    held = cli("export", env=env)
    assert held.exit_code == 1 and "HELD" in held.stderr
    assert len(held.stdout.splitlines()) == 10  # the last good version, not an empty feed
    feeds = cli("feeds", "--format", "json", env=env)
    assert feeds.exit_code == 0 and '"hold_reason": "10 of 10' in feeds.stdout
    shown = cli("show", "45.33.0.1", "--format", "json", env=env)
    assert '"listed": true' in shown.stdout and "held at version 1" in shown.stdout
    assert cli("feeds", "approve", "quarantine", env=env).exit_code == 0
    released = cli("export", env=env)
    assert released.exit_code == 0 and released.stdout == ""
    history = cli("feeds", "history", "quarantine", "--format", "json", env=env)
    assert '"approver": "alice"' in history.stdout
    diff = cli("feeds", "diff", "quarantine", env=env)
    assert diff.exit_code == 0 and "-45.33.0.1" in diff.stdout and "10 removed" in diff.stdout


def test_show_tells_a_served_version_from_the_current_build(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[store]\nurl = "sqlite:///b.db"\n', encoding="utf-8")
    env = {"BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "alice"}
    assert cli("init", env=env).exit_code == 0
    assert cli("export", env=env).exit_code == 0  # version 1: empty
    assert cli("ban", "45.33.0.9", env=env).exit_code == 0  # no server republishes it
    shown = cli("show", "45.33.0.9", "--format", "json", env=env)
    verdict = json.loads(shown.stdout)["feeds"]["quarantine"]
    assert verdict["listed"] is False and verdict["version"] == 1  # what consumers get now
    assert "published at version 1, which does not list it" in verdict["reason"]
    assert verdict["why"] == "ban"  # and what the next publish will do
    assert cli("export", env=env).stdout == "45.33.0.9\n"
    again = json.loads(cli("show", "45.33.0.9", "--format", "json", env=env).stdout)
    assert again["feeds"]["quarantine"]["listed"] is True


def test_a_far_ttl_is_capped_at_a_representable_time(tmp_path: Path) -> None:
    store = store_at(tmp_path)
    policy = build_allowlist([])
    ban = control.ban(
        store, "45.33.0.9", ttl=10**20, note=None, actor="a", guard=GUARD, allowlist=policy, now=T0
    )
    entry = control.allow_add(
        store, "45.33.1.0/24", expires=10**20, note=None, actor="a", now=T0, guard=GUARD
    )
    assert ban.expires == MAX_TIME and entry.expires == MAX_TIME
    store.close()
