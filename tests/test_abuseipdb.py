"""Reporting new offenders to AbuseIPDB (``[abuseipdb]``), against a local fake of its API.

The fake is a real HTTP server on 127.0.0.1 that checks the ``Key`` and ``Accept`` headers and
the form fields, and answers 429 with ``Retry-After`` when told to; the store is a real SQLite
file (or the real PostgreSQL). Assertions are on what the fake received.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from ipaddress import ip_address
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.collector import CycleReport
from banfeed.config.abuseipdb import AbuseIPDBConfig
from banfeed.cycles import push_after_cycle
from banfeed.errors import ConfigError
from banfeed.ingest import Published
from banfeed.models import Offender, OffenderStatus
from banfeed.policy import build_allowlist
from banfeed.push import Backoff, FeedSync
from banfeed.sharing import abuseipdb
from banfeed.store import Store, open_store
from banfeed.store._abuse import AbuseReport, ReportStatus
from conftest import T0, Clock, cli, fortigate_toml, write_config

KEY = "abuse-key-0123456789"


class FakeAbuseIPDB:
    """``POST /api/v2/report``: 401 without the right key, 422 without ip or categories, the
    next ``throttle`` requests 429 with ``Retry-After: 1``; holds requests while ``hold`` is
    clear."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []  # every request: form, status, time
        self.throttle = 0
        self.hold = threading.Event()
        self.hold.set()
        self.arrived = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                fake.arrived += 1
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                fake.hold.wait(30)
                form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
                headers = {}
                if self.headers.get("Key") != KEY:
                    status = 401
                elif self.path != "/api/v2/report" or self.headers.get("Accept") != (
                    "application/json"
                ):
                    status = 404
                elif not {"ip", "categories"} <= form.keys():
                    status = 422
                elif fake.throttle:
                    fake.throttle -= 1
                    status, headers = 429, {"Retry-After": "1"}
                else:
                    status = 200
                fake.received.append({"form": form, "status": status, "at": time.monotonic()})
                payload = b'{"data": {}}'
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reported(self) -> dict[str, dict[str, str]]:
        return {r["form"]["ip"]: r["form"] for r in self.received if r["status"] == 200}

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake() -> Iterator[FakeAbuseIPDB]:
    running = FakeAbuseIPDB()
    yield running
    running.stop()


@pytest.fixture
def key_env(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("ABUSE_KEY", KEY)
    return "ABUSE_KEY"


def offender(ip: str, source: str = "IPS", count: int = 1) -> Offender:
    return Offender(
        ip_address(ip),
        T0 - 86400 * 3,
        T0 - 10,
        count,
        (source,),
        ("edge-fw1",),
        ("edge-fw1/cust-vdom7",),
        None,
        OffenderStatus.LISTED,
    )


def section(url: str, **extra: Any) -> AbuseIPDBConfig:
    return AbuseIPDBConfig.model_validate(
        {"enabled": True, "url": url, "key_env": "ABUSE_KEY", **extra}
    )


def offer(store: Store, sec: AbuseIPDBConfig, offenders: list[Offender], **extra: Any) -> int:
    return abuseipdb.offer(
        store,
        sec,
        offenders,
        base_dir=Path("."),
        private=["edge-fw1", "cust-vdom7"],
        never=build_allowlist([]),
        clock=extra.get("clock", Clock(T0)),
    )


def rows(store: Store) -> list[AbuseReport]:
    with store.read() as tx:
        return tx.recent_abuse_reports(100)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    opened = open_store(store_url, create=True)
    yield opened
    opened.close()


# -- end to end: a real cycle of a simulated FortiGate, `banfeed collect` ------------------------


@pytest.fixture
def site(
    fleet: simulator.SimFleet, run_sim: Any, tmp_path: Path, fake: FakeAbuseIPDB
) -> dict[str, Any]:
    """One FortiGate with an IPS, a DoS, an APP offender and four that are never reported
    (allowlisted, protected, excluded, never-block); a comment template that tries to name the
    device, a VDOM and one of our addresses."""
    device = fleet.add_device("edge-fw1", token="tok-1", vdoms=["root", "cust-vdom7"], entries=0)
    sources = {
        "45.33.32.156": "IPS",
        "91.240.118.7": "DoS",
        "2a0e:1c80:1::9": "APP",
        "8.8.8.8": "IPS",  # allowlist
        "185.220.101.5": "IPS",  # [safety] protect: ours
        "5.188.10.10": "IPS",  # [abuseipdb] exclude
        "100.64.1.1": "IPS",  # never-block (shared address space)
    }
    for ip, source in sources.items():
        device.add("cust-vdom7", ip, created=T0 - 10, source=source)
    urls = run_sim()
    body = fortigate_toml("edge-fw1", urls["edge-fw1"], "TOK_1", '["root", "cust-vdom7"]')
    body += (
        '[safety]\nprotect = ["185.220.101.0/24"]\n\n'
        f'[abuseipdb]\nenabled = true\nurl = "{fake.url}"\nkey_env = "ABUSE_KEY"\n'
        'exclude = ["5.188.10.0/24"]\ntimeout = "2s"\n'
        'comment = "edge-fw1 (cust-vdom7, 185.220.101.1) saw {cause} x{offenses} '
        'from {first_seen} to {last_seen}"\n'
    )
    config = write_config(tmp_path / "banfeed.toml", "sqlite:///banfeed.db", body, '["8.8.8.0/24"]')
    env = {"TOK_1": "tok-1", "ABUSE_KEY": KEY, "BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    return {"config": config, "env": env, "device": device, "db": tmp_path / "banfeed.db"}


def test_collect_reports_what_would_be_published_with_mapped_categories(
    site: dict[str, Any], fake: FakeAbuseIPDB
) -> None:
    result = cli("collect", env=site["env"])
    assert result.exit_code == 0, result.output
    got = fake.reported()
    assert set(got) == {"45.33.32.156", "91.240.118.7", "2a0e:1c80:1::9"}
    assert got["45.33.32.156"]["categories"] == "15,21"  # IPS → hacking, web app attack
    assert got["91.240.118.7"]["categories"] == "4"  # DoS → DDoS attack
    assert got["2a0e:1c80:1::9"]["categories"] == "15"  # APP → hacking
    for form in got.values():
        comment = form["comment"]
        assert "IPS" in comment or "DoS" in comment or "APP" in comment
        for secret in ("edge-fw1", "cust-vdom7", "185.220.101", "127.0.0.1", "tok-1", "root"):
            assert secret not in comment, comment
        assert form["timestamp"].endswith("Z")
    assert "saw IPS x1 from" in got["45.33.32.156"]["comment"]
    with sqlite3.connect(site["db"]) as db:
        stored = db.execute("SELECT ip, categories, status FROM abuseipdb_reports").fetchall()
    assert sorted(stored) == sorted(
        [("45.33.32.156", "15,21", "reported"), ("91.240.118.7", "4", "reported"),
         ("2a0e:1c80:1::9", "15", "reported")]
    )  # fmt: skip


def test_a_restarted_banfeed_does_not_report_an_address_again(
    site: dict[str, Any], fake: FakeAbuseIPDB
) -> None:
    assert cli("collect", env=site["env"]).exit_code == 0
    assert len(fake.reported()) == 3
    # A new offense of the same address, collected by a new process over the same store.
    site["device"].add("root", "45.33.32.156", created=T0 - 5, source="DoS")
    site["device"].add("root", "80.82.77.33", created=T0 - 5, source="AV")
    done = subprocess.run(
        [sys.executable, "-m", "banfeed", "collect"],
        env={**os.environ, **site["env"]},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    sent = [r["form"]["ip"] for r in fake.received if r["status"] == 200]
    assert sent.count("45.33.32.156") == 1  # remembered across the restart
    assert fake.reported()["80.82.77.33"]["categories"] == "20"  # AV → exploited host


def test_what_a_stopped_banfeed_left_unsent_is_reported_by_the_next_one(
    site: dict[str, Any], fake: FakeAbuseIPDB
) -> None:
    """The API refused the key, so the first process exits with its queue unsent; the next one
    has no new offense to offer, yet reports what was left, through the same rules (an address
    allowed in the store meanwhile is not reported), and no address twice."""
    refused = cli("collect", env={**site["env"], "ABUSE_KEY": "a-wrong-key"})
    assert refused.exit_code == 0, refused.output
    assert {r["status"] for r in fake.received} == {401} and fake.reported() == {}
    assert cli("allow", "add", "91.240.118.7", env=site["env"]).exit_code == 0
    shown = json.loads(cli("abuseipdb", "status", "--format", "json", env=site["env"]).stdout)
    assert shown["today"] == 0 and shown["reports"] == []
    assert shown["queued"] is None  # known only in the process that sends
    assert cli("collect", env=site["env"]).exit_code == 0
    assert set(fake.reported()) == {"45.33.32.156", "2a0e:1c80:1::9"}
    assert fake.reported()["45.33.32.156"]["categories"] == "15,21"
    assert cli("collect", env=site["env"]).exit_code == 0  # a third: nothing left to send
    sent = [r["form"]["ip"] for r in fake.received if r["status"] == 200]
    assert sorted(sent) == ["2a0e:1c80:1::9", "45.33.32.156"]


def test_status_shows_todays_count_and_the_reports(
    site: dict[str, Any], fake: FakeAbuseIPDB
) -> None:
    assert cli("collect", env=site["env"]).exit_code == 0
    result = cli("abuseipdb", "status", "--format", "json", env=site["env"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["enabled"] is True and shown["today"] == 3 and shown["daily_limit"] == 1000
    assert {r["ip"] for r in shown["reports"]} == set(fake.reported())
    table = cli("abuseipdb", "status", env=site["env"])
    assert "3/1000 reports today" in table.stdout and "45.33.32.156" in table.stdout


def test_check_fails_when_enabled_without_its_key(site: dict[str, Any]) -> None:
    env = {**site["env"], "ABUSE_KEY": ""}
    result = cli("check", env=env)
    assert result.exit_code == 2
    assert "abuseipdb.key_env: $ABUSE_KEY is not set" in result.stderr


# -- the reporter: rate limits, the daily limit, failures ----------------------------------------


def test_a_429_is_honoured_with_its_retry_after(
    store: Store, fake: FakeAbuseIPDB, key_env: str
) -> None:
    fake.throttle = 1

    async def run() -> None:
        offer(store, section(fake.url), [offender("45.33.32.156"), offender("91.240.118.7", "DoS")])
        assert await abuseipdb.drain(store, 30)

    asyncio.run(run())
    statuses = [r["status"] for r in fake.received]
    assert statuses == [429, 200, 200]
    assert fake.received[1]["at"] - fake.received[0]["at"] >= 0.95  # waited Retry-After: 1
    assert fake.received[1]["form"]["ip"] == "45.33.32.156"  # the refused one, sent again
    assert {r.ip for r in rows(store)} == {"45.33.32.156", "91.240.118.7"}


def test_the_daily_limit_counted_from_the_store_stops_reports(
    store: Store, fake: FakeAbuseIPDB, key_env: str
) -> None:
    with store.write() as tx:  # reported earlier today, by a previous run
        tx.insert_abuse_report(AbuseReport("1.2.3.4", T0 - 60, (15,), ReportStatus.REPORTED))
        tx.insert_abuse_report(AbuseReport("1.2.3.5", T0 - 60, (15,), ReportStatus.REPORTED))
        tx.insert_abuse_report(AbuseReport("1.2.3.6", T0 - 60, (15,), ReportStatus.REJECTED))

    async def run() -> None:
        ips = ["45.33.32.156", "91.240.118.7", "80.82.77.33"]
        assert offer(store, section(fake.url, daily_limit=3), [offender(ip) for ip in ips]) == 3
        assert await abuseipdb.drain(store, 30)

    asyncio.run(run())
    assert list(fake.reported()) == ["45.33.32.156"]
    assert abuseipdb.status(store, section(fake.url, daily_limit=3), now=T0, limit=5).today == 3


def test_min_offenses_and_repeat_after(store: Store, fake: FakeAbuseIPDB, key_env: str) -> None:
    clock = Clock(T0)
    sec = section(fake.url, min_offenses=2, repeat_after="1h")

    async def run() -> None:
        offer(
            store, sec, [offender("45.33.32.156", count=2), offender("91.240.118.7")], clock=clock
        )
        assert await abuseipdb.drain(store, 30)
        clock.now = T0 + 1800  # within repeat_after: not again
        offer(store, sec, [offender("45.33.32.156", count=3)], clock=clock)
        assert await abuseipdb.drain(store, 30)
        clock.now = T0 + 3700  # after it: again
        offer(store, sec, [offender("45.33.32.156", count=4)], clock=clock)
        assert await abuseipdb.drain(store, 30)

    asyncio.run(run())
    sent = [r["form"]["ip"] for r in fake.received]
    assert sent == ["45.33.32.156", "45.33.32.156"]  # one offense only: 91.240.118.7 is not
    assert (
        "x4" in fake.received[-1]["form"]["comment"]
        or "4 offenses" in (fake.received[-1]["form"]["comment"])
    )


def test_disabled_sends_nothing(store: Store, fake: FakeAbuseIPDB, key_env: str) -> None:
    config = config_mod.parse(
        {"abuseipdb": {"url": fake.url, "key_env": "ABUSE_KEY"}}, base_dir=Path(".")
    )
    report = CycleReport(started=T0)
    report.published = Published()
    report.published.add(offender("45.33.32.156"), ("edge-fw1",))

    async def run() -> None:
        await push_after_cycle(
            config, store, report, None, now=T0, backoff=Backoff(), sync=FeedSync()
        )
        assert await abuseipdb.drain(store, 5)

    asyncio.run(run())
    assert fake.arrived == 0 and rows(store) == []


def test_a_hanging_api_never_holds_up_the_cycle(
    store: Store, fake: FakeAbuseIPDB, key_env: str
) -> None:
    config = config_mod.parse(
        {"abuseipdb": {"enabled": True, "url": fake.url, "key_env": "ABUSE_KEY"}},
        base_dir=Path("."),
    )
    report = CycleReport(started=T0)
    report.published = Published()
    report.published.add(offender("45.33.32.156"), ("edge-fw1",))
    fake.hold.clear()  # the API takes every request and answers none

    async def run() -> None:
        await push_after_cycle(
            config, store, report, None, now=T0, backoff=Backoff(), sync=FeedSync()
        )
        assert fake.received == []  # the cycle is over; the report is not answered yet
        while fake.arrived == 0:  # it is being sent, in the background
            await asyncio.sleep(0.01)
        fake.hold.set()
        assert await abuseipdb.drain(store, 30)

    asyncio.run(run())
    assert list(fake.reported()) == ["45.33.32.156"]


def test_a_dead_api_keeps_the_queue_and_backs_off(store: Store, key_env: str) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}/api/v2"

    async def run() -> None:
        offer(store, section(dead, timeout="1s"), [offender("45.33.32.156")])
        reporter = abuseipdb._REPORTERS[store]
        while reporter.failures == 0:
            await asyncio.sleep(0.01)
        assert not await abuseipdb.drain(store, 0.05)  # backing off, not done
        assert [p.ip for p in reporter.queue] == ["45.33.32.156"]  # kept for the next try
        assert reporter.resume_at > asyncio.get_running_loop().time()

    asyncio.run(run())
    assert rows(store) == []


# -- what may be said -----------------------------------------------------------------------------


def test_categories_default_configurable_and_other() -> None:
    sec = section("https://api.abuseipdb.com/api/v2", categories={"ips": [16], "Web": [19, 21]})
    assert sec.categories_of("IPS") == ("ips", (16,))  # overridden, case-insensitive
    assert sec.categories_of("DoS") == ("DoS", (4,))  # a default kept
    assert sec.categories_of("web") == ("Web", (19, 21))
    assert sec.categories_of("DLP <fw-internal>") == ("other", (15,))  # never echoed


def test_the_scrub_removes_names_and_addresses() -> None:
    text = "fw1/vdom-a ip=192.0.2.1, net 2001:db8::/32 (FW1) date 2026-01-02 x5"
    assert abuseipdb.scrub(text, ["fw1", "vdom-a"]) == (
        "[redacted]/[redacted] ip=[redacted], net [redacted] ([redacted]) date 2026-01-02 x5"
    )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"enabled": True}, "set key_env"),
        ({"comment": "{cause} on {device}"}, "unknown field {device}"),
        ({"repeat_after": "10m"}, "repeat_after: at least 15m"),
        ({"categories": {"IPS": [99]}}, "not an AbuseIPDB category"),
        ({"url": "https://u:p@api.example/api/v2"}, "no credentials"),
    ],
)
def test_bad_settings_are_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("{", r"\{").replace("}", r"\}")):
        config_mod.parse({"abuseipdb": fields}, base_dir=Path("."))


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert abuseipdb.retry_after("30", 0) == 30
    assert abuseipdb.retry_after("Thu, 01 Jan 1970 00:02:00 GMT", 60) == 60
    assert abuseipdb.retry_after("soon", 0) == abuseipdb.DEFAULT_RETRY_AFTER
    assert abuseipdb.retry_after("999999999", 0) == abuseipdb.MAX_PAUSE


def test_a_refused_key_is_logged_without_the_key_and_nothing_is_lost(
    store: Store, fake: FakeAbuseIPDB, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    monkeypatch.setenv("ABUSE_KEY", "wrong-key-987654321")

    async def run() -> None:
        offer(store, section(fake.url), [offender("45.33.32.156")])
        reporter = abuseipdb._REPORTERS[store]
        while reporter.failures == 0:
            await asyncio.sleep(0.01)
        assert [p.ip for p in reporter.queue] == ["45.33.32.156"]

    with caplog.at_level("WARNING", logger="banfeed"):
        asyncio.run(run())
    assert [r["status"] for r in fake.received] == [401]
    assert "the API key was refused" in caplog.text
    assert "wrong-key-987654321" not in caplog.text
    assert rows(store) == []
