"""Replicas sharing a fleet through leases, on SQLite and the real PostgreSQL."""

from __future__ import annotations

from banfeed.store import open_store
from banfeed.store.leases import STALE, Leases, owners
from conftest import T0, Clock

KEYS = [(f"fw-{i:02d}", "root") for i in range(10)]


def test_replicas_split_the_fleet_and_take_over_from_a_dead_one(store_url: str) -> None:
    store = open_store(store_url, create=True)
    clock = Clock(T0)
    a, b, c = (Leases(store, clock, name) for name in ("a", "b", "c"))
    assert a.assign(KEYS) == set(KEYS)  # alone: everything
    b.heartbeat()
    assert len(a.assign(KEYS)) == 5  # b is alive: a keeps its fair share only
    assert len(b.assign(KEYS)) == 5
    assert a.owned.isdisjoint(b.owned)
    c.heartbeat()
    for replica in (a, b, c, a, b, c):
        replica.assign(KEYS)
    assert all(len(x.owned) <= 4 for x in (a, b, c))  # ceil(10 / 3)
    owned = [x.owned for x in (a, b, c)]
    assert set().union(*owned) == set(KEYS) and sum(map(len, owned)) == len(KEYS)  # no overlap
    # c dies (no more heartbeats); after STALE seconds its devices are taken by the living
    clock.now += STALE + 1
    a.heartbeat()
    b.heartbeat()
    a.assign(KEYS)
    b.assign(KEYS)
    a.assign(KEYS)
    assert a.owned | b.owned == set(KEYS) and not a.owned & b.owned
    assert set(owners(store).values()) == {"a", "b"}
    # a clean shutdown gives leases back at once
    a.leave()
    assert b.assign(KEYS) == set(KEYS)
    store.close()


def test_a_lease_cannot_be_claimed_twice(store_url: str) -> None:
    store = open_store(store_url, create=True)
    clock = Clock(T0)
    a, b = Leases(store, clock, "a"), Leases(store, clock, "b")
    a.assign(KEYS[:1])
    # b saw the lease free a moment ago; a conditional claim must still lose to a's ownership
    with store.raw_write() as conn:
        assert not Leases._set_owner(conn, "fw-00", "root", None, "b", T0)
    assert owners(store)[("fw-00", "root")] == "a"
    del b
    store.close()


def test_the_replica_that_started_first_leads_until_it_dies_or_leaves(store_url: str) -> None:
    store = open_store(store_url, create=True)
    clock = Clock(T0)
    a, b, c = (Leases(store, clock, name) for name in ("c-first", "b-second", "a-third"))
    assert a.leads() and b.leads()  # nobody in the table yet: each leads alone
    a.heartbeat()
    clock.now += 1
    b.heartbeat()
    clock.now += 1
    c.heartbeat()  # the smallest id, but a newcomer never takes over
    assert [x.leads() for x in (a, b, c)] == [True, False, False]
    clock.now += STALE - 2  # a stops heartbeating at T0; b and c go on
    b.heartbeat()
    c.heartbeat()
    assert [x.leads() for x in (a, b, c)] == [True, False, False]  # not stale yet
    clock.now += 1
    b.heartbeat()
    c.heartbeat()
    assert [x.leads() for x in (a, b, c)] == [False, True, False]
    b.leave()  # a clean shutdown hands over at once
    assert c.leads()
    store.close()
