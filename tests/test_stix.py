"""STIX 2.1 renderings (/feeds/NAME.stix.json): every document the server makes passes the
official stix2-validator and reads back with stix2.parse; facts, ids, auth and caching."""

from __future__ import annotations

import dataclasses
import gzip
import json
import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
import stix2
import uvicorn
from pydantic import SecretStr, ValidationError
from stix2validator import ValidationOptions, validate_instance, validate_string

from banfeed.config.sections import ServerConfig
from banfeed.models import Ban, BanOrigin, Offender, OffenderStatus
from banfeed.policy import Allowlist
from banfeed.publish import FeedPolicy, FeedSpec, Publisher
from banfeed.publish.stix import STIX_FORMAT, STIX_MEDIA_TYPE, identity, indicator_id, stamp
from banfeed.server import create_app
from banfeed.server.app import ServerState
from banfeed.server.auth import FeedAccess
from banfeed.server.cache import FeedCache
from banfeed.store import Store, open_store
from conftest import T0, Clock, daemon_on_a_new_store, wait_for

POLICY = FeedPolicy(Allowlist())
PASSWORD = "stix-pass-0123456789"
# Every check of the official validator, and created_by_ref resolved inside the bundle.
OPTIONS = ValidationOptions(version="2.1", enforce_refs=True)


def offender(
    ip: str, first: int, until: int | None, causes: tuple[str, ...] = ("IPS",)
) -> Offender:
    return Offender(
        ip_address(ip),
        first,
        first,
        1,
        causes,
        ("fw",),
        ("fw/root",),
        until,
        OffenderStatus.LISTED,
    )


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(f"sqlite:///{tmp_path / 'banfeed.db'}", create=True)
    yield opened
    opened.close()


def fill(store: Store, offenders: list[Offender], bans: tuple[Ban, ...] = ()) -> None:
    with store.write() as tx:
        tx.insert_offenders(offenders, T0)
        for ban in bans:
            tx.save_ban(ban)
        tx.bump_version()


def cache_of(store: Store, clock: Clock, *specs: FeedSpec, name: str = "banfeed") -> FeedCache:
    cache = FeedCache(
        store, Publisher(store, list(specs), POLICY, clock), clock, stix_identity=name
    )
    cache.refresh()
    return cache


def valid(text: str) -> dict[str, Any]:
    """The document, once the validator (as a string and as an instance) and stix2 accept it.
    The one warning allowed: {103}, ids are uuid5 (stable across versions), not uuid4."""
    for results in (validate_string(text, OPTIONS), validate_instance(json.loads(text), OPTIONS)):
        assert results.is_valid, [str(e) for e in results.errors]
        assert not [w for w in results.warnings if "{103}" not in str(w)]
    assert stix2.parse(text, allow_custom=False).type == "bundle"
    document: dict[str, Any] = json.loads(text)
    return document


def stix_of(cache: FeedCache, name: str) -> dict[str, Any]:
    rendered = cache.render(name, STIX_FORMAT)
    assert rendered is not None and rendered.media_type == STIX_MEDIA_TYPE
    return valid(rendered.body.decode("utf-8"))


def indicators(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The indicators by line, after the one identity that is credited with each."""
    head, *rest = document["objects"]
    assert head["type"] == "identity"
    assert all(o["type"] == "indicator" and o["created_by_ref"] == head["id"] for o in rest)
    return {o["name"]: o for o in rest}


def test_a_small_feed_is_valid_stix_with_each_offenders_facts(store: Store) -> None:
    fill(
        store,
        [
            offender("93.184.216.34", T0 - 3600, T0 + 7200, ("IPS", "DoS Policy")),
            offender("1.1.1.1", T0 - 60, None),  # forever: no valid_until
        ],
    )
    clock = Clock(T0)
    cache = cache_of(store, clock, FeedSpec("f"), name="Example SOC")
    document = stix_of(cache, "f")
    assert document["objects"][0]["name"] == "Example SOC"
    assert document["objects"][0]["identity_class"] == "system"
    found = indicators(document)
    assert list(found) == ["1.1.1.1", "93.184.216.34"]  # the feed's lines, its order
    one, other = found["93.184.216.34"], found["1.1.1.1"]
    assert one["pattern"] == "[ipv4-addr:value = '93.184.216.34']"
    assert one["pattern_type"] == "stix" and one["indicator_types"] == ["malicious-activity"]
    assert one["valid_from"] == stamp(T0 - 3600) and one["valid_until"] == stamp(T0 + 7200)
    assert one["labels"] == ["dos policy", "ips"]
    assert one["id"] == indicator_id("f", "93.184.216.34")
    version = cache.entries["f"].served.version
    assert one["modified"] == stamp(version.created) and one["created"] == stamp(T0 - 3600)
    assert other["valid_from"] == stamp(T0 - 60) and "valid_until" not in other


def test_aggregated_lines_ipv6_and_a_ban_take_their_members_facts(store: Store) -> None:
    block = [offender(f"45.33.32.{i}", T0 - 100 * (i + 1), T0 + 1000 * (i + 1)) for i in range(4)]
    mixed = [offender("45.33.40.0", T0 - 50, T0 + 50, ("AV",)), offender("45.33.40.1", T0, None)]
    v6 = [offender("2606:4700::1110", T0 - 30, T0 + 30), offender("2606:4700::1111", T0, T0 + 90)]
    ban = Ban(ip_network("185.199.108.0/24"), T0 - 500, T0 + 9000, BanOrigin.MANUAL, "op")
    fill(store, block + mixed + v6, (ban,))
    found = indicators(stix_of(cache_of(store, Clock(T0), FeedSpec("f", aggregate=True)), "f"))
    assert list(found) == [
        "45.33.32.0/30",
        "45.33.40.0/31",
        "185.199.108.0/24",
        "2606:4700::1110/127",
    ]
    cidr = found["45.33.32.0/30"]
    assert cidr["pattern"] == "[ipv4-addr:value = '45.33.32.0/30']"
    assert cidr["valid_from"] == stamp(T0 - 400) and cidr["valid_until"] == stamp(T0 + 4000)
    pair = found["45.33.40.0/31"]  # one member is listed forever: so is the line
    assert "valid_until" not in pair and pair["labels"] == ["av", "ips"]
    banned = found["185.199.108.0/24"]  # a ban: its creation and expiry
    assert banned["valid_from"] == stamp(T0 - 500) and banned["valid_until"] == stamp(T0 + 9000)
    assert banned["labels"] == ["manual-ban"]
    six = found["2606:4700::1110/127"]
    assert six["pattern"] == "[ipv6-addr:value = '2606:4700::1110/127']"
    assert six["valid_from"] == stamp(T0 - 30) and six["valid_until"] == stamp(T0 + 90)


def test_valid_until_is_never_before_valid_from(store: Store) -> None:
    # A device whose clock runs ahead: the offense starts after the time it is active until.
    fill(store, [offender("93.184.216.34", T0 + 500, T0 + 100)])
    found = indicators(stix_of(cache_of(store, Clock(T0), FeedSpec("f")), "f"))
    line = found["93.184.216.34"]
    assert line["valid_from"] == stamp(T0 + 500) and line["valid_until"] == stamp(T0 + 501)
    assert line["created"] <= line["modified"]  # created: never after the version


def test_each_shard_is_a_valid_bundle_of_the_feeds_own_indicators(store: Store) -> None:
    fill(store, [offender(f"93.184.216.{i}", T0 - i, T0 + 600 + i) for i in range(1, 6)])
    cache = cache_of(store, Clock(T0), FeedSpec("s", max_entries=3, shards=2))
    whole = indicators(stix_of(cache, "s"))
    parts = [indicators(stix_of(cache, shard)) for shard in ("s-1", "s-2")]
    assert len(whole) == 5 and sorted(len(p) for p in parts) == [2, 3]
    merged = {**parts[0], **parts[1]}
    assert {k: v["id"] for k, v in merged.items()} == {k: v["id"] for k, v in whole.items()}
    for line, found in merged.items():
        assert found["valid_from"] == whole[line]["valid_from"]
        assert found["valid_until"] == whole[line]["valid_until"]


def test_an_indicator_whose_facts_change_is_a_new_version_of_it(store: Store) -> None:
    """Between feed versions the lines stay, but what is behind one can change (a new offense
    extends its valid_until, adds a cause): its modified moves with it, so a consumer that keeps
    the newest (id, modified) never holds the old valid_until; the other lines stay as they were."""
    fill(
        store,
        [offender("93.184.216.34", T0 - 60, T0 + 3600), offender("1.1.1.1", T0 - 60, T0 + 3600)],
    )
    clock = Clock(T0)
    cache = cache_of(store, clock, FeedSpec("f"))
    before = indicators(stix_of(cache, "f"))
    again = dataclasses.replace(
        offender("93.184.216.34", T0 - 60, T0 + 7200, ("IPS", "DoS")),
        last_offense=T0 + 30,
        offense_count=2,
    )
    with store.write() as tx:
        tx.update_offenders([again], T0 + 30)
        tx.bump_version()
    clock.now = T0 + 60
    cache.refresh()
    assert cache.entries["f"].served.version.number == 1  # the same lines: the same version
    after = indicators(stix_of(cache, "f"))
    changed, old = after["93.184.216.34"], before["93.184.216.34"]
    assert changed["id"] == old["id"] and old["modified"] < changed["modified"] == stamp(T0 + 30)
    assert changed["valid_until"] == stamp(T0 + 7200) != old["valid_until"]
    assert changed["labels"] == ["dos", "ips"] and changed["created"] == old["created"]
    assert after["1.1.1.1"] == before["1.1.1.1"]


def test_ids_are_stable_across_versions_and_distinct_across_feeds(store: Store) -> None:
    fill(store, [offender("93.184.216.34", T0 - 60, T0 + 3600)])
    clock = Clock(T0)
    cache = cache_of(store, clock, FeedSpec("a"), FeedSpec("b"))
    first, other = indicators(stix_of(cache, "a")), indicators(stix_of(cache, "b"))
    fill(store, [offender("1.1.1.1", T0 + 30, T0 + 3600)])
    clock.now = T0 + 60
    assert "a" in cache.refresh()
    assert cache.entries["a"].served.version.number == 2
    second = indicators(stix_of(cache, "a"))
    kept, before = second["93.184.216.34"], first["93.184.216.34"]
    assert kept["id"] == before["id"] != other["93.184.216.34"]["id"]
    assert kept["created"] == before["created"] and kept["modified"] > before["modified"]
    assert second["1.1.1.1"]["id"] not in {i["id"] for i in first.values()}


@contextmanager
def serving(state: ServerState) -> Iterator[str]:
    """The feed server on a real socket of 127.0.0.1 (uvicorn in a thread)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(state), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="server")
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def site(store: Store) -> Iterator[tuple[str, FeedCache]]:
    fill(store, [offender("93.184.216.34", T0 - 60, T0 + 3600)])
    clock = Clock(T0)
    specs = [FeedSpec(n) for n in ("open", "locked", "partners", "x.stix")]
    cache = cache_of(store, clock, *specs)
    access = {
        "open": FeedAccess(),
        "locked": FeedAccess("basic", "fortigate", SecretStr(PASSWORD)),
        "partners": FeedAccess(allow_from=(ip_network("192.0.2.0/24"),)),
        "x.stix": FeedAccess(),
    }
    state = ServerState(cache=cache, access=access, clock=clock, interval=60, collecting=False)
    with serving(state) as url:
        yield url, cache


def test_over_http_auth_allow_from_etag_304_and_gzip_apply(site: tuple[str, FeedCache]) -> None:
    url, cache = site
    with httpx.Client(base_url=url, headers={"Accept-Encoding": "identity"}) as client:
        assert client.get("/feeds/locked.stix.json").status_code == 401
        assert client.get("/feeds/partners.stix.json").status_code == 403  # not 192.0.2.0/24
        assert client.get("/feeds/nothing.stix.json").status_code == 404
        ok = client.get("/feeds/locked.stix.json", auth=("fortigate", PASSWORD))
        assert ok.status_code == 200 and ok.headers["content-type"] == STIX_MEDIA_TYPE
        assert indicators(valid(ok.text))["93.184.216.34"]["id"] == indicator_id(
            "locked", "93.184.216.34"
        )
        again = client.get(
            "/feeds/locked.stix.json",
            auth=("fortigate", PASSWORD),
            headers={"If-None-Match": ok.headers["etag"]},
        )
        assert again.status_code == 304 and again.headers["etag"] == ok.headers["etag"]
        zipped = client.get("/feeds/open.stix.json", headers={"Accept-Encoding": "gzip"})
        assert zipped.headers["content-encoding"] == "gzip"
        assert zipped.headers["etag"].endswith('-gzip"')
        plain = client.get("/feeds/open.stix.json")
        assert zipped.content == plain.content  # httpx decoded it
        assert gzip.decompress(cache.entries["open"].others[STIX_FORMAT][1].gzipped) == (
            plain.content
        )
        # Rendered once for the store version: the same object serves every request.
        cached = cache.entries["open"].others[STIX_FORMAT][1]
        client.get("/feeds/open.stix.json")
        assert cache.entries["open"].others[STIX_FORMAT][1] is cached
        # A feed named "x.stix" keeps its JSON; its STIX is x.stix.stix.json.
        assert isinstance(client.get("/feeds/x.stix.json").json(), list)
        assert valid(client.get("/feeds/x.stix.stix.json").text)["type"] == "bundle"


def test_without_the_stix_extra_the_format_answers_501(
    site: tuple[str, FeedCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, _cache = site
    identity.cache_clear()
    monkeypatch.setitem(sys.modules, "stix2", None)  # what an install without the extra sees
    try:
        with httpx.Client(base_url=url) as client:
            missing = client.get("/feeds/open.stix.json")
            assert missing.status_code == 501 and "banfeed[stix]" in missing.text
            assert client.get("/feeds/locked.stix.json").status_code == 401  # auth first
            assert client.get("/feeds/open.txt").text == "93.184.216.34\n"
            assert client.get("/feeds/open.json").status_code == 200
    finally:
        identity.cache_clear()


def test_stix_identity_is_a_server_setting() -> None:
    assert ServerConfig().stix_identity == "banfeed"
    assert ServerConfig(stix_identity="Example SOC").stix_identity == "Example SOC"
    with pytest.raises(ValidationError):
        ServerConfig(stix_identity="")


def test_an_empty_feed_is_a_bundle_of_the_identity_alone(store: Store) -> None:
    fill(store, [])
    document = stix_of(cache_of(store, Clock(T0), FeedSpec("f")), "f")
    assert [o["type"] for o in document["objects"]] == ["identity"]


def test_a_running_daemon_credits_its_bundles_to_the_configured_identity(tmp_path: Path) -> None:
    running = daemon_on_a_new_store(tmp_path, 'stix_identity = "Example SOC"\n')
    try:
        answer = httpx.get(f"{running.url}/feeds/quarantine.stix.json", timeout=10)
        assert answer.status_code == 200, answer.text
        [identity] = [o for o in answer.json()["objects"] if o["type"] == "identity"]
        assert identity["name"] == "Example SOC"
    finally:
        running.stop()
