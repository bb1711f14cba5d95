"""TAXII 2.1 collections (/taxii2/), read with the OASIS client taxii2-client against a real
server on 127.0.0.1; every object fetched passes the official stix2-validator."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import httpx
import pytest
import requests
from pydantic import SecretStr
from taxii2client.v21 import ApiRoot, Collection, Server, as_pages
from test_stix import cache_of, fill, offender, serving, store, valid

from banfeed.publish import FeedSpec
from banfeed.publish.stix import STIX_FORMAT, identity, stamp
from banfeed.server.app import ServerState
from banfeed.server.auth import FeedAccess
from banfeed.server.cache import FeedCache
from banfeed.server.taxii import TAXII_MEDIA_TYPE, collection_id
from banfeed.server.taxii_objects import index_of
from banfeed.store import Store
from conftest import T0, Clock, daemon_on_a_new_store

__all__ = ["store"]  # the fixture, shared with tests/test_stix.py

PASSWORD = "taxii-pass-0123456789"
LOCKED = FeedAccess("basic", "siem", SecretStr(PASSWORD))


class Site:
    def __init__(self, url: str, cache: FeedCache, clock: Clock, store: Store) -> None:
        self.url, self.cache, self.clock, self.store = url, cache, clock, store

    def collection(self, name: str, user: str | None = None, password: str | None = None) -> Any:
        url = f"{self.url}/taxii2/feeds/collections/{collection_id(name)}/"
        return Collection(url, user=user, password=password)

    def bundle(self, name: str) -> dict[str, Any]:
        rendered = self.cache.render(name, STIX_FORMAT)
        assert rendered is not None
        document: dict[str, Any] = json.loads(rendered.body)
        return document


@pytest.fixture
def site(store: Store) -> Iterator[Site]:
    fill(store, [offender(f"93.184.216.{i}", T0 - 60 - i, T0 + 3600 + i) for i in range(1, 26)])
    clock = Clock(T0)
    specs = [
        FeedSpec("open"),
        FeedSpec("locked"),
        FeedSpec("partners"),
        FeedSpec("s", max_entries=13, shards=2),
    ]
    cache = cache_of(store, clock, *specs)
    access = {
        "open": FeedAccess(),
        "locked": LOCKED,
        "partners": FeedAccess(allow_from=(ip_network("192.0.2.0/24"),)),
        "s": FeedAccess(),
    }
    state = ServerState(cache=cache, access=access, clock=clock, interval=60, collecting=False)
    with serving(state) as url:
        yield Site(url, cache, clock, store)


def checked(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The objects, once the official validator accepts them as one bundle."""
    bundle = {"type": "bundle", "id": "bundle--" + "0" * 8 + "-0000-4000-8000-" + "0" * 12}
    valid(json.dumps({**bundle, "objects": objects}))
    return objects


def test_discovery_api_root_and_collections_as_the_credentials_allow(site: Site) -> None:
    server = Server(f"{site.url}/taxii2/", user="siem", password=PASSWORD)
    assert server.title == "banfeed"
    [root] = server.api_roots
    assert server.default is root and root.url == f"{site.url}/taxii2/feeds/"
    assert root.versions == [TAXII_MEDIA_TYPE] and root.max_content_length == 0
    listed = {c.title: c for c in root.collections}
    # The locked feed with its credentials; "partners" only from 192.0.2.0/24.
    assert sorted(listed) == ["locked", "open", "s", "s-1", "s-2"]
    locked = listed["locked"]
    assert locked.id == collection_id("locked") and locked.can_read and not locked.can_write
    assert locked.media_types == ["application/stix+json;version=2.1"]
    anonymous = ApiRoot(f"{site.url}/taxii2/feeds/")
    assert sorted(c.title for c in anonymous.collections) == ["open", "s", "s-1", "s-2"]


def test_objects_page_with_next_and_match_the_served_bundle(site: Site) -> None:
    collection = site.collection("locked", "siem", PASSWORD)
    pages = list(as_pages(collection.get_objects, per_request=10))
    assert [len(p["objects"]) for p in pages] == [10, 10, 6]  # the identity and 25 lines
    assert [p["more"] for p in pages] == [True, True, False] and "next" not in pages[-1]
    fetched = checked([o for p in pages for o in p["objects"]])
    assert fetched == site.bundle("locked")["objects"]
    only = collection.get_objects(type="identity")
    assert [o["type"] for o in only["objects"]] == ["identity"]
    some = collection.get_objects(id=[fetched[3]["id"], fetched[1]["id"]])
    assert some["objects"] == [fetched[1], fetched[3]]  # the collection's order
    assert collection.get_objects(version=fetched[1]["modified"])["objects"][0] == fetched[1]
    assert "objects" not in collection.get_objects(version="2000-01-01T00:00:00.000Z")
    assert len(collection.get_objects(spec_version="2.1")["objects"]) == 26
    assert "objects" not in collection.get_objects(spec_version="2.0")


def test_added_after_headers_object_versions_and_manifest(site: Site) -> None:
    collection = site.collection("open")
    added = stamp(site.cache.entries["open"].served.version.created)
    with httpx.Client(base_url=collection.url) as client:
        answer = client.get("objects/", params={"limit": 5})
    assert answer.headers["content-type"] == TAXII_MEDIA_TYPE
    assert answer.headers["x-taxii-date-added-first"] == added
    assert answer.headers["x-taxii-date-added-last"] == added
    before = stamp(site.cache.entries["open"].served.version.created - 1)
    assert len(collection.get_objects(added_after=before)["objects"]) == 26
    assert collection.get_objects(added_after=added) == {"more": False}
    records = [r for p in as_pages(collection.get_manifest, per_request=7) for r in p["objects"]]
    objects = collection.get_objects()["objects"]
    assert [r["id"] for r in records] == [o["id"] for o in objects]
    assert {r["date_added"] for r in records} == {added}
    assert [r["version"] for r in records] == [o["modified"] for o in objects]
    line = objects[5]
    assert checked(collection.get_object(line["id"])["objects"]) == [line]
    assert collection.object_versions(line["id"]) == {"more": False, "versions": [line["modified"]]}
    with pytest.raises(requests.HTTPError) as missing:
        collection.get_object("indicator--00000000-0000-4000-8000-000000000000")
    assert missing.value.response.status_code == 404
    assert missing.value.response.json()["http_status"] == "404"


def test_an_object_changed_since_its_version_is_added_again(site: Site) -> None:
    """The feed's lines stay (the same feed version), but one offender behind a line gets a new
    offense: that indicator is a new version, added when it changed, and added_after the
    publication returns it alone, with its new valid_until."""
    collection = site.collection("open")
    added = stamp(site.cache.entries["open"].served.version.created)
    assert collection.get_objects(added_after=added) == {"more": False}
    again = dataclasses.replace(
        offender("93.184.216.7", T0 - 67, T0 + 7200), last_offense=T0 + 30, offense_count=2
    )
    with site.store.write() as tx:
        tx.update_offenders([again], T0 + 30)
        tx.bump_version()
    site.clock.now = T0 + 60
    site.cache.refresh()
    assert site.cache.entries["open"].served.version.number == 1
    with httpx.Client(base_url=collection.url) as client:
        answer = client.get("objects/", params={"added_after": added})
    [changed] = checked(answer.json()["objects"])
    assert changed["name"] == "93.184.216.7" and changed["modified"] == stamp(T0 + 30)
    assert changed["valid_until"] == stamp(T0 + 7200)
    assert answer.headers["x-taxii-date-added-first"] == stamp(T0 + 30)
    assert answer.headers["x-taxii-date-added-last"] == stamp(T0 + 30)
    records = {r["id"]: r for r in collection.get_manifest()["objects"]}
    assert records[changed["id"]]["date_added"] == records[changed["id"]]["version"]
    assert {r["date_added"] for r in records.values()} == {added, stamp(T0 + 30)}
    assert collection.get_objects(added_after=stamp(T0 + 30)) == {"more": False}


def test_a_new_publication_changes_date_added_and_the_objects(site: Site) -> None:
    collection = site.collection("open")
    first = collection.get_objects(limit=10)
    old_added = stamp(site.cache.entries["open"].served.version.created)
    fill(site.store, [offender("1.1.1.1", T0 + 30, T0 + 3600)])
    site.clock.now = T0 + 120
    assert "open" in site.cache.refresh()
    added = stamp(site.cache.entries["open"].served.version.created)
    assert added > old_added
    fresh = checked(collection.get_objects(added_after=old_added)["objects"])
    assert len(fresh) == 27 and "1.1.1.1" in {o.get("name") for o in fresh}
    assert {o["modified"] for o in fresh[1:]} == {added}
    assert {r["date_added"] for r in collection.get_manifest()["objects"]} == {added}
    with pytest.raises(requests.HTTPError) as stale:  # a next of the version before
        collection.get_objects(limit=10, next=first["next"])
    assert stale.value.response.status_code == 400
    assert "changed" in stale.value.response.json()["description"]


def test_each_shard_is_its_own_collection(site: Site) -> None:
    whole = site.collection("s").get_objects()["objects"]
    parts = [checked(site.collection(n).get_objects()["objects"]) for n in ("s-1", "s-2")]
    assert len({collection_id(n) for n in ("s", "s-1", "s-2")}) == 3
    lines = [{o["id"] for o in p if o["type"] == "indicator"} for p in parts]
    assert lines[0] and lines[1] and not lines[0] & lines[1]
    assert lines[0] | lines[1] == {o["id"] for o in whole if o["type"] == "indicator"}


def test_refusals_and_errors_are_taxii_error_messages(site: Site) -> None:
    with pytest.raises(requests.HTTPError) as wrong:
        site.collection("locked", "siem", "wrong").get_objects()
    assert wrong.value.response.status_code == 401
    assert wrong.value.response.headers["www-authenticate"].startswith("Basic ")
    with pytest.raises(requests.HTTPError) as elsewhere:  # 127.0.0.1 is not 192.0.2.0/24
        site.collection("partners").get_objects()
    assert elsewhere.value.response.status_code == 403
    assert elsewhere.value.response.json() == {
        "title": "forbidden",
        "http_status": "403",
        "description": "this address may not read this collection",
    }
    base = f"{site.url}/taxii2/feeds/collections/"
    with httpx.Client(base_url=base) as client:
        assert client.get(f"{collection_id('locked')}/").status_code == 401
        assert client.get(f"{collection_id('partners')}/manifest/").status_code == 403
        wrong_type = client.get(
            f"{collection_id('open')}/objects/", headers={"Accept": "text/html"}
        )
        assert wrong_type.status_code == 406 and wrong_type.json()["http_status"] == "406"
        written = client.post(f"{collection_id('open')}/objects/", json={"objects": []})
        assert written.status_code == 405 and set(written.headers["allow"].split(", ")) == {
            "GET",
            "HEAD",
        }
        assert client.get("00000000-0000-4000-8000-000000000000/").json()["http_status"] == "404"
        assert client.get("/taxii2/nothing/").json()["http_status"] == "404"
        for bad in ({"limit": "0"}, {"limit": "x"}, {"added_after": "yesterday"}, {"next": "z"}):
            answer = client.get(f"{collection_id('open')}/objects/", params=bad)
            assert answer.status_code == 400, bad
        capped = client.get(f"{collection_id('open')}/objects/", params={"limit": 10**9})
        assert capped.status_code == 200 and len(capped.json()["objects"]) == 26


def test_without_the_stix_extra_collections_answer_501(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    identity.cache_clear()
    monkeypatch.setitem(sys.modules, "stix2", None)
    try:
        with pytest.raises(requests.HTTPError) as missing:
            site.collection("open").get_objects()
        assert missing.value.response.status_code == 501
        assert "banfeed[stix]" in missing.value.response.json()["description"]
        assert ApiRoot(f"{site.url}/taxii2/feeds/").collections  # still listed
    finally:
        identity.cache_clear()


def test_a_running_daemon_serves_its_feeds_over_taxii(tmp_path: Path) -> None:
    running = daemon_on_a_new_store(tmp_path)
    try:
        [root] = Server(f"{running.url}/taxii2/").api_roots
        [collection] = [c for c in root.collections if c.title == "quarantine"]
        objects = checked(collection.get_objects()["objects"])
        assert [o["type"] for o in objects] == ["identity"]  # nothing collected yet
    finally:
        running.stop()


def test_objects_are_cut_at_byte_offsets_when_a_bundle_is_not_ascii() -> None:
    # stix2 escapes non-ASCII, but a bundle written with raw UTF-8 must cut the same way.
    objects = [
        {"type": "identity", "id": "identity--1", "name": "Sécurité"},
        {"type": "x", "id": "x--2"},
    ]
    body = json.dumps({"type": "bundle", "objects": objects}, ensure_ascii=False).encode()
    index = index_of(body, T0, 1, '"e"')
    assert [json.loads(body[o.start : o.end]) for o in index.objects] == objects
