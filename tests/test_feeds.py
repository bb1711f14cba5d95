"""Feeds: caps, aggregation, time-driven changes, deterministic bytes and ETags, atomic files."""

from __future__ import annotations

from ipaddress import ip_address, ip_network
from pathlib import Path

import pytest

from banfeed.errors import ExportError
from banfeed.models import Ban, BanOrigin, Offender, OffenderStatus
from banfeed.policy import Allowlist
from banfeed.publish import FeedPolicy, FeedSpec, Publisher
from banfeed.publish.render import write_atomically
from banfeed.server.cache import FeedCache
from banfeed.setupkit import fortigate_config
from banfeed.store import open_store
from conftest import T0, Clock, build_feed

NONE = Allowlist()
POLICY = FeedPolicy(NONE)


def offender(ip: str, last: int = T0, count: int = 1, until: int | None = None) -> Offender:
    return Offender(
        ip_address(ip),
        last,
        last,
        count,
        ("IPS",),
        ("fw",),
        ("fw/root",),
        until,
        OffenderStatus.LISTED,
    )


def fill(store_url: str, offenders: list[Offender]) -> None:
    store = open_store(store_url, create=True)
    with store.write() as tx:
        tx.insert_offenders(offenders, T0)
        tx.bump_version()
    store.close()


def test_cap_aggregates_first_then_keeps_most_recent_and_most_repeated(store_url: str) -> None:
    block = [offender(f"45.33.32.{i}", last=T0 - 100) for i in range(8)]  # 45.33.32.0/29
    loose = [
        offender("93.184.216.34", last=T0 - 5, count=1),
        offender("1.1.1.1", last=T0 - 5, count=3),
    ]
    fill(store_url, block + loose)
    store = open_store(store_url)
    with store.read() as tx:
        roomy = build_feed(tx, FeedSpec("f", max_entries=20), POLICY, T0)
        tight = build_feed(tx, FeedSpec("f", max_entries=3), POLICY, T0)
        tiny = build_feed(tx, FeedSpec("f", max_entries=2), POLICY, T0)
    store.close()
    assert len(roomy.entries) == 10 and roomy.overflow == 0  # no aggregation asked, none needed
    assert [str(e) for e in tight.entries] == ["1.1.1.1", "45.33.32.0/29", "93.184.216.34"]
    assert tight.overflow == 0  # lossless merge was enough
    assert [str(e) for e in tiny.entries] == ["1.1.1.1", "93.184.216.34"]  # most recent kept
    assert tiny.overflow == 8 and len(tiny.matched) == 10


def test_aggregate_flag_merges_and_stays_lossless(store_url: str) -> None:
    fill(store_url, [offender(f"45.33.32.{i}") for i in range(4)] + [offender("45.33.32.9")])
    store = open_store(store_url)
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f", aggregate=True), POLICY, T0)
    store.close()
    assert build.text() == b"45.33.32.0/30\n45.33.32.9\n"


def test_feed_changes_when_an_offender_expires_without_a_store_change(store_url: str) -> None:
    fill(store_url, [offender("1.1.1.1", until=T0 + 100), offender("8.8.4.4", until=T0 + 1000)])
    clock = Clock(T0)
    store = open_store(store_url)
    cache = FeedCache(store, Publisher(store, [FeedSpec("f")], POLICY, clock), clock)
    assert cache.refresh() == ["f"]
    first = cache.get("f", "txt")
    assert first is not None and first.body == b"1.1.1.1\n8.8.4.4\n"
    clock.now = T0 + 50
    assert cache.refresh() == []  # nothing can have changed: no rebuild
    clock.now = T0 + 100
    assert cache.refresh() == ["f"]
    second = cache.get("f", "txt")
    assert second is not None and second.body == b"8.8.4.4\n" and second.etag != first.etag
    store.close()


def test_etag_follows_bytes_and_replicas_agree(store_url: str) -> None:
    fill(store_url, [offender("1.1.1.1"), offender("2.2.2.2")])
    clock = Clock(T0)
    one, two = open_store(store_url), open_store(store_url)
    a = FeedCache(one, Publisher(one, [FeedSpec("f")], POLICY, clock), clock)
    b = FeedCache(two, Publisher(two, [FeedSpec("f")], POLICY, clock), clock)
    a.refresh()
    clock.now += 30
    b.refresh()
    ra, rb = a.get("f", "txt"), b.get("f", "txt")
    assert ra is not None and rb is not None
    assert (ra.body, ra.etag, ra.gzipped, ra.last_modified) == (
        rb.body,
        rb.etag,
        rb.gzipped,
        rb.last_modified,
    )
    # The store changes but the feed's bytes do not (a private address arrives): same ETag.
    with one.write() as tx:
        tx.insert_offenders([offender("10.1.1.1")], T0)
        tx.bump_version()
    clock.now += 30
    assert a.refresh() == []  # rebuilt, but no new version: the same bytes are served
    again = a.get("f", "txt")
    assert again is not None and again.etag == ra.etag and again.last_modified == ra.last_modified
    one.close()
    two.close()


def test_write_atomically_replaces_and_reports_errors(tmp_path: Path) -> None:
    target = tmp_path / "ips.txt"
    write_atomically(target, b"1.1.1.1\n")
    target.chmod(0o640)
    write_atomically(target, b"2.2.2.2\n")
    assert target.read_bytes() == b"2.2.2.2\n"
    assert target.stat().st_mode & 0o777 == 0o640  # the operator's mode is kept
    assert [p.name for p in tmp_path.iterdir()] == ["ips.txt"]
    with pytest.raises(ExportError, match="cannot write"):
        write_atomically(tmp_path / "missing" / "ips.txt", b"x")


def test_fortigate_config_truncates_names_to_fortios_limits() -> None:
    text = fortigate_config("a" * 60, "http://192.0.2.1:8080", None, 5)
    quoted = ('edit "', 'set name "', 'set srcaddr "')
    names = [line.split('"')[1] for line in text.splitlines() if any(k in line for k in quoted)]
    assert len(names) >= 3 and all(len(n) <= 35 for n in names)  # feed, deny, local-in
    assert "server-identity-check" not in text and "username" not in text


def test_bans_over_the_cap_are_counted_never_dropped_silently(store_url: str) -> None:
    store = open_store(store_url, create=True)
    with store.write() as tx:
        for net in ("45.33.1.0/24", "45.33.3.0/24", "45.33.5.0/24"):
            tx.save_ban(Ban(ip_network(net), T0, None, BanOrigin.MANUAL, "test"))
        tx.bump_version()
    with store.read() as tx:
        build = build_feed(tx, FeedSpec("f", max_entries=2), POLICY, T0)
    store.close()
    assert len(build.entries) == 2 and build.overflow == 1


@pytest.mark.parametrize("count", [0, 1, 2, 2500])
def test_streamed_renderings_equal_the_whole_ones(count: int) -> None:
    import csv as csv_mod
    import io
    import json as json_mod

    from banfeed.publish.render import CSV_COLUMNS, csv_chunks, json_chunks, offender_record

    rows = [
        offender(f"45.{i // 65536}.{i // 256 % 256}.{i % 256}", count=i + 1) for i in range(count)
    ]
    records = [offender_record(o, T0, NONE) for o in rows]
    assert "".join(json_chunks(rows, T0, NONE)) == json_mod.dumps(records, indent=1) + "\n"
    expected = io.StringIO()
    writer = csv_mod.writer(expected, lineterminator="\r\n")  # RFC 4180
    writer.writerow(CSV_COLUMNS)
    for r in records:
        r["sources"], r["devices"] = " ".join(r["sources"]), " ".join(r["devices"])
        writer.writerow(["" if r[c] is None else r[c] for c in CSV_COLUMNS])
    assert "".join(csv_chunks(rows, T0, NONE)) == expected.getvalue()


def test_csv_cells_a_spreadsheet_would_run_are_quoted_as_text() -> None:
    """A cause is a device's text: one that starts like a formula is written as text, and the
    rows end in CRLF, the same rule as the dashboard's search export."""
    import csv as csv_mod
    import dataclasses
    import io

    from banfeed.publish.render import CSV_COLUMNS, csv_chunks

    causes = ('=HYPERLINK("http://example.invalid")', "@SUM(A1)", "-1+1", "IPS")
    row = dataclasses.replace(offender("45.33.32.156"), sources=causes, devices=("+fw",))
    text = "".join(csv_chunks([row], T0, NONE))
    assert text.endswith("\r\n") and text.count("\r\n") == 2
    [record] = csv_mod.DictReader(io.StringIO(text), fieldnames=None)
    assert list(record) == list(CSV_COLUMNS)
    assert record["sources"] == "'" + " ".join(causes)
    assert record["devices"] == "'+fw" and record["ip"] == "45.33.32.156"
