"""The commands a user runs, end to end: real simulator over HTTP, real SQLite file."""

from __future__ import annotations

import ipaddress
import json
import socket
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from banfeed import simulator
from banfeed.config import load
from conftest import T0, cli, fortigate_toml, write_config

RECORD_KEYS = {
    "ip",
    "family",
    "first_offense",
    "last_offense",
    "offense_count",
    "sources",
    "devices",
    "active_until",
    "state",
}
SECRET = "tok-a-very-secret-value"


def refused_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def site(fleet: simulator.SimFleet, run_sim: Any, tmp_path: Path) -> dict[str, Any]:
    """Four FortiGates as the issue describes, a config, and the environment with tokens."""
    a = fleet.add_device("fw-a", token=SECRET, vdoms=["root", "dmz"], entries=30, ipv6_ratio=0.3)
    a.add("dmz", "2a00:1450:4001:81c::200e", created=T0 - 10, source="IPS")
    c = fleet.add_device("fw-c", token="tok-c", entries=10, fault="invalid")
    for ip in ("10.9.8.7", "127.0.0.1", "169.254.1.1", "203.0.113.9", "8.8.8.8", "9.9.9.9"):
        c.add("root", ip, created=T0 - 10, source="DoS")
    fleet.add_device("fw-d", token="tok-d", entries=3)
    urls = run_sim()
    body = (
        fortigate_toml("fw-a", urls["fw-a"], "TOK_A", '["root", "dmz"]')
        + fortigate_toml("fw-b", refused_url(), "TOK_A")
        + fortigate_toml("fw-c", urls["fw-c"], "TOK_C")
        + fortigate_toml("fw-d", urls["fw-d"], "TOK_WRONG")
    )
    config = write_config(
        tmp_path / "banfeed.toml", "sqlite:///state/banfeed.db", body, allow='["8.8.8.0/24"]'
    )
    (tmp_path / "state").mkdir()
    env = {"TOK_A": SECRET, "TOK_C": "tok-c", "TOK_WRONG": "nope", "BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    return {"config": config, "env": env, "fleet": fleet, "tmp": tmp_path}


def offense_rows(site: dict[str, Any]) -> list[Any]:
    with sqlite3.connect(site["tmp"] / "state" / "banfeed.db") as db:
        return db.execute("SELECT * FROM offenses ORDER BY id").fetchall()


def test_collect_merges_the_valid_exits_1_and_names_each_failure(site: dict[str, Any]) -> None:
    result = cli("collect", env=site["env"])
    assert result.exit_code == 1
    out = result.output
    assert "fw-b" in out and "unreachable" in out and "cannot connect" in out
    assert "fw-d" in out and "auth" in out and "401" in out
    assert "2/4" not in out  # fw-a has two VDOMs: five polls, three ok
    assert "3/5 polls ok" in out
    assert "7 invalid entries rejected" in out
    assert SECRET not in out and SECRET not in result.stderr
    assert len(offense_rows(site)) == 61 + 10 + 6


def test_second_collect_writes_no_offense_rows(site: dict[str, Any]) -> None:
    cli("collect", env=site["env"])
    before = offense_rows(site)
    result = cli("collect", env=site["env"])
    assert result.exit_code == 1  # fw-b and fw-d still fail
    assert "0 new offenses" in result.output
    assert offense_rows(site) == before


def test_export_is_numeric_safe_and_atomic(site: dict[str, Any]) -> None:
    cli("collect", env=site["env"])
    www = site["tmp"] / "www"
    www.mkdir()
    target = www / "ips.txt"
    result = cli("export", "--feed", "quarantine", "--output", str(target), env=site["env"])
    assert result.exit_code == 0, result.output
    text = target.read_text()
    assert text.endswith("\n") and "\r" not in text and "#" not in text
    lines = text.splitlines()
    addresses = [ipaddress.ip_address(line) for line in lines]  # every line is an address
    assert [str(a) for a in addresses] == lines  # canonical text
    assert addresses == sorted(addresses, key=lambda a: (a.version, int(a)))  # numeric, v4 first
    assert any(a.version == 6 for a in addresses) and addresses[0].version == 4
    for a in addresses:
        assert a.is_global, a
    for never in ("10.9.8.7", "127.0.0.1", "169.254.1.1", "203.0.113.9", "8.8.8.8"):
        assert never not in lines
    assert "9.9.9.9" in lines
    assert len(lines) == 61 + 10 + 1
    assert list(www.iterdir()) == [target]  # no temp file left behind
    assert target.stat().st_mode & 0o777 == 0o644
    # rewriting replaces it whole
    assert cli("export", "-o", str(target), env=site["env"]).exit_code == 0
    assert target.read_text() == text


def test_export_to_dash_is_standard_output(
    site: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cli("collect", env=site["env"])
    folder = site["tmp"] / "here"
    folder.mkdir()
    monkeypatch.chdir(folder)
    plain = cli("export", env=site["env"]).output
    dashed = cli("export", "--output", "-", env=site["env"])
    assert dashed.exit_code == 0 and dashed.output == plain and "9.9.9.9" in plain.splitlines()
    assert list(folder.iterdir()) == []  # no file named "-"


def test_export_formats(site: dict[str, Any]) -> None:
    cli("collect", env=site["env"])
    as_csv = cli("export", "--format", "csv", env=site["env"]).output.splitlines()
    assert as_csv[0].startswith("ip,family,first_offense")
    as_json = json.loads(cli("export", "--format", "json", env=site["env"]).output)
    assert [r["ip"] for r in as_json] == [line.split(",")[0] for line in as_csv[1:]]
    assert all(RECORD_KEYS <= set(r) for r in as_json)
    assert len(as_json) == 72
    # to a file: streamed into the temp file, then renamed; the same bytes as standard output
    target = site["tmp"] / "feed.json"
    assert cli("export", "--format", "json", "-o", str(target), env=site["env"]).exit_code == 0
    assert json.loads(target.read_text()) == as_json


def test_list_json_has_the_documented_shape(site: dict[str, Any]) -> None:
    cli("collect", env=site["env"])
    records = json.loads(cli("list", "--format", "json", env=site["env"]).output)
    assert len(records) == 72
    assert all(RECORD_KEYS <= set(r) and r["state"] == "active" for r in records)
    everything = json.loads(cli("list", "--all", "--format", "json", env=site["env"]).output)
    states = {r["ip"]: r["state"] for r in everything}
    assert states["127.0.0.1"] == states["8.8.8.8"] == "suppressed"
    table = cli("list", env=site["env"]).output
    assert "72 offenders" in table


def test_show_explains_offenses_per_device_and_vdom(site: dict[str, Any]) -> None:
    site["fleet"].devices["fw-a"].add(
        "root", "2a00:1450:4001:81c::200e", created=T0 - 5, source="AV"
    )
    cli("collect", env=site["env"])
    result = cli(
        "show", "2a00:1450:4001:081c:0000:0000:0000:200e", "--format", "json", env=site["env"]
    )
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert RECORD_KEYS <= set(record)
    assert record["ip"] == "2a00:1450:4001:81c::200e"
    assert record["offense_count"] == 2 and record["state"] == "active"
    origins = {(o["device"], o["vdom"]): o for o in record["by_origin"]}
    assert origins[("fw-a", "dmz")]["causes"] == {"IPS": 1}
    assert origins[("fw-a", "root")]["causes"] == {"AV": 1}
    assert record["feeds"]["quarantine"]["listed"] is True
    assert record["feeds"]["quarantine"]["why"] == "offender"
    suppressed = json.loads(cli("show", "8.8.8.8", "--format", "json", env=site["env"]).output)
    assert suppressed["state"] == "suppressed"
    assert suppressed["feeds"]["quarantine"]["listed"] is False
    assert "8.8.8.0/24" in suppressed["feeds"]["quarantine"]["reason"]
    assert [e["kind"] for e in suppressed["events"]] == ["suppressed"]
    text = cli("show", "8.8.8.8", env=site["env"]).output
    assert "allowlisted: 8.8.8.0/24 (config [allowlist])" in text  # brackets print literally
    missing = cli("show", "1.1.1.1", env=site["env"])
    assert missing.exit_code == 1 and "not in the store" in missing.stderr
    assert cli("show", "1.1.1.999", env=site["env"]).exit_code == 2


def test_check_reports_each_device(site: dict[str, Any]) -> None:
    result = cli("check", env=site["env"])
    assert result.exit_code == 1
    out = result.output
    assert "valid (4 FortiGates, 1 feeds)" in out
    assert "fortigates[fw-a].url: plain http" in out
    assert "dmz=31" in out and "root=30" in out
    assert "unreachable" in out and "auth" in out
    assert SECRET not in out
    assert offense_rows(site) == []  # check stores nothing


def test_init_writes_a_valid_commented_config_and_store(tmp_path: Path) -> None:
    config = tmp_path / "etc" / "banfeed.toml"
    config.parent.mkdir()
    result = cli("--config", str(config), "init")
    assert result.exit_code == 0, result.output
    text = config.read_text()
    assert text.count("#") > 20 and "[[feeds]]" in text
    assert load(config).feeds[0].name == "quarantine"
    assert (tmp_path / "etc" / "banfeed.db").exists()  # relative to the config file
    again = cli("--config", str(config), "init")
    assert again.exit_code == 0 and "keeping it" in again.stderr
    assert config.read_text() == text
    listed = cli("--config", str(config), "list", "--format", "json")
    assert listed.exit_code == 0 and json.loads(listed.output) == []


def test_config_errors_exit_2_and_name_the_key(tmp_path: Path) -> None:
    config = tmp_path / "banfeed.toml"
    config.write_text('[retention]\nbase_ttl = "30 days"\n[colect]\nx = 1\n')
    result = cli("--config", str(config), "list")
    assert result.exit_code == 2
    assert "retention.base_ttl" in result.stderr and "colect: unknown key" in result.stderr
    missing = cli("--config", str(tmp_path / "nope.toml"), "collect")
    assert missing.exit_code == 2 and "banfeed init" in missing.stderr


def test_store_without_schema_says_how_to_fix(tmp_path: Path) -> None:
    config = write_config(tmp_path / "banfeed.toml", "sqlite:///empty.db")
    result = cli("--config", str(config), "list")
    assert result.exit_code == 1 and "banfeed db upgrade" in result.stderr


def test_config_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_cfg = write_config(tmp_path / "env.toml", "sqlite:///env.db")
    cwd_cfg = write_config(tmp_path / "banfeed.toml", "sqlite:///cwd.db")
    flag_cfg = write_config(tmp_path / "flag.toml", "sqlite:///flag.db")
    monkeypatch.chdir(tmp_path)
    assert cwd_cfg.exists()
    cli("db", "upgrade")
    assert (tmp_path / "cwd.db").exists()
    cli("db", "upgrade", env={"BANFEED_CONFIG": str(env_cfg)})
    assert (tmp_path / "env.db").exists()
    cli("--config", str(flag_cfg), "db", "upgrade", env={"BANFEED_CONFIG": str(env_cfg)})
    assert (tmp_path / "flag.db").exists()


def test_simulate_lists_exactly_the_simulators_fault_modes() -> None:
    from banfeed.cli.trying import FAULT_MODES

    assert FAULT_MODES == simulator.FAULTS


def test_export_formats_are_exactly_the_renderers() -> None:
    from banfeed.cli.base import FEED_FORMATS
    from banfeed.publish.render import FORMATS

    assert FEED_FORMATS == FORMATS


def test_help_imports_no_storage_or_http_library() -> None:
    """`banfeed --help` stays fast: the core is imported by the commands that use it."""
    import subprocess
    import sys

    code = (
        "import sys; from click.testing import CliRunner; from banfeed.cli import main; "
        "CliRunner().invoke(main, ['--help']); CliRunner().invoke(main, ['list', '--help']); "
        "print(sorted(m for m in ('sqlalchemy', 'httpx', 'pydantic', 'uvicorn', 'starlette', "
        "'alembic') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_list_loads_no_feed_build(tmp_path: Path) -> None:
    """`banfeed list` reads rows: numpy and the feed builds are loaded by commands that build."""
    import subprocess
    import sys

    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{tmp_path / 'b.db'}")
    assert cli("--config", str(config), "init").exit_code == 0
    code = (
        "import sys; from click.testing import CliRunner; from banfeed.cli import main; "
        f"r = CliRunner().invoke(main, ['--config', {str(config)!r}, 'list']); "
        "print(r.exit_code, sorted(m for m in ('numpy', 'banfeed.publish.build') "
        "if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "0 []"
