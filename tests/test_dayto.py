"""Day-2 commands on real stores: `bans`, `unban` of many targets, `events`, `list` filters and
`import` of real-world list files (issue 13)."""

from __future__ import annotations

import json
import time
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from banfeed import reports
from banfeed.cli import audit, main
from banfeed.cli.filters import parse_since
from banfeed.config import load
from banfeed.errors import InputError
from banfeed.models import Ban, BanOrigin, Event, EventKind, Offender, OffenderState
from banfeed.policy import build_allowlist
from banfeed.store import open_store
from conftest import cli


def piped(*args: str, env: dict[str, str], text: str) -> Result:
    """The command with ``text`` on its standard input."""
    return CliRunner().invoke(main, list(args), env=env, input=text, catch_exceptions=False)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "banfeed.toml"
    path.write_text(
        """
[store]
url = "sqlite:///b.db"
[allowlist]
networks = ["45.33.100.0/24"]
[retention]
base_ttl = "1d"
[[feeds]]
name = "all"
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    return {"BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "alice"}


def offender(
    ip: str,
    age: int,
    *,
    cause: str = "IPS",
    device: str = "fw",
    vdom: str = "root",
    status: str = "listed",
) -> Offender:
    now = int(time.time())
    return Offender(
        ip_address(ip),
        now - age,
        now - age,
        1,
        (cause,),
        (device,),
        (f"{device}/{vdom}",),
        now - age + 86400,
        status,  # type: ignore[arg-type]
    )


def seed(env: dict[str, str], *offenders: Offender) -> None:
    store = open_store(load(Path(env["BANFEED_CONFIG"])).store_url())
    with store.write() as tx:
        tx.insert_offenders(list(offenders), int(time.time()))
    store.close()


def feed(env: dict[str, str]) -> list[str]:
    result = cli("export", "--feed", "all", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    return result.output.splitlines()


def as_json(env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = cli(*args, "--format", "json", env=env)
    assert result.exit_code == code, result.output + result.stderr
    return json.loads(result.output)


# -- unban of many targets --------------------------------------------------------------------


def test_unban_takes_arguments_a_file_and_stdin_in_one_transaction(
    env: dict[str, str], tmp_path: Path
) -> None:
    seed(env, *(offender(f"93.184.216.{i}", 60) for i in range(1, 7)))
    assert cli("ban", "151.101.1.0/24", env=env).exit_code == 0
    assert len(feed(env)) == 7
    targets = tmp_path / "targets.txt"
    targets.write_text("\ufeff# false positives\n93.184.216.3 ; partner\n93.184.216.4,2026-11-01\n")
    result = piped(
        "unban", "93.184.216.1", "-", "--file", str(targets), "--note", "ticket 42",
        env=env, text="93.184.216.2\n151.101.1.0/24\n1.1.1.1\n",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + result.stderr
    assert "unbanned 5 targets: 4 offenders marked unbanned, 1 bans removed" in result.output
    assert "1 targets are neither an offender nor a ban: 1.1.1.1" in result.output
    assert feed(env) == ["93.184.216.5", "93.184.216.6"]
    events = as_json(env, "events", "--kind", "unbanned")
    assert sorted(e["ip"] for e in events) == [
        "151.101.1.0/24", "93.184.216.1", "93.184.216.2", "93.184.216.3", "93.184.216.4",
    ]  # fmt: skip
    assert all(e["actor"] == "alice" and e["detail"].endswith("ticket 42") for e in events)
    shown = as_json(env, "show", "93.184.216.3")
    assert shown["state"] == "unbanned"


def test_a_malformed_argument_refuses_the_unban_and_a_malformed_line_is_skipped(
    env: dict[str, str],
) -> None:
    seed(env, offender("93.184.216.1", 60), offender("93.184.216.2", 60))
    refused = cli("unban", "93.184.216.1", "93.184.216.999", env=env)
    assert refused.exit_code == 2
    assert (
        "nothing was unbanned" in refused.stderr and "argument: '93.184.216.999'" in refused.stderr
    )
    assert feed(env) == ["93.184.216.1", "93.184.216.2"]
    result = piped("unban", "-", env=env, text="93.184.216.1\n93.184.216.999 # typo\n")
    assert result.exit_code == 0
    assert "skipped 1 malformed lines: stdin line 2: '93.184.216.999'" in result.output
    assert feed(env) == ["93.184.216.2"]
    assert piped("unban", "-", env=env, text="nonsense\n").exit_code == 2
    assert cli("unban", env=env).exit_code == 2  # nothing to unban
    assert cli("unban", "93.184.216.2", "--origin", "import", env=env).exit_code == 2
    assert cli("unban", "1.1.1.1", env=env).exit_code == 2  # a single unknown target


def test_unban_origin_import_undoes_an_import_and_keeps_device_reports(
    env: dict[str, str], tmp_path: Path
) -> None:
    listing = tmp_path / "old.txt"
    listing.write_text("93.184.216.1\n93.184.216.2\n151.101.1.0/24\n2a04:4e42::/48\n")
    assert cli("import", str(listing), env=env).exit_code == 0
    assert cli("ban", "151.101.2.0/24", "--note", "manual", env=env).exit_code == 0
    # a FortiGate reports an imported address too: a real offender, kept
    store = open_store(load(Path(env["BANFEED_CONFIG"])).store_url())
    with store.write() as tx:
        known = tx.get_offender("93.184.216.2")
        assert known is not None
        tx.update_offenders(
            [
                Offender(
                    known.ip,
                    known.first_offense,
                    known.last_offense,
                    2,
                    ("IPS", "imported"),
                    ("fw", "import"),
                    ("fw/root", "import/old.txt"),
                    known.active_until,
                    known.status,
                )
            ],  # fmt: skip
            int(time.time()),
        )
        tx.bump_version()
    store.close()
    record = as_json(env, "unban", "--origin", "import", "--note", "bad list")
    assert record == {
        "targets": 3,
        "offenders_unbanned": 1,
        "bans_removed": 2,
        "not_found": [],
        "kept_reported_by_devices": 1,
        "offenders": ["93.184.216.1"],
        "bans": ["151.101.1.0/24", "2a04:4e42::/48"],
        "skipped": [],
    }
    assert feed(env) == ["93.184.216.2", "151.101.2.0/24"]
    assert as_json(env, "bans", "--origin", "import") == []
    assert [b["network"] for b in as_json(env, "bans")] == ["151.101.2.0/24"]


def test_a_large_unban_is_an_explained_drop_published_at_once(
    env: dict[str, str], tmp_path: Path
) -> None:
    """An unban is recorded (offender rows and one event per target), so the mass-drop guard
    explains the loss and publishes it at once; a loss the store does not explain is held."""
    listing = tmp_path / "big.txt"
    listing.write_text("".join(f"93.184.{i // 250}.{i % 250 + 1}\n" for i in range(3000)))
    assert cli("import", str(listing), env=env).exit_code == 0
    assert len(feed(env)) == 3000
    result = cli("unban", "--file", str(listing), env=env)
    assert "3000 offenders marked unbanned" in result.output
    exported = cli("export", "--feed", "all", env=env)
    assert exported.exit_code == 0 and exported.output == ""  # published, not held
    history = cli("feeds", "history", "all", env=env).output
    assert "update" in history


# -- bans -------------------------------------------------------------------------------------


def test_bans_lists_with_filters_and_a_stable_json_shape(env: dict[str, str]) -> None:
    assert cli("ban", "93.184.216.0/24", "--ttl", "7d", "--note", "scanner", env=env).exit_code == 0
    assert cli("ban", "151.101.1.7", env=env).exit_code == 0
    store = open_store(load(Path(env["BANFEED_CONFIG"])).store_url())
    now = int(time.time())
    with store.write() as tx:
        tx.save_ban(Ban(ip_network("45.33.0.0/24"), now - 90, now - 30, BanOrigin.IMPORTED, "bob"))
    store.close()
    rows = as_json(env, "bans")
    assert [r["network"] for r in rows] == ["93.184.216.0/24", "151.101.1.7/32"]
    assert rows[0] == {
        "network": "93.184.216.0/24",
        "origin": "manual",
        "state": "active",
        "created": rows[0]["created"],
        "expires": rows[0]["expires"],
        "actor": "alice",
        "note": "scanner",
    }
    assert rows[1]["expires"] is None
    expired = as_json(env, "bans", "--expired")
    assert [(r["network"], r["origin"], r["state"]) for r in expired] == [
        ("45.33.0.0/24", "imported", "expired")
    ]
    assert len(as_json(env, "bans", "--all")) == 3
    assert as_json(env, "bans", "--all", "--origin", "import")[0]["actor"] == "bob"
    # --network: bans inside it, and bans containing it
    assert [r["network"] for r in as_json(env, "bans", "--network", "93.184.216.34")] == [
        "93.184.216.0/24"
    ]
    assert [r["network"] for r in as_json(env, "bans", "--network", "151.101.0.0/16")] == [
        "151.101.1.7/32"
    ]
    table = cli("bans", "--all", env=env)
    assert "until unbanned" in table.output and "3 bans" in table.output
    assert cli("bans", "--network", "45.33.1.1/24", env=env).exit_code == 2


# -- events -----------------------------------------------------------------------------------


def test_events_filters_by_actor_kind_address_since_and_limit(env: dict[str, str]) -> None:
    seed(env, offender("93.184.216.34", 60))
    assert cli("ban", "93.184.216.0/24", env=env).exit_code == 0
    bob = {**env, "BANFEED_ACTOR": "bob"}
    assert cli("unban", "93.184.216.34", env=bob).exit_code == 0
    assert cli("allow", "add", "151.101.1.6", env=bob).exit_code == 0
    every = as_json(env, "events")
    assert [e["kind"] for e in every] == ["banned", "unbanned", "allowlist_added"]  # oldest first
    assert set(every[0]) == {"time", "kind", "ip", "actor", "detail"}
    assert [e["kind"] for e in as_json(env, "events", "--actor", "bob")] == [
        "unbanned", "allowlist_added",
    ]  # fmt: skip
    assert [e["kind"] for e in as_json(env, "events", "--kind", "banned")] == ["banned"]
    # an address: its own events and those of a network holding it
    about = as_json(env, "events", "--address", "93.184.216.34")
    assert [(e["kind"], e["ip"]) for e in about] == [
        ("banned", "93.184.216.0/24"), ("unbanned", "93.184.216.34"),
    ]  # fmt: skip
    inside = as_json(env, "events", "--address", "151.101.0.0/16")
    assert [e["ip"] for e in inside] == ["151.101.1.6"]  # a host is named by its address
    assert as_json(env, "events", "--since", "2999-01-01") == []
    assert len(as_json(env, "events", "--since", "1h")) == 3
    newest = as_json(env, "events", "--limit", "1")
    assert [e["kind"] for e in newest] == ["allowlist_added"]
    table = cli("events", "--limit", "2", env=env).output
    assert "2 events (the newest; --limit 0 for all)" in table
    assert cli("events", "--since", "yesterday", env=env).exit_code == 2


def test_the_event_kinds_offered_are_the_models() -> None:
    assert audit.EVENT_KINDS == tuple(k.value for k in EventKind)


def test_since_takes_durations_times_and_epochs() -> None:
    now = 1_800_000_000
    assert parse_since("1d", now) == now - 86400
    assert parse_since("2026-11-24", now) == 1795478400
    assert parse_since("2026-11-24T01:00:00Z", now) == 1795478400 + 3600
    assert parse_since("2026-11-24T03:00+02:00", now) == 1795478400 + 3600
    assert parse_since("1700000000", now) == 1700000000
    assert parse_since(None, now) is None
    for bad in ("0d", "tomorrow", "2026-13-01"):
        with pytest.raises(InputError):
            parse_since(bad, now)


# -- list filters, on SQLite and PostgreSQL ---------------------------------------------------


def test_list_filters_in_the_store(store_url: str) -> None:
    store = open_store(store_url, create=True)
    now = int(time.time())
    rows = [
        offender("93.184.216.1", 60, cause="IPS", device="edge-1", vdom="root"),
        offender("93.184.216.2", 3 * 86400, cause="DoS", device="edge-1", vdom="dmz"),
        offender("93.184.217.3", 60, cause="dos", device="edge-2", vdom="dmz"),
        offender("93.184.216.4", 60, cause="IPS", device="edge-2", status="unbanned"),
        offender("45.33.100.5", 60, cause="IPS", device="edge-2"),  # allowlisted below
        offender("2a04:4e42::5", 60, cause="AV", device="edge-1", vdom="root"),
    ]
    with store.write() as tx:
        tx.insert_offenders(rows, now)
    allow = build_allowlist([ip_network("45.33.100.0/24")])

    def ips(**filters: Any) -> list[str]:
        where = reports.OffenderFilter(**filters)
        with store.read() as tx:
            return [str(o.ip) for o in reports.listed_offenders(tx, now, allow, where=where)]

    assert ips() == ["93.184.216.1", "93.184.217.3", "2a04:4e42::5"]
    assert ips(within=ip_network("93.184.216.0/24")) == ["93.184.216.1"]
    assert ips(causes=("DOS",), states=frozenset()) == ["93.184.216.2", "93.184.217.3"]
    assert ips(devices=("edge-2",)) == ["93.184.217.3"]
    assert ips(vdoms=("dmz",), states=frozenset()) == ["93.184.216.2", "93.184.217.3"]
    assert ips(vdoms=("edge-1/dmz",), states=frozenset()) == ["93.184.216.2"]
    assert ips(states=frozenset({OffenderState.EXPIRED})) == ["93.184.216.2"]
    assert ips(states=frozenset({OffenderState.UNBANNED})) == ["93.184.216.4"]
    assert ips(states=frozenset({OffenderState.SUPPRESSED})) == ["45.33.100.5"]
    assert ips(since=now - 3600, states=frozenset()) == [
        "45.33.100.5", "93.184.216.1", "93.184.216.4", "93.184.217.3", "2a04:4e42::5",
    ]  # fmt: skip
    store.close()


def test_list_filters_through_the_cli(env: dict[str, str]) -> None:
    seed(
        env,
        offender("93.184.216.1", 60, cause="IPS", device="edge-1"),
        offender("93.184.216.2", 3 * 86400, cause="DoS", device="edge-2", vdom="dmz"),
    )
    rows = as_json(env, "list", "--state", "expired", "--state", "active", "--cause", "dos")
    assert [r["ip"] for r in rows] == ["93.184.216.2"]
    assert [r["ip"] for r in as_json(env, "list", "--since", "1h")] == ["93.184.216.1"]
    assert as_json(env, "list", "--vdom", "edge-2/dmz") == []  # expired: not active
    assert [r["ip"] for r in as_json(env, "list", "--all", "--network", "93.184.216.2")] == [
        "93.184.216.2"
    ]
    assert cli("list", "--network", "93.184.216.1/24", env=env).exit_code == 2


# -- store, on SQLite and PostgreSQL ----------------------------------------------------------


def test_set_based_unban_and_filtered_reads(store_url: str) -> None:
    store = open_store(store_url, create=True)
    now = int(time.time())
    with store.write() as tx:
        tx.insert_offenders([offender(f"93.184.216.{i}", 60) for i in range(1, 11)], now)
        for text in ("151.101.1.0/25", "151.101.1.128/25", "151.101.2.7/32", "2a04:4e42::/48"):
            tx.save_ban(Ban(ip_network(text), now, None, BanOrigin.MANUAL, "alice"))
        tx.insert_events(
            [Event(now - 10, EventKind.BANNED, "151.101.1.0/24", "alice", "banned"),
             Event(now - 5, EventKind.SUPPRESSED, "93.184.216.3", "banfeed", "x")]
        )  # fmt: skip
    with store.write() as tx:
        marked = tx.unban_offenders(["93.184.216.3", "93.184.216.1", "1.1.1.1"], now)
        removed = tx.delete_bans_of(
            [ip_network("151.101.1.0/24"), ip_network("151.101.2.7/32"), ip_network("2a04::/16")]
        )
    assert marked == ["93.184.216.3", "93.184.216.1"]
    assert removed == {
        "151.101.1.0/24": ["151.101.1.0/25", "151.101.1.128/25"],
        "151.101.2.7/32": ["151.101.2.7/32"],
        "2a04::/16": ["2a04:4e42::/48"],
    }
    with store.read() as tx:
        assert tx.active_bans(now) == []
        assert tx.count_offenders(active_at=now) == 8
        about = tx.events_matching(about=ip_network("151.101.1.9/32"))
        assert [e.ip for e in about] == ["151.101.1.0/24"]
        newest = tx.events_matching(limit=1)
        assert [e.kind for e in newest] == [EventKind.SUPPRESSED]
    store.close()


# -- import -----------------------------------------------------------------------------------


def test_import_reads_real_world_lists(env: dict[str, str], tmp_path: Path) -> None:
    listing = tmp_path / "export.csv"
    listing.write_bytes(
        "\ufeff# ip,first seen,score\n"
        "93.184.216.34,2026-11-01,90   # scanner\n"
        "93.184.216.35\t2026-11-02\n"
        "151.101.1.1 - 151.101.1.6 ; a range with blanks\n"
        "151.101.2.0/24 cdn abuse\n"
        "10.0.0.1 internal\n"
        "93.0.0.0 - 93.1.255.255\n"  # 131,072 addresses: broader than /16 as a whole
        "not-an-address\n"
        "\n".encode()
    )
    rejected = tmp_path / "rejected.txt"
    dry = as_json(env, "import", str(listing), "--dry-run")
    assert dry["dry_run"] is True and dry["addresses"] == 4 and dry["networks"] == 3
    assert feed(env) == []  # a dry run writes nothing
    record = as_json(env, "import", str(listing), "--rejected", str(rejected))
    assert record == {
        "file": "export.csv",
        "dry_run": False,
        "lines": 7,
        "addresses": 4,
        "networks": 3,
        "already_known": 0,
        "dropped": [
            {"reason": "never-block", "lines": 1, "first_example": "10.0.0.1 internal"},
            {"reason": "broader than /16", "lines": 1, "first_example": "93.0.0.0 - 93.1.255.255"},
            {"reason": "malformed", "lines": 1, "first_example": "not-an-address"},
        ],
        "rejected_file": str(rejected),
    }
    assert feed(env) == [
        "93.184.216.34", "93.184.216.35", "151.101.1.1", "151.101.1.2/31", "151.101.1.4/31",
        "151.101.1.6", "151.101.2.0/24",
    ]  # fmt: skip
    lines = rejected.read_text().splitlines()
    assert lines[0].startswith("10.0.0.1 internal # line 6: never-block: private")
    assert lines[1].startswith("93.0.0.0 - 93.1.255.255 # line 7: broader than /16")
    assert "the range covers 131072 addresses" in lines[1]
    assert lines[2].startswith("not-an-address # line 8: ")
    # the rejected file is a list again: every line of it is refused again, so exit 1
    again = cli("import", str(rejected), env=env)
    assert again.exit_code == 1 and "nothing imported" in again.stderr
    table = cli("import", str(listing), env=env)
    assert table.exit_code == 0 and "4 addresses were already known" in table.output


def test_a_list_of_comments_only_imports_nothing_and_is_fine(
    env: dict[str, str], tmp_path: Path
) -> None:
    listing = tmp_path / "empty.txt"
    listing.write_text("# nothing yet\n\n; still nothing\n")
    result = cli("import", str(listing), env=env)
    assert result.exit_code == 0 and "0 lines" in result.output


def test_the_guard_explains_a_line_inside_any_unban_target() -> None:
    from banfeed.publish.guard import LossFacts, _unbanned

    facts = LossFacts(
        unbans=[
            Event(0, EventKind.UNBANNED, "151.101.1.0/24", "alice", "unbanned"),
            Event(0, EventKind.UNBANNED, "93.184.216.34", "alice", "unbanned"),
            Event(0, EventKind.UNBANNED, "2a04:4e42::/48", "alice", "unbanned"),
        ]
    )
    assert _unbanned(ip_network("151.101.1.128/25"), facts)
    assert _unbanned(ip_address("151.101.1.9"), facts)
    assert _unbanned(ip_address("93.184.216.34"), facts)
    assert _unbanned(ip_network("2a04:4e42:0:1::/64"), facts)
    assert not _unbanned(ip_network("151.101.0.0/23"), facts)  # broader than the target
    assert not _unbanned(ip_address("93.184.216.35"), facts)
    assert not _unbanned(ip_address("::ffff:9.9.9.9"), facts)
