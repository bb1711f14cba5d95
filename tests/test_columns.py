"""The columnar build against the plain-Python build it replaced, and the active set kept in
step by version against a fresh read."""

from __future__ import annotations

import dataclasses
import json
from ipaddress import IPv4Address, IPv6Address, IPv6Network, ip_network
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from banfeed.models import AllowEntry, Ban, BanOrigin, Offender, OffenderStatus
from banfeed.net import NetworkSet, aggregate, carve, sort_key
from banfeed.policy import (
    Escalation,
    PrefixGuard,
    build_allowlist,
    holes,
    suppression,
    with_entries,
)
from banfeed.publish import FeedPolicy, FeedSpec, Publisher
from banfeed.publish.active import ActiveSet
from banfeed.publish.build import FeedInputs, build_feeds
from banfeed.store import FOREVER, open_store
from conftest import T0, Clock, feed_specs

DAY = 86400
V4 = ip_network("45.33.0.0/22")
V6 = ip_network("2a00:1450::/118")
PROPERTY = settings(max_examples=150, deadline=None)


def row(o: Offender) -> Any:
    """The narrow row the store gives (``Tx.offender_columns``)."""
    return (
        sort_key(o.ip),
        o.last_offense,
        o.offense_count,
        FOREVER if o.active_until is None else o.active_until,
        "\n".join(json.dumps(list(x)) for x in (o.sources, o.devices, o.vdoms)),
        o.status is OffenderStatus.LISTED,
    )


def chunk(items: list[Offender]) -> list[Any]:
    return sorted((row(o) for o in items), key=lambda r: r[0])  # sort-key order, as read


def make(
    i: int, v6: bool, count: int, age: int, until: int | None, src: str, dev: str, up: bool
) -> Offender:
    net = V6 if v6 else V4
    ip = (IPv6Address if v6 else IPv4Address)(int(net.network_address) + i % net.num_addresses)
    return Offender(
        ip=ip,
        first_offense=T0 - age - 10,
        last_offense=T0 - age,
        offense_count=count,
        sources=(src,),
        devices=(dev,),
        vdoms=(f"{dev}/root",),
        active_until=until,
        status=OffenderStatus.LISTED if up else OffenderStatus.UNBANNED,
    )


offenders = st.builds(
    make,
    st.integers(0, 1023),
    st.booleans(),
    st.integers(1, 4),
    st.sampled_from([0, 60, 3600, 2 * DAY]),  # few values: ties in the ranking happen
    st.sampled_from([None, T0 - 1, T0 + DAY, T0 + 2 * DAY]),
    st.sampled_from(["IPS", "DoS"]),
    st.sampled_from(["fw-1", "fw-2"]),
    st.booleans() | st.just(True),
)
nets = st.tuples(st.booleans(), st.integers(0, 1023), st.integers(20, 32)).map(
    lambda t: (
        ip_network((int(V6.network_address) + t[1], t[2] + 96), strict=False)
        if t[0]
        else ip_network((int(V4.network_address) + t[1], t[2]), strict=False)
    )
)
specs = feed_specs("root", max_entries=60)


def reference(
    spec: FeedSpec, policy: FeedPolicy, rows: list[Offender], bans: list[Ban], allows: list[Any]
) -> tuple[list[str], int, int | None, list[str], list[tuple[str, int]]]:
    """The plain-Python build the columnar one replaced: objects, ``ipaddress``, net.aggregate."""
    now = T0
    allow = with_entries(policy.allowlist, allows)
    active = sorted(
        (
            o
            for o in rows
            if o.status is OffenderStatus.LISTED
            and (o.active_until is None or o.active_until > now)
        ),
        key=lambda o: sort_key(o.ip),
    )
    matched = [
        o for o in active if suppression(o.ip, allow) is None and spec.excludes(o, now) is None
    ]
    chosen_bans = [b for b in bans if spec.excludes_ban(b) is None]
    escalated: list[tuple[Any, int]] = []
    if policy.escalation is not None:
        counts: dict[Any, int] = {}
        for o in matched:
            length = (
                policy.escalation.prefix_v4 if o.ip.version == 4 else policy.escalation.prefix_v6
            )
            prefix = ip_network((o.ip, length), strict=False)
            counts[prefix] = counts.get(prefix, 0) + 1
        escalated = sorted(
            ((p, n) for p, n in counts.items() if n >= policy.escalation.min_offenders),
            key=lambda t: (t[0].version, int(t[0].network_address)),
        )
    networks = policy.guard.split(
        carve([b.network for b in chosen_bans] + [p for p, _ in escalated], holes(allow))
    )

    def entries(published: list[Offender], merge: bool) -> list[Any]:
        if merge:
            merged = policy.guard.split(aggregate([*(o.ip for o in published), *networks]))
            return [n.network_address if n.num_addresses == 1 else n for n in merged]
        covered = NetworkSet((n, True) for n in networks)
        lines: list[Any] = [o.ip for o in published if covered.match(o.ip) is None]
        lines += [n.network_address if n.num_addresses == 1 else n for n in networks]
        return sorted(lines, key=lambda x: (x.version, int(getattr(x, "network_address", x))))

    published = matched
    lines = entries(published, spec.aggregate)
    if len(lines) > spec.max_entries:
        lines = entries(published, True)
    dropped = 0
    if len(lines) > spec.max_entries:
        room = max(0, spec.max_entries - len(networks))
        ranked = sorted(matched, key=lambda o: (o.last_offense, o.offense_count), reverse=True)
        published = sorted(ranked[:room], key=lambda o: sort_key(o.ip))
        lines = entries(published, True)
        if len(lines) > spec.max_entries:
            dropped = len(lines) - spec.max_entries
            lines = lines[: spec.max_entries]
    moments = [o.active_until for o in matched if o.active_until is not None]
    if spec.seen_within is not None:
        moments += [o.last_offense + spec.seen_within for o in matched]
    moments += [b.expires for b in chosen_bans if b.expires is not None]
    moments += [e.expires for e in allows if e.expires is not None]
    return (
        [str(line) for line in lines],
        len(matched) - len(published) + dropped,
        min(moments, default=None),
        [str(o.ip) for o in published],
        [(str(p), n) for p, n in escalated],
    )


@PROPERTY
@given(
    rows=st.lists(offenders, max_size=60, unique_by=lambda o: o.ip),
    ban_nets=st.lists(nets, max_size=4, unique=True),
    allow_nets=st.lists(nets, max_size=3, unique=True),
    spec=specs,
    escalate=st.booleans(),
    guard=st.sampled_from([PrefixGuard(16, 48), PrefixGuard(24, 120)]),
)
def test_columnar_build_equals_the_plain_python_build(
    rows: list[Offender],
    ban_nets: list[Any],
    allow_nets: list[Any],
    spec: FeedSpec,
    escalate: bool,
    guard: PrefixGuard,
) -> None:
    bans = [Ban(n, T0, T0 + DAY, BanOrigin.MANUAL, "t") for n in ban_nets]
    allows = [AllowEntry(n, T0, T0 + 2 * DAY, "t") for n in allow_nets]
    policy = FeedPolicy(
        build_allowlist([ip_network("45.33.3.0/26")], protect=[ip_network("2a00:1450::300/120")]),
        guard,
        Escalation(3, 30, 126) if escalate else None,
    )
    # Half the rows arrive as a later change: the set kept in step must build the same feed.
    first, later = rows[::2], rows[1::2]
    active = ActiveSet.read([chunk(first)]).apply([chunk(later)])
    build = build_feeds([spec], policy, FeedInputs(1, T0, len(rows), T0, active, bans, allows))["f"]
    lines, overflow, valid_until, published, escalated = reference(spec, policy, rows, bans, allows)
    assert build.lines() == lines
    assert build.text() == "".join(f"{line}\n" for line in lines).encode()
    assert build.overflow == overflow
    assert build.valid_until == valid_until
    assert [str(m.ip) for m in build.offenders] == published
    assert [(str(e.prefix), e.offenders) for e in build.escalated] == escalated
    for member in build.matched:
        assert spec.excludes(member, T0) is None


@PROPERTY
@given(
    rows=st.lists(offenders, max_size=50, unique_by=lambda o: o.ip),
    changes=st.lists(st.lists(offenders, max_size=20), max_size=4),
    spec=specs,
)
def test_selects_is_excludes_and_apply_is_a_fresh_read(
    rows: list[Offender], changes: list[list[Offender]], spec: FeedSpec
) -> None:
    state = {o.ip: o for o in rows}
    active = ActiveSet.read([chunk([o for o in rows if o.status is OffenderStatus.LISTED])])
    for change in changes:
        active = active.apply([chunk(change)])
        state.update({o.ip: o for o in change})
    fresh = ActiveSet.read(
        [chunk([o for o in state.values() if o.status is OffenderStatus.LISTED])]
    )
    for kept, read in zip(active.families, fresh.families, strict=True):
        assert kept.addr.tolist() == read.addr.tolist()
        assert kept.until.tolist() == read.until.tolist()
        assert kept.count.tolist() == read.count.tolist()
        assert kept.last.tolist() == read.last.tolist()
        mask = spec.selects(kept, active.combos, T0)
        members = [active.member(kept, i) for i in range(len(kept))]
        assert mask.tolist() == [spec.excludes(m, T0) is None for m in members]
        assert [m.ip for m in members] == sorted(
            o.ip
            for o in state.values()
            if o.status is OffenderStatus.LISTED and o.ip.version == kept.version
        )
    for o in state.values():
        expected = o.status is OffenderStatus.LISTED and (
            o.active_until is None or o.active_until > T0
        )
        assert (active.get(o.ip, T0) is not None) == expected


def same(a: ActiveSet, b: ActiveSet) -> None:
    for x, y in zip(a.families, b.families, strict=True):
        for column in ("addr", "last", "count", "until"):
            assert getattr(x, column).tolist() == getattr(y, column).tolist(), column
        assert [a.combos[i] for i in x.combo] == [b.combos[i] for i in y.combo]


@PROPERTY
@given(rows=st.lists(offenders, max_size=60, unique_by=lambda o: o.ip))
def test_an_active_set_survives_its_bytes(rows: list[Offender]) -> None:
    active = ActiveSet.read([chunk(rows)])
    again = ActiveSet.from_bytes(active.to_bytes())
    same(active, again)
    more = [make(1000 + i, i % 2 == 0, 2, 0, None, "New", "fw-3", True) for i in range(3)]
    same(active.apply([chunk(more)]), again.apply([chunk(more)]))


def test_a_new_process_starts_from_the_saved_set_unless_rows_went(tmp_path: Path) -> None:
    """Publisher A reads whole and saves the set; B (a new process: export, a restart) starts
    from it plus the rows stamped since, and builds what a full read builds; after a prune
    deleted rows, or once the saved set is an hour old, B reads whole again."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    policy = FeedPolicy(build_allowlist([]))
    spec = FeedSpec("f", max_entries=10_000)
    rows = [make(i, i % 4 == 0, 1, 60, T0 + DAY, "IPS", "fw-1", True) for i in range(200)]
    with store.write() as tx:
        tx.insert_offenders(rows, T0)
    [a] = Publisher(store, [spec], policy, Clock(T0)).publish()
    assert a.build.inputs.whole
    with store.read() as tx:
        saved = tx.latest_snapshot()
    assert saved is not None and saved.version == a.build.version
    with store.write() as tx:
        tx.insert_offenders([make(600, False, 1, 0, T0 + DAY, "DoS", "fw-2", True)], T0)
        tx.set_offender_status(str(rows[3].ip), OffenderStatus.UNBANNED, T0)
    [b] = Publisher(store, [spec], policy, Clock(T0 + 60)).publish()
    assert not b.build.inputs.whole
    with store.read() as tx:
        fresh = ActiveSet.read(tx.offender_columns(active_at=T0 + 60))
    same(b.build.inputs.active, fresh)
    assert len(b.build.entries) == 200
    with store.write() as tx:  # a prune (or a wipe behind banfeed's back) deletes rows
        tx.conn.exec_driver_sql("DELETE FROM offenders WHERE ip LIKE '45.33.0.1%'")
    [c] = Publisher(store, [spec], policy, Clock(T0 + 120)).publish()
    assert c.build.inputs.whole
    [d] = Publisher(store, [spec], policy, Clock(T0 + 120 + 3600)).publish()
    assert d.build.inputs.whole  # the saved set is an hour old
    store.close()


def test_the_publisher_reads_only_what_changed_and_stays_in_step(tmp_path: Path) -> None:
    """On a real store: after writes of every kind, the kept set equals a fresh read, and the
    rows read are the ones written."""
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    policy = FeedPolicy(build_allowlist([]))
    spec = FeedSpec("f", max_entries=10_000)
    clock = Clock(T0)
    publisher = Publisher(store, [spec], policy, clock)
    base = [make(i, i % 5 == 0, 1, 60, T0 + DAY, "IPS", "fw-1", True) for i in range(300)]
    with store.write() as tx:
        tx.insert_offenders(base, T0)
    [first] = publisher.publish()
    assert len(first.build.entries) == 300
    with store.write() as tx:
        tx.insert_offenders([make(400, False, 1, 0, T0 + DAY, "DoS", "fw-2", True)], T0)
        tx.update_offenders([_recount(base[1], 5)], T0)
        tx.set_offender_status(str(base[2].ip), OffenderStatus.UNBANNED, T0)
    with store.read() as tx:
        version = first.build.version  # what the publisher keeps its set at
        changed = [r for chunk in tx.offender_columns(changed_after=version) for r in chunk]
    assert sorted(r[0] for r in changed) == sorted(
        sort_key(o.ip) for o in (base[1], base[2], make(400, False, 1, 0, 0, "", "", True))
    )
    [second] = publisher.publish()
    with store.read() as tx:
        fresh = ActiveSet.read(tx.offender_columns(active_at=T0))
    kept = second.build.inputs.active
    for a, b in zip(kept.families, fresh.families, strict=True):
        assert a.addr.tolist() == b.addr.tolist() and a.count.tolist() == b.count.tolist()
    assert str(base[2].ip) not in second.build.lines()
    assert len(second.build.entries) == 300
    store.close()


def _recount(o: Offender, count: int) -> Offender:
    return Offender(
        o.ip,
        o.first_offense,
        o.last_offense,
        count,
        o.sources,
        o.devices,
        o.vdoms,
        o.active_until,
        o.status,
    )


def test_ipv6_and_ipv4_columns_keep_their_types() -> None:
    rows = [make(i, v6, 1, 0, None, "IPS", "fw-1", True) for i in range(5) for v6 in (False, True)]
    active = ActiveSet.read([chunk(rows)])
    assert active.v4.addr.dtype == np.int64 and active.v6.addr.dtype == object
    assert isinstance(active.v6.addr[0], int) and active.v6.addr[0] >= 2**64
    assert active.get(IPv6Network(V6).network_address, T0) is not None


def test_columns_and_changes_on_both_databases(store_url: str) -> None:
    """The driver's narrow rows, on SQLite and on PostgreSQL (a server-side cursor): a full read
    and a set kept in step by the stamped rows agree, in several chunks."""
    from banfeed.store.engine import open_store as open_url

    store = open_url(store_url, create=True)
    rows = [
        make(i, i % 3 == 0, 1 + i % 4, 60, T0 + DAY, "IPS", f"fw-{i % 2}", True) for i in range(900)
    ]
    with store.write() as tx:
        tx.insert_offenders(rows, T0)
    with store.read() as tx:
        version = tx.store_version()
        kept = ActiveSet.read(tx.offender_columns(active_at=T0))
    assert len(kept) == 900 and len(kept.v6) == 300
    with store.write() as tx:
        tx.update_offenders([_recount(rows[5], 9)], T0)
        tx.set_offender_status(str(rows[6].ip), OffenderStatus.UNBANNED, T0)
        tx.insert_offenders([make(2000, True, 1, 0, None, "DoS", "fw-9", True)], T0)
    with store.read() as tx:
        changed = [r for part in tx.offender_columns(changed_after=version) for r in part]
        kept = kept.apply([changed])
        fresh = ActiveSet.read(tx.offender_columns(active_at=T0))
    assert len(changed) == 3
    same(kept, fresh)
    assert kept.get(rows[5].ip, T0) is not None and kept.get(rows[6].ip, T0) is None
    store.close()


def test_an_unreadable_saved_set_means_a_full_read(tmp_path: Path) -> None:
    """A saved set that is garbage, or whose columns disagree, is never built from: the next
    process reads every offender and publishes the right feed."""
    from banfeed.store import Snapshot

    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    rows = [make(i, False, 1, 60, T0 + DAY, "IPS", "fw-1", True) for i in range(50)]
    with store.write() as tx:
        tx.insert_offenders(rows, T0)
        version, count = tx.store_version(), tx.count_offenders()
    good = ActiveSet.read([chunk(rows)])
    broken = ActiveSet(good.v4.take(np.arange(len(good.v4))[::-1]), good.v6, good.combos, {})
    policy = FeedPolicy(build_allowlist([]))
    for body in (b"not an archive", broken.to_bytes()):
        with store.write() as tx:
            tx.save_snapshot(Snapshot(version, count, T0, body))
        [result] = Publisher(store, [FeedSpec("f")], policy, Clock(T0)).publish()
        assert result.build.inputs.whole
        assert len(result.build.entries) == 50
        [again] = Publisher(store, [FeedSpec("f")], policy, Clock(T0)).publish()
        assert not again.build.inputs.whole  # the full read replaced it
    store.close()


@PROPERTY
@given(
    rows=st.lists(offenders, max_size=50, unique_by=lambda o: o.ip),
    change=st.just([]) | st.lists(offenders, max_size=6),
    spec=specs,
    later=st.sampled_from([0, 60, DAY, 3 * DAY]),
    new_ban=st.booleans(),
)
@example(  # time alone expires the only offender: the feed must be rebuilt
    rows=[make(1, False, 1, 0, T0 + DAY, "IPS", "fw-1", True)],
    change=[],
    spec=FeedSpec("f"),
    later=3 * DAY,
    new_ban=False,
)
def test_a_feed_no_change_reaches_keeps_its_build_and_equals_a_fresh_one(
    rows: list[Offender], change: list[Offender], spec: FeedSpec, later: int, new_ban: bool
) -> None:
    policy = FeedPolicy(build_allowlist([]), PrefixGuard(16, 48), Escalation(3, 30, 126))
    bans = [Ban(ip_network("45.33.2.0/28"), T0, T0 + 2 * DAY, BanOrigin.MANUAL, "t")]
    first = FeedInputs(1, T0, len(rows), T0, ActiveSet.read([chunk(rows)]), bans, [])
    before = build_feeds([spec], policy, first)
    if new_ban:
        bans = [*bans, Ban(ip_network("45.33.1.0/30"), T0, None, BanOrigin.MANUAL, "t")]
    active = first.active.apply([chunk(change)])
    then = FeedInputs(2, T0 + later, len(rows), T0, active, bans, [], derived_from=1)
    kept = build_feeds([spec], policy, then, before)["f"]
    fresh = build_feeds([spec], policy, dataclasses.replace(then, derived_from=None))["f"]
    assert kept.text() == fresh.text()
    assert (kept.overflow, kept.valid_until) == (fresh.overflow, fresh.valid_until)
    assert [m.ip for m in kept.matched] == [m.ip for m in fresh.matched]
    assert [m.ip for m in kept.offenders] == [m.ip for m in fresh.offenders]
    assert kept.escalated == fresh.escalated and kept.inputs is then
    if not change and not new_ban and later == 0 and not before["f"].overflow:
        assert kept.entries is before["f"].entries  # kept, not rebuilt
