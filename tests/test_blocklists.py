"""``[[blocklists]]``: lists on a URL polled like a device, against a real HTTP server on
127.0.0.1 serving a list (plain lines, or a CrowdSec decision stream) beside a simulated
FortiGate, with a real SQLite store: entries stored as offenses of ``import:NAME``, dropped by
the same never-block, protect and allowlist rules, a failing list failing alone."""

from __future__ import annotations

import asyncio
import json
import threading
import tomllib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from banfeed import checks, compose, simulator
from banfeed.blocklists import BlocklistTarget
from banfeed.config import load, parse
from banfeed.errors import ConfigError
from banfeed.store import open_store
from conftest import T0, Clock, cli, fortigate_toml

DEVICE = "import:feodo"
LIST = """\ufeff# Feodo-style list, comments and extra columns ignored
203.0.113.7            # documentation range: never published
185.220.101.4, 2026-01-02, botnet c2
185.220.101.5\t; second column
2a0b:f4c0::1
10.1.2.3
185.220.101.4
9.9.9.9
185.220.100.0/24
185.220.102.1 - 185.220.102.9
not-an-address

"""
GOOD = {"185.220.101.4", "185.220.101.5", "2a0b:f4c0::1"}
CROWDSEC = {
    "new": [
        {"value": "45.155.205.1", "scope": "Ip", "type": "ban", "duration": "3h59m"},
        {"value": "45.155.205.2", "scope": "ip", "type": "ban", "duration": "1h"},
        {"value": "45.155.205.0/24", "scope": "Range", "type": "ban", "duration": "1h"},
        {"value": "45.155.205.3", "scope": "Ip", "type": "captcha", "duration": "1h"},
        {"value": "192.168.1.1", "scope": "Ip", "type": "ban", "duration": "1h"},
    ],
    "deleted": None,
}


class ListServer:
    """A list on 127.0.0.1: ``body`` served with ``status``; every request's headers kept."""

    def __init__(self) -> None:
        self.body, self.status, self.requests = LIST.encode(), 200, []
        self.content_type = "text/plain"
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append((self.path, dict(self.headers)))
                self.send_response(owner.status)
                self.send_header("Content-Type", owner.content_type)
                self.send_header("Content-Length", str(len(owner.body)))
                self.end_headers()
                self.wfile.write(owner.body)

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    fleet = simulator.SimFleet(seed=3)
    fw = fleet.add_device("fw-1", token="tok-fw-1", entries=0)
    fw.add("root", "91.240.118.5", created=T0 - 60)
    sim = simulator.start(fleet)
    server = ListServer()
    monkeypatch.setenv("FW_TOKEN", "tok-fw-1")
    monkeypatch.setenv("LIST_TOKEN", "list-token-123456")
    path = tmp_path / "banfeed.toml"
    path.write_text(
        f"""
[store]
url = "sqlite:///b.db"
[allowlist]
networks = ["9.9.9.9/32"]
[[blocklists]]
name = "feodo"
url = "{server.url}/ipblocklist.txt?v=1"
token_env = "LIST_TOKEN"
cause = "botnet"
ttl = "1d"
timeout = "5s"
"""
        + fortigate_toml("fw-1", sim.urls["fw-1"], "FW_TOKEN")
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    yield {"path": path, "server": server, "fleet": fleet}
    server.stop()
    sim.stop()


def collect(site: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    result = cli("--config", str(site["path"]), "collect", "--format", "json")
    return result.exit_code, json.loads(result.stdout)


def stored(site: dict[str, Any]) -> tuple[dict[str, Any], dict[tuple[str, str], Any]]:
    store = open_store(f"sqlite:///{site['path'].parent / 'b.db'}")
    try:
        with store.read() as tx:
            offenders = {str(o.ip): o for o in tx.iter_offenders()}
            return offenders, tx.device_statuses()
    finally:
        store.close()


def test_a_cycle_stores_list_entries_with_their_provenance(site: dict[str, Any]) -> None:
    code, record = collect(site)
    assert code == 0, record
    polls = {p["device"]: p for p in record["polls"]}
    assert polls[DEVICE]["error"] is None and polls["fw-1"]["error"] is None
    offenders, statuses = stored(site)
    from_list = {ip for ip, o in offenders.items() if o.devices == (DEVICE,)}
    # never-block (documentation, private) and allowlisted entries are stored and suppressed,
    # as a device's are; the FortiGate's entry is stored beside the list's
    assert from_list == GOOD | {"203.0.113.7", "10.1.2.3", "9.9.9.9"}
    assert offenders["91.240.118.5"].devices == ("fw-1",)
    one = offenders["185.220.101.4"]  # listed twice: one offense
    assert one.sources == ("botnet",) and one.vdoms == (f"{DEVICE}/list",)
    assert one.offense_count == 1 and one.first_offense % 86400 == 0  # dated by its ttl window
    assert record["summary"]["suppressed"] == 3
    # the network, the range and the garbage line are rejected and counted, like bad entries
    status = statuses[(DEVICE, "list")]
    assert (status.entries, status.rejected, status.error_kind) == (6, 3, None)
    path, headers = site["server"].requests[0]
    assert path == "/ipblocklist.txt?v=1"
    assert headers["Authorization"] == "Bearer list-token-123456"


def test_the_same_list_next_cycle_adds_no_offense(site: dict[str, Any]) -> None:
    collect(site)
    code, record = collect(site)
    assert code == 0 and record["summary"]["new_offenses"] == 0
    assert len(site["server"].requests) == 2  # polled again (no interval set): same window


def test_a_failing_list_fails_alone(site: dict[str, Any]) -> None:
    site["server"].status = 500
    code, record = collect(site)
    assert code == 1
    polls = {p["device"]: p for p in record["polls"]}
    assert polls[DEVICE]["error"]["kind"] == "server_error"
    assert polls["fw-1"]["error"] is None
    offenders, statuses = stored(site)
    assert set(offenders) == {"91.240.118.5"}
    status = statuses[(DEVICE, "list")]
    assert status.error_kind == "server_error" and status.consecutive_failures == 1
    assert status.backoff_until is None  # retried next cycle, as a device's 500


def test_a_rate_limited_list_is_backed_off(site: dict[str, Any]) -> None:
    site["server"].status = 429
    assert collect(site)[0] == 1
    _, statuses = stored(site)
    assert statuses[(DEVICE, "list")].backoff_until is not None
    site["server"].status = 200
    code, record = collect(site)  # inside the window: not asked again
    polls = {p["device"]: p for p in record["polls"]}
    assert code == 1 and polls[DEVICE]["error"]["kind"] == "backoff"
    assert len(site["server"].requests) == 1


@pytest.mark.parametrize(
    ("body", "kind", "words"),
    [
        (b"<html><body>Login</body></html>", "bad_response", "HTML page"),
        (b"185.220.101.4\n" * 3000, "bad_response", "larger than max_response"),
    ],
)
def test_garbage_or_too_large_fails_the_list(
    site: dict[str, Any], body: bytes, kind: str, words: str
) -> None:
    site["path"].write_text(
        site["path"].read_text().replace('timeout = "5s"', 'timeout = "5s"\nmax_response = 20000')
    )
    site["server"].body = body
    code, record = collect(site)
    polls = {p["device"]: p for p in record["polls"]}
    assert code == 1 and polls[DEVICE]["error"]["kind"] == kind
    assert words in polls[DEVICE]["error"]["detail"]
    assert polls["fw-1"]["error"] is None


def test_more_than_max_entries_fails_the_list(site: dict[str, Any]) -> None:
    site["path"].write_text(
        site["path"].read_text().replace('timeout = "5s"', 'timeout = "5s"\nmax_entries = 2')
    )
    code, record = collect(site)
    polls = {p["device"]: p for p in record["polls"]}
    assert code == 1 and "max_entries" in polls[DEVICE]["error"]["detail"]


def test_a_crowdsec_stream_with_its_api_key(site: dict[str, Any], monkeypatch: Any) -> None:
    monkeypatch.setenv("CS_KEY", "bouncer-key-abcdef")
    server = site["server"]
    server.body, server.content_type = json.dumps(CROWDSEC).encode(), "application/json"
    text = site["path"].read_text()
    text = text.replace('token_env = "LIST_TOKEN"', 'format = "crowdsec"\napi_key_env = "CS_KEY"')
    site["path"].write_text(text.replace("/ipblocklist.txt?v=1", "/v1/decisions/stream?scopes=ip"))
    code, record = collect(site)
    assert code == 0, record
    offenders, statuses = stored(site)
    assert {ip for ip, o in offenders.items() if o.devices == (DEVICE,)} == {
        "45.155.205.1",
        "45.155.205.2",
        "192.168.1.1",
    }
    assert record["summary"]["suppressed"] == 1  # the private address
    assert statuses[(DEVICE, "list")].rejected == 2  # a Range and a captcha
    path, headers = server.requests[0]
    assert path == "/v1/decisions/stream?scopes=ip&startup=true"
    assert headers["X-Api-Key"] == "bouncer-key-abcdef" and "Authorization" not in headers


def test_interval_and_ttl_window(site: dict[str, Any]) -> None:
    text = site["path"].read_text().replace('ttl = "1d"', 'ttl = "1d"\ninterval = "1h"')
    site["path"].write_text(text)
    config = load(site["path"])
    start = T0 - T0 % 86400 + 3600  # an hour into a ttl window
    clock = Clock(start)
    with compose.runtime(config, clock=clock) as rt:
        collector = rt.collector()
        first = asyncio.run(collector.cycle())
        assert first.new_offenses == 1 + 6  # the FortiGate's and the list's
        clock.now = start + 600  # within the interval: the list is not fetched again
        asyncio.run(collector.cycle())
        assert len(site["server"].requests) == 1
        clock.now = start + 86400  # the next window: still listed, a new offense
        again = asyncio.run(collector.cycle())
        assert len(site["server"].requests) == 2 and again.new_offenses == 6
    offenders, _ = stored(site)
    assert offenders["185.220.101.4"].offense_count == 2


def test_check_reports_the_list(site: dict[str, Any]) -> None:
    text = site["path"].read_text()
    site["path"].write_text(text.replace("[[blocklists]]", "[[blocklists]]\nverify_tls = false"))
    result = cli("--config", str(site["path"]), "check", "--format", "json")
    record = json.loads(result.stdout)
    rows = {r["device"]: r for r in record["devices"]}
    assert rows[DEVICE]["ok"] and rows[DEVICE]["entries"] == 6 and rows[DEVICE]["rejected"] == 3
    assert any(w.startswith("blocklists[feodo].url: plain http") for w in record["warnings"])
    assert any(w.startswith("blocklists[feodo].verify_tls") for w in record["warnings"])
    _, statuses = stored(site)
    assert (DEVICE, "list") not in statuses  # a check stores nothing


def test_a_missing_secret_fails_the_list_alone(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LIST_TOKEN")
    code, record = collect(site)
    polls = {p["device"]: p for p in record["polls"]}
    assert code == 1 and "LIST_TOKEN" in polls[DEVICE]["error"]["detail"]
    assert polls["fw-1"]["error"] is None
    assert site["server"].requests == []


def test_feeds_select_or_exclude_a_list(site: dict[str, Any]) -> None:
    text = site["path"].read_text()
    text += f'\n[[feeds]]\nname = "lists"\ndevices = ["{DEVICE}"]\n'
    text += '\n[[feeds]]\nname = "devices"\ndevices = ["fw-1"]\n'
    site["path"].write_text(text)
    collect(site)
    lists = cli("--config", str(site["path"]), "export", "--feed", "lists").stdout.split()
    devices = cli("--config", str(site["path"]), "export", "--feed", "devices").stdout.split()
    assert set(lists) == GOOD and devices == ["91.240.118.5"]


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        ('[[fortigates]]\nname = "feodo"\nurl = "https://192.0.2.1"\ntoken_env = "X"\n', "unique"),
        ('[[blocklists]]\nname = "feodo"\nurl = "https://192.0.2.1/l"\n', "unique"),
        ("", ""),
    ],
)
def test_names_are_unique_across_sources(tmp_path: Path, extra: str, words: str) -> None:
    data = '[[blocklists]]\nname = "feodo"\nurl = "https://192.0.2.1/list.txt"\n' + extra
    if not words:
        assert parse(tomllib.loads(data), base_dir=tmp_path).blocklists[0].device == DEVICE
        return
    with pytest.raises(ConfigError, match=words):
        parse(tomllib.loads(data), base_dir=tmp_path)


@pytest.mark.parametrize(
    ("keys", "words"),
    [
        ('format = "crowdsec"', "bouncer key"),
        ('token_env = "A"\napi_key_env = "B"', "at most one"),
        ('url = "ftp://192.0.2.1/l"', "list URL"),
        ('ttl = "10s"', "at least a minute"),
    ],
)
def test_list_settings_are_checked(tmp_path: Path, keys: str, words: str) -> None:
    data = '[[blocklists]]\nname = "x"\n' + keys + "\n"
    if "url" not in keys:
        data += 'url = "https://192.0.2.1/l"\n'
    with pytest.raises(ConfigError, match=words):
        parse(tomllib.loads(data), base_dir=tmp_path)


def test_lists_are_polled_but_never_written_to_or_verified(site: dict[str, Any]) -> None:
    config = load(site["path"])
    assert [t.name for t in compose.targets(config)] == ["fw-1"]  # push, unban --everywhere
    with compose.runtime(config) as rt:
        polled = rt.collector().targets
        assert [t.name for t in polled] == ["fw-1", DEVICE]
        lists = [t for t in polled if isinstance(t, BlocklistTarget)]
        report = asyncio.run(
            checks.verify_feed(rt.store, lists, "quarantine", "banfeed", now=T0, grace=60)
        )
    assert report.devices == [] and site["server"].requests == []  # alerting's verify skips it
