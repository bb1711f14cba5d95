"""Operator control through the CLI on a real SQLite store: ban, unban, allowlist, import,
prune, and `show` explaining each feed's verdict."""

from __future__ import annotations

import json
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import pytest

from banfeed.config import load
from banfeed.models import Offender
from banfeed.store import open_store
from conftest import cli


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    path = tmp_path / "banfeed.toml"
    path.write_text(
        """
[store]
url = "sqlite:///b.db"
[allowlist]
networks = ["45.33.100.0/24"]
[safety]
protect = ["45.33.200.0/24"]
[retention]
base_ttl = "1d"
keep_history = "30d"
[[feeds]]
name = "all"
[[feeds]]
name = "dos"
causes = ["DoS"]
"""
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    return {"BANFEED_CONFIG": str(path), "BANFEED_ACTOR": "alice"}


def seed(env: dict[str, str], *rows: tuple[str, str, int]) -> None:
    """Offenders (ip, cause, seconds since last offense) relative to now."""
    import time

    now = int(time.time())
    config = load(Path(env["BANFEED_CONFIG"]))
    store = open_store(config.store_url())
    with store.write() as tx:
        tx.insert_offenders(
            [
                Offender(
                    ip_address(ip),
                    now - age,
                    now - age,
                    1,
                    (cause,),
                    ("fw",),
                    ("fw/root",),
                    now - age + 86400,
                    "listed",
                )
                for ip, cause, age in rows
            ],
            now,
        )
        tx.bump_version()
    store.close()


def feed(env: dict[str, str], name: str = "all") -> list[str]:
    result = cli("export", "--feed", name, env=env)
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def show(env: dict[str, str], ip: str) -> dict[str, Any]:
    result = cli("show", ip, "--format", "json", env=env)
    assert result.exit_code == 0, result.output + result.stderr
    return dict(json.loads(result.output))


def test_ban_publishes_a_network_and_refuses_unsafe_ones(env: dict[str, str]) -> None:
    result = cli("ban", "93.184.216.0/24", "--ttl", "7d", "--note", "scanner", env=env)
    assert result.exit_code == 0 and "by alice" in result.output
    assert feed(env) == ["93.184.216.0/24"]
    assert feed(env, "dos") == []  # a feed of device causes does not take manual bans
    broad = cli("ban", "93.0.0.0/8", env=env)
    assert broad.exit_code == 2 and "broader than /16" in broad.stderr
    private = cli("ban", "10.1.2.3", env=env)
    assert private.exit_code == 2 and "never-block" in private.stderr
    allowed = cli("ban", "45.33.100.7", env=env)
    assert allowed.exit_code == 2 and "allowlisted" in allowed.stderr
    protected = cli("ban", "45.33.200.0/24", env=env)
    assert protected.exit_code == 2 and "protected" in protected.stderr
    assert cli("ban", "999.1.1.1", env=env).exit_code == 2


def test_a_banned_network_is_carved_around_the_allowlist(env: dict[str, str]) -> None:
    assert cli("ban", "45.33.100.0/23", env=env).exit_code == 0  # half of it allowlisted
    assert feed(env) == ["45.33.101.0/24"]


def test_allowlist_takes_effect_at_once_and_keeps_history(env: dict[str, str]) -> None:
    seed(env, ("93.184.216.34", "IPS", 60), ("93.184.216.35", "DoS", 60))
    assert feed(env) == ["93.184.216.34", "93.184.216.35"]
    added = cli("allow", "add", "93.184.216.34/32", "--note", "partner", "--expires", "2d", env=env)
    assert added.exit_code == 0
    assert feed(env) == ["93.184.216.35"]
    verdict = show(env, "93.184.216.34")
    assert verdict["state"] == "suppressed"
    assert "allow entry by alice: partner" in verdict["feeds"]["all"]["reason"]
    listing = json.loads(cli("allow", "list", "--format", "json", env=env).output)
    origins = {row["network"]: row["origin"] for row in listing}
    assert origins["45.33.100.0/24"] == "config [allowlist]"
    assert origins["45.33.200.0/24"] == "config [safety] protect"
    assert origins["93.184.216.34/32"].startswith("store, by alice")
    assert cli("allow", "remove", "93.184.216.34/32", env=env).exit_code == 0
    assert feed(env) == ["93.184.216.34", "93.184.216.35"]
    kinds = [e["kind"] for e in show(env, "93.184.216.34")["events"]]
    assert kinds == ["allowlist_added", "allowlist_removed"]
    assert cli("allow", "remove", "93.184.216.34/32", env=env).exit_code == 2


def test_unban_and_show_who_did_it(env: dict[str, str]) -> None:
    seed(env, ("93.184.216.34", "IPS", 60))
    result = cli("unban", "93.184.216.34", "--note", "false positive", env=env)
    assert result.exit_code == 0 and "offender marked unbanned" in result.output
    assert feed(env) == []
    verdict = show(env, "93.184.216.34")
    assert verdict["state"] == "unbanned"
    assert verdict["feeds"]["all"]["reason"].startswith("unbanned by alice at ")
    assert cli("unban", "1.1.1.1", env=env).exit_code == 2


def test_show_explains_filters_and_expiry(env: dict[str, str]) -> None:
    seed(env, ("93.184.216.34", "IPS", 60), ("93.184.216.40", "DoS", 2 * 86400))
    fresh = show(env, "93.184.216.34")
    assert fresh["feeds"]["all"]["listed"] is True
    assert fresh["feeds"]["all"]["why"] == "offender"
    assert fresh["feeds"]["dos"]["listed"] is False
    assert fresh["feeds"]["dos"]["reason"].startswith("filtered out: causes ['dos']")
    old = show(env, "93.184.216.40")
    assert old["state"] == "expired"
    assert old["feeds"]["all"]["reason"].startswith("expired at ")


def test_import_applies_every_guard_and_reports_drops(env: dict[str, str], tmp_path: Path) -> None:
    old = tmp_path / "ips.txt"
    old.write_text(
        "\n".join(
            [
                "93.184.216.34",
                "93.184.216.35",
                "93.184.216.34",  # duplicate
                "198.18.0.0/24",  # never-block (benchmarking)
                "10.0.0.1",  # never-block
                "45.33.100.9",  # allowlisted
                "45.33.200.1",  # protected
                "5.0.0.0/8",  # broader than /16
                "151.101.1.1-151.101.1.6",  # a range
                "not an address",
                "# a comment",
                "",
            ]
        )
    )
    result = cli("import", str(old), "--ttl", "30d", "--note", "old cron list", env=env)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "imported 4 addresses and 2 networks" in out  # the range is 2 hosts and 2 /31s
    for reason in ("never-block", "allowlisted", "protected", "broader than /16", "malformed"):
        assert reason in out
    assert feed(env) == [
        "93.184.216.34",
        "93.184.216.35",
        "151.101.1.1",
        "151.101.1.2/31",
        "151.101.1.4/31",
        "151.101.1.6",
    ]
    offender = show(env, "93.184.216.34")
    assert offender["sources"] == ["imported"] and offender["note"] == "old cron list"
    again = cli("import", str(old), env=env)
    assert "4 addresses were already known" in again.output


def test_prune_records_expiries_and_trims_history(env: dict[str, str]) -> None:
    seed(env, ("93.184.216.34", "IPS", 60), ("93.184.216.40", "DoS", 2 * 86400))
    result = cli("prune", env=env)
    assert result.exit_code == 0
    assert "1 offenders expired since the last prune" in result.output
    assert [e["kind"] for e in show(env, "93.184.216.40")["events"]] == ["expired"]
    again = cli("prune", env=env)
    assert "0 offenders expired" in again.output


def test_a_ban_with_nothing_publishable_is_refused_for_ipv6_too(env: dict[str, str]) -> None:
    documentation = cli("ban", "2001:db8::/48", env=env)
    assert documentation.exit_code == 2 and "never-block" in documentation.stderr
    assert cli("ban", "2a00:1450:4001::/48", env=env).exit_code == 0
    assert feed(env) == ["2a00:1450:4001::/48"]
