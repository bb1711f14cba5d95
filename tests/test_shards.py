"""Sharded feeds (``shards = N``) and the ``limit`` key: the split against a plain-Python oracle,
the shards recorded with their feed's version in one transaction (ETags kept when unchanged,
a re-ranking published, holds, approvals, rollbacks), the HTTP face of each shard, the
reports, the setup kit and `verify` — on real SQLite files, a real server and simulated
FortiGates that pull every shard."""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banfeed import config as config_mod
from banfeed import control, simulator
from banfeed.config import ConfigError
from banfeed.models import Ban, BanOrigin, Offender, OffenderStatus
from banfeed.policy import PrefixGuard, build_allowlist
from banfeed.publish import FeedPolicy, FeedSpec, Outcome, Publisher, served, served_shards
from banfeed.store import Store, open_store
from conftest import T0, Clock, RunningDaemon, build_feed, cli, fortigate_toml, wait_for

DAY = 86400
POLICY = FeedPolicy(build_allowlist([]), PrefixGuard(16, 48))
REGION = ip_network("45.33.0.0/25")


def offender(ip: str, *, last: int = T0 - 60, count: int = 1) -> Offender:
    return Offender(
        ip_address(ip),
        last - 10,
        last,
        count,
        ("IPS",),
        ("fw-1",),
        ("fw-1/root",),
        T0 + DAY,
        OffenderStatus.LISTED,
    )


def ban(network: str) -> Ban:
    return Ban(ip_network(network), T0 - 100, None, BanOrigin.MANUAL, "op")


def fill(store: Store, offenders: list[Offender], bans: list[Ban] = ()) -> None:  # type: ignore[assignment]
    with store.write() as tx:
        for table in ("offenders", "bans", "feed_versions", "feed_state"):
            tx.conn.execute(sa.text(f"DELETE FROM {table}"))
        tx.insert_offenders(offenders, T0)
        for item in bans:
            tx.save_ban(item)
        tx.bump_version()


def add(store: Store, *offenders: Offender) -> None:
    """New offenders inserted, known ones updated (a new offense), as a cycle writes them."""
    with store.write() as tx:
        known = tx.load_offenders(str(o.ip) for o in offenders)
        tx.update_offenders([o for o in offenders if str(o.ip) in known], T0)
        tx.insert_offenders([o for o in offenders if str(o.ip) not in known], T0)
        tx.bump_version()


# -- config: `limit`, its old name, shard names ---------------------------------------------


def parse(*feeds: dict[str, Any]) -> config_mod.Config:
    return config_mod.parse({"feeds": list(feeds)}, base_dir=Path())


def test_limit_is_the_key_and_max_entries_its_old_name() -> None:
    assert parse({"name": "q", "limit": "fortios-vm02"}).feeds[0].limit == 168928
    old = parse({"name": "q", "max_entries": 5000}).feeds[0]
    assert old.limit == 5000 and old.max_entries == 5000 and old.shards == 1
    with pytest.raises(ConfigError, match=r"feeds\[0\]: limit and max_entries are one setting"):
        parse({"name": "q", "limit": 5, "max_entries": 5})
    with pytest.raises(ConfigError, match=r"feeds\[0\]\.limit: 'fortios-9' is not a known"):
        parse({"name": "q", "max_entries": "fortios-9"})  # the old name, the new name in errors


def test_shards_are_bounded_and_no_feed_takes_a_shards_name() -> None:
    feed = parse({"name": "q", "limit": 10, "shards": 3}).feeds[0]
    assert feed.shard_names == ["q-1", "q-2", "q-3"]
    for bad in (0, 65):
        with pytest.raises(ConfigError, match=r"feeds\[0\]\.shards"):
            parse({"name": "q", "shards": bad})
    with pytest.raises(ConfigError) as caught:
        parse({"name": "q-2"}, {"name": "q", "shards": 2})
    assert "feed 'q-2' has the name of shard 2 of feed 'q'" in str(caught.value)
    parse({"name": "q-3"}, {"name": "q", "shards": 2})  # not a shard of q: fine
    parse({"name": "q-2"}, {"name": "q"})  # q has no shards
    with pytest.raises(ConfigError, match="too long for 10 shards"):
        parse({"name": "x" * 62, "shards": 10})


# -- the split, against an oracle -------------------------------------------------------------


@pytest.fixture(scope="module")
def prop_store() -> Iterator[Store]:
    folder = tempfile.mkdtemp(prefix="banfeed-shards-")
    store = open_store(f"sqlite:///{Path(folder) / 's.db'}", create=True)
    yield store
    store.close()


def expected_shards(build: Any, limit: int, count: int) -> list[set[str]]:
    """What the shards must hold, in plain Python: each line of the feed keyed by what put it
    there — a ban or escalated prefix inside it first (numeric order), else its best offender
    by the cap's order (most recent, most repeated, lower address) — cut into ``limit``s."""
    members = sorted(
        build.offenders,
        key=lambda m: (-m.last_offense, -m.offense_count, m.ip.version, int(m.ip)),
    )
    rank = {m.ip: i for i, m in enumerate(members)}
    networks = list(build.networks)
    keyed = []
    for line in build.entries:
        block = ip_network(line)
        if any(
            n.version == block.version and n.subnet_of(block) for n in map(ip_network, networks)
        ):
            keyed.append(((0, block.version, int(block.network_address)), str(line)))
            continue
        best = min(rank[ip] for ip in rank if ip.version == block.version and ip in block)
        keyed.append(((1, best, 0), str(line)))
    ordered = [text for _, text in sorted(keyed)]
    return [set(ordered[k * limit : (k + 1) * limit]) for k in range(count)]


cases = st.lists(
    st.tuples(st.integers(0, REGION.num_addresses - 1), st.integers(0, 50), st.integers(1, 3)),
    max_size=40,
)
ban_cases = st.lists(st.integers(0, REGION.num_addresses // 4 - 1), max_size=3)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    cases=cases,
    bans=ban_cases,
    limit=st.integers(1, 8),
    count=st.integers(2, 4),
    aggregate=st.booleans(),
    v6=st.integers(0, 4),
)
def test_shards_split_the_feed_worst_first(
    prop_store: Store,
    cases: list[tuple[int, int, int]],
    bans: list[int],
    limit: int,
    count: int,
    aggregate: bool,
    v6: int,
) -> None:
    base = int(REGION.network_address)
    found = {str(IPv4Address(base + at)): (T0 - age, n) for at, age, n in cases}
    found |= {f"2001:4860::{i + 1:x}": (T0 - 7 * i, 1) for i in range(v6)}
    offenders = [offender(ip, last=last, count=n) for ip, (last, n) in found.items()]
    nets = [ban(f"{IPv4Address(base + 4 * at)}/30") for at in set(bans)]
    fill(prop_store, offenders, nets)
    spec = FeedSpec("f", max_entries=limit, shards=count, aggregate=aggregate)
    with prop_store.read() as tx:
        build = build_feed(tx, spec, POLICY, T0)
    whole = [str(line) for line in build.entries]
    shards = [[str(line) for line in part] for part in build.shards]
    assert len(whole) <= limit * count and len(shards) == count
    assert all(len(part) <= limit for part in shards)
    assert sorted(sum(shards, [])) == sorted(whole)  # a partition of the feed's lines
    for part, lines in zip(shards, build.shards, strict=True):  # numeric order, like any feed
        assert lines.text() == "".join(f"{t}\n" for t in part).encode()
        assert part == [t for t in whole if t in set(part)]
    assert [set(part) for part in shards] == expected_shards(build, limit, count)
    assert build.overflow == len(build.matched) - len(build.offenders) + max(
        0, len(build.networks) - limit * count
    )


def test_shard_1_is_what_a_feed_of_limit_lines_keeps(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    offenders = [
        offender(f"45.33.{i}.1", last=T0 - (i * 7919) % 500, count=1 + i % 3) for i in range(30)
    ]
    fill(store, offenders, [ban("45.34.0.0/30")])
    with store.read() as tx:
        small = build_feed(tx, FeedSpec("f", max_entries=8), POLICY, T0)
        sharded = build_feed(tx, FeedSpec("f", max_entries=8, shards=3), POLICY, T0)
        every = build_feed(tx, FeedSpec("f", max_entries=100), POLICY, T0)
    assert sharded.shards[0].text() == small.entries.text()  # the best list 8 lines can hold
    assert b"45.34.0.0/30" in sharded.shards[0].text()  # bans first
    assert sharded.overflow == 30 + 1 - 24 and len(sharded.entries) == 24
    # Nothing over the capacity: the whole feed is the unsharded one.
    assert build_feed_text(store, FeedSpec("f", max_entries=11, shards=3)) == every.entries.text()
    store.close()


def build_feed_text(store: Store, spec: FeedSpec) -> bytes:
    with store.read() as tx:
        return bytes(build_feed(tx, spec, POLICY, T0).text())


# -- recording: one version, shards with it ---------------------------------------------------


def rows(store: Store, feed: str) -> list[Any]:
    with store.read() as tx:
        return tx.feed_versions(feed, 50)


def test_shards_are_recorded_with_their_feeds_version(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    fill(store, [offender(f"45.33.0.{i}", last=T0 - 100 + i) for i in range(1, 13)])
    clock = Clock(T0)
    spec = FeedSpec("f", max_entries=5, shards=3)
    publisher = Publisher(store, [spec], POLICY, clock)
    [first] = publisher.publish()
    assert first.outcome is Outcome.PUBLISHED and [v.entries for v in first.shards] == [5, 5, 2]
    with store.read() as tx:
        shown = served(tx, "f")
        assert shown is not None
        parts = served_shards(tx, shown, 3)
    assert [p.version.feed for p in parts if p] == ["f#1", "f#2", "f#3"]
    assert {p.version.number for p in parts if p} == {shown.version.number} == {1}
    assert parts[0] and parts[0].body() == b"".join(f"45.33.0.{i}\n".encode() for i in range(8, 13))
    assert b"".join(sorted(b for p in parts if p for b in p.body().splitlines(True))) == b"".join(
        sorted(shown.body().splitlines(True))
    )
    assert publisher.publish()[0].outcome is Outcome.UNCHANGED and len(rows(store, "f#1")) == 1

    # An old offender fits in shard 3: shards 1 and 2 keep their bytes, ETag and date.
    clock.now = T0 + 10
    add(store, offender("45.33.0.50", last=T0 - 500))
    [second] = publisher.publish()
    assert second.outcome is Outcome.PUBLISHED and second.version is not None
    before = {v.feed: v for v in first.shards}
    after = {v.feed: v for v in second.shards}
    for name in ("f#1", "f#2"):
        assert after[name].etag == before[name].etag and after[name].created == T0
        assert after[name].body == before[name].body  # the stored bytes reused, not made again
        assert after[name].number == 2 and (after[name].added, after[name].removed) == (0, 0)
    assert after["f#3"].etag != before["f#3"].etag and after["f#3"].created == T0 + 10
    assert (after["f#3"].added, after["f#3"].removed) == (1, 0)

    # The oldest offender becomes the newest: the whole feed's text is the same, but every
    # shard changes, so a version is recorded (an ETag of the whole feed alone would miss it).
    clock.now = T0 + 20
    add(store, offender("45.33.0.1", last=T0 + 15))
    [third] = publisher.publish()
    assert third.outcome is Outcome.PUBLISHED and third.version is not None
    assert third.version.etag == second.version.etag and third.version.number == 3
    assert third.version.added == third.version.removed == 0
    assert all(a.etag != b.etag for a, b in zip(second.shards, third.shards, strict=True))
    with store.read() as tx:
        shown = served(tx, "f")
        assert shown is not None
        [shard_1] = served_shards(tx, shown, 1)
    assert shard_1 is not None and shard_1.body().startswith(b"45.33.0.1\n45.33.0.9\n")
    # A new process (export, a replica) compares with the stored shards: nothing to record.
    assert Publisher(store, [spec], POLICY, clock).publish()[0].outcome is Outcome.UNCHANGED
    # Going from 3 to 4 shards with the same lines records a version: shard 4 is new.
    more = Publisher(store, [FeedSpec("f", max_entries=5, shards=4)], POLICY, clock)
    [fourth] = more.publish()
    assert fourth.outcome is Outcome.PUBLISHED and [v.entries for v in fourth.shards] == [
        5,
        5,
        3,
        0,
    ]
    # An empty shard is an honest empty text: read back, it is the same, nothing to record.
    assert more.publish()[0].outcome is Outcome.UNCHANGED
    fresh = Publisher(store, [FeedSpec("f", max_entries=5, shards=4)], POLICY, clock)
    assert fresh.publish()[0].outcome is Outcome.UNCHANGED
    store.close()


def test_the_guard_holds_the_feed_and_its_shards_together(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", create=True)
    fill(store, [offender(f"45.33.0.{i}", last=T0 - 100 + i) for i in range(1, 21)])
    spec = FeedSpec("f", max_entries=8, shards=3)
    publisher = Publisher(store, [spec], POLICY, Clock(T0))
    publisher.publish()
    good = served_bodies(store)
    assert [len(b.splitlines()) for b in good] == [8, 8, 4]
    with store.write() as tx:  # the store loses 15 offenders behind banfeed's back
        gone = ", ".join(f"'45.33.0.{i}'" for i in range(1, 16))
        tx.conn.execute(sa.text(f"DELETE FROM offenders WHERE ip IN ({gone})"))
        tx.bump_version()
    [held] = publisher.publish()
    assert held.outcome is Outcome.HELD and not held.shards
    with store.read() as tx:
        shown = served(tx, "f")
        assert shown is not None and shown.held and shown.version.number == 1
    assert served_bodies(store) == good
    control.approve_feed(store, "f", actor="b", now=T0 + 1)
    [approved] = publisher.publish()
    assert approved.version is not None and approved.version.number == 2
    assert [v.approver for v in approved.shards] == ["b"] * 3
    assert [v.entries for v in approved.shards] == [5, 0, 0]
    control.pin_feed(store, "f", 1, actor="a", now=T0 + 2)
    assert publisher.publish()[0].outcome is Outcome.PINNED
    assert served_bodies(store) == good  # a rollback serves that version's shards
    control.release_feed(store, "f", actor="a", now=T0 + 3)
    assert [len(b.splitlines()) for b in served_bodies(store)] == [5, 0, 0]
    store.close()


def served_bodies(store: Store) -> list[bytes]:
    with store.read() as tx:
        shown = served(tx, "f")
        assert shown is not None
        parts = served_shards(tx, shown, 3)
    return [part.body() for part in parts if part is not None]


# -- end to end: the server, reports, the kit, verify ----------------------------------------

PASSWORD = "feed-pass-0123456789"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """fw-a has 10 offenders and pulls every shard (each resource loads 4 entries, like a
    small FortiGate); banfeed serves "quarantine" as 3 shards of 4 (no collecting: tests
    publish with `collect`)."""
    fleet = simulator.SimFleet(seed=7)
    fw_a = fleet.add_device("fw-a", token="ta", entries=0)
    fw_a.feed_limit = 4
    for i in range(10):
        fw_a.add("root", f"93.184.216.{60 + i}", source="IPS")
    sim = simulator.start(fleet)
    body = (
        '[server]\nlisten = "127.0.0.1:0"\n\n'
        + fortigate_toml("fw-a", sim.urls["fw-a"], "TA")
        + '[[feeds]]\nname = "quarantine"\nlimit = 4\nshards = 3\n'
        + 'auth = { type = "basic", username = "fortigate", password_env = "FEED_PW" }\n'
        + '[[feeds]]\nname = "partners"\nshards = 2\nallow_from = ["192.0.2.0/24"]\n'
    )
    path = tmp_path / "banfeed.toml"
    path.write_text(f'[store]\nurl = "sqlite:///b.db"\n\n{body}', encoding="utf-8")
    env = {"TA": "ta", "FEED_PW": PASSWORD, "BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "al"}
    for name, value in env.items():  # the daemon reads its secrets from the environment
        monkeypatch.setenv(name, value)
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("collect", env=env).exit_code == 0
    daemon = RunningDaemon(config_mod.load(path), collect=False)
    yield {"env": env, "a": fw_a, "feed": daemon.url, "path": path}
    daemon.stop()
    sim.stop()


def get(site: dict[str, Any], name: str, **headers: str) -> httpx.Response:
    return httpx.get(
        f"{site['feed']}/feeds/{name}",
        headers={"Accept-Encoding": "identity", **headers},
        auth=("fortigate", PASSWORD),
        trust_env=False,
    )


def test_each_shard_is_served_like_a_feed(site: dict[str, Any]) -> None:
    whole = wait_for(lambda: (r := get(site, "quarantine.txt")).status_code == 200 and r)
    shards = [get(site, f"quarantine-{k}.txt") for k in (1, 2, 3)]
    assert [r.status_code for r in shards] == [200, 200, 200]
    assert [len(r.content.splitlines()) for r in shards] == [4, 4, 2]
    assert sorted(b"".join(r.content for r in shards).splitlines()) == sorted(
        whole.content.splitlines()
    )
    etags = [r.headers["etag"] for r in shards]
    assert len(set(etags + [whole.headers["etag"]])) == 4 and all(
        r.headers["last-modified"] for r in shards
    )
    assert get(site, "quarantine-2.txt", **{"If-None-Match": etags[1]}).status_code == 304
    zipped = get(site, "quarantine-1.txt", **{"Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and zipped.content == shards[0].content
    assert zipped.headers["etag"] == etags[0][:-1] + '-gzip"'
    anonymous = httpx.get(f"{site['feed']}/feeds/quarantine-1.txt", trust_env=False)
    assert anonymous.status_code == 401  # the feed's auth applies to its shards
    assert httpx.get(f"{site['feed']}/feeds/partners-1.txt", trust_env=False).status_code == 403
    assert get(site, "quarantine-4.txt").status_code == 404
    csv = get(site, "quarantine-3.csv")
    assert csv.status_code == 200 and len(csv.text.splitlines()) == 3  # a header and 2 rows
    listed = json.loads(get(site, "quarantine-1.json").text)
    assert sorted(o["ip"] for o in listed) == sorted(shards[0].text.split())


def test_a_republish_serves_every_shard_of_the_new_version(site: dict[str, Any]) -> None:
    wait_for(lambda: get(site, "quarantine-1.txt").status_code == 200, what="the shards")
    before = [get(site, f"quarantine-{k}.txt").headers["etag"] for k in (1, 2, 3)]
    site["a"].add("root", "93.184.216.90", created=int(time.time()) - 600, expires=None)
    assert cli("collect", env=site["env"]).exit_code == 0
    wait_for(lambda: len(get(site, "quarantine.txt").content.splitlines()) == 11, what="v2")
    after = [get(site, f"quarantine-{k}.txt") for k in (1, 2, 3)]
    assert [r.headers["etag"] for r in after[:2]] == before[:2]  # unchanged: same ETag
    assert after[2].headers["etag"] != before[2] and b"93.184.216.90\n" in after[2].content
    assert get(site, "quarantine-1.txt", **{"If-None-Match": before[0]}).status_code == 304
    [feed, _] = json.loads(cli("feeds", "--format", "json", env=site["env"]).stdout)
    assert feed["version"] == 2
    assert [s["etag"] for s in feed["shards"]] == [r.headers["etag"] for r in after]


def test_small_fortigates_load_every_shard_and_verify_checks_each(site: dict[str, Any]) -> None:
    for k in (1, 2, 3):
        site["a"].add_feed(
            f"banfeed-quarantine-{k}",
            url=f"{site['feed']}/feeds/quarantine-{k}.txt",
            username="fortigate",
            password=PASSWORD,
        )
        assert site["a"].refresh_feed(f"banfeed-quarantine-{k}") == 200
    site["a"].add_feed(
        "whole", url=f"{site['feed']}/feeds/quarantine.txt", username="fortigate", password=PASSWORD
    )
    site["a"].refresh_feed("whole")
    assert site["a"].feed_status("whole")["overflow"] == 6  # the unsharded feed does not fit
    loaded = set().union(*(site["a"].feed_entries(f"banfeed-quarantine-{k}") for k in (1, 2, 3)))
    assert len(loaded) == 10  # sharded, all of it
    result = cli("verify", "--format", "json", env=site["env"])
    assert result.exit_code == 0, result.stdout
    doc = json.loads(result.stdout)
    assert [d["feed"] for d in doc] == ["quarantine-1", "quarantine-2", "quarantine-3"]
    assert [d["resource"] for d in doc] == [f"banfeed-quarantine-{k}" for k in (1, 2, 3)]
    assert [d["devices"][0]["verdict"] for d in doc] == ["in_sync"] * 3
    assert [d["served"]["entries"] for d in doc] == [4, 4, 2]
    site["a"].remove_feed("banfeed-quarantine-2")
    missing = json.loads(cli("verify", "--format", "json", env=site["env"]).stdout)
    assert [d["devices"][0]["verdict"] for d in missing] == ["in_sync", "missing", "in_sync"]


def test_reports_name_each_shard(site: dict[str, Any]) -> None:
    env = site["env"]
    [quarantine, partners] = json.loads(cli("feeds", "--format", "json", env=env).stdout)
    assert quarantine["max_entries"] == 4 and quarantine["version"] == 1
    assert [s["feed"] for s in quarantine["shards"]] == [f"quarantine-{k}" for k in (1, 2, 3)]
    assert [s["entries"] for s in quarantine["shards"]] == [4, 4, 2]
    third = get(site, "quarantine-3.txt")
    assert quarantine["shards"][2]["etag"] == third.headers["etag"]
    assert [s["feed"] for s in partners["shards"]] == ["partners-1", "partners-2"]
    assert partners["version"] == 1  # its empty shard 2 does not make a version a refresh
    table = cli("feeds", env=env).stdout
    assert "quarantine-2" in table and "shard 2" in table
    newest = third.text.split()[0]
    shown = json.loads(cli("show", newest, "--format", "json", env=env).stdout)
    assert shown["feeds"]["quarantine"]["listed"] and shown["feeds"]["quarantine"]["shard"] == 3
    exported = cli("export", "--feed", "quarantine-3", env=env)
    assert exported.exit_code == 0 and exported.stdout.encode() == third.content
    assert cli("export", "--feed", "quarantine-4", env=env).exit_code == 2


def test_fortigate_config_prints_a_resource_a_shard(site: dict[str, Any]) -> None:
    env = site["env"]
    result = cli("fortigate-config", "--role", "consume", "--url", "https://bf.example", env=env)
    text = result.stdout
    for k in (1, 2, 3):
        assert f'edit "banfeed-quarantine-{k}"' in text
        assert f'set resource "https://bf.example/feeds/quarantine-{k}.txt"' in text
    assert text.count("set server-identity-check full") == 5  # 3 + 2 partners shards
    assert 'set srcaddr "banfeed-quarantine-1" "banfeed-quarantine-2" "banfeed-quarantine-3"' in (
        text
    )
    assert 'banfeed-quarantine"' not in text  # the whole feed is not a resource of its own
    manager = cli("fortigate-config", "--role", "consume", "--format", "fortimanager", env=env)
    requests = json.loads(manager.stdout)["requests"]
    resources = next(r for r in requests if r["params"][0]["url"].endswith("external-resource"))
    names = [item["name"] for item in resources["params"][0]["data"]]
    assert names[:3] == [f"banfeed-quarantine-{k}" for k in (1, 2, 3)]
    policy = next(r for r in requests if "firewall/policy" in r["params"][0]["url"])
    assert policy["params"][0]["data"]["srcaddr"][:3] == names[:3]


def test_the_kit_warns_when_a_shared_limit_is_sharded(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[[feeds]]\nname = "big"\nlimit = "fortios-7.4"\nshards = 2\n')
    result = cli("--config", str(path), "fortigate-config", "--role", "consume")
    assert "2 shards of limit 300000 (fortios-7.4)" in result.stderr
    assert "add up to 600000" in result.stderr


def test_rollback_to_a_version_without_shards_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text('[store]\nurl = "sqlite:///b.db"\n[[feeds]]\nname = "q"\nlimit = 2\n')
    env = {"BANFEED_CONFIG": str(path)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    fill(store, [offender(f"45.33.0.{i}", last=T0 - i) for i in range(1, 5)])
    store.close()
    assert cli("export", env=env).exit_code == 0  # version 1: one feed, no shards
    path.write_text(path.read_text() + "shards = 2\n")
    assert cli("export", "--feed", "q-2", env=env).stdout == "45.33.0.3\n45.33.0.4\n"
    refused = cli("feeds", "rollback", "q", "1", env=env)
    assert refused.exit_code == 2 and "version 1 has no bytes kept for shard(s) 1, 2" in (
        refused.output
    )
    assert cli("feeds", "rollback", "q", "2", env=env).exit_code == 0


def test_show_says_the_whole_capacity_of_a_sharded_feed(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text(
        '[store]\nurl = "sqlite:///b.db"\n[[feeds]]\nname = "q"\nlimit = 2\nshards = 2\n'
    )
    env = {"BANFEED_CONFIG": str(path)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    store = open_store(f"sqlite:///{tmp_path / 'b.db'}")
    fill(store, [offender(f"45.33.{i * 2}.1", last=T0 - i) for i in range(1, 7)])  # no merging
    store.close()
    assert cli("export", env=env).exit_code == 0
    shown = json.loads(cli("show", "45.33.12.1", "--format", "json", env=env).stdout)
    verdict = shown["feeds"]["q"]
    assert not verdict["listed"] and verdict["why"] == "capped"
    assert (
        "limit (2 × 2 shards): 5 offenders of this feed are ranked before it" in (verdict["reason"])
    )
