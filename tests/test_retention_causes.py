"""[retention.causes] and decay_after: the base TTL per cause, escalation that decays with quiet
time, and `show` explaining the TTL (issue 15)."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from banfeed import compose, reports, simulator
from banfeed import config as config_mod
from banfeed.errors import ConfigError
from banfeed.net import parse_address
from banfeed.policy import Retention
from banfeed.store import open_store
from banfeed.timeutil import MAX_TIME, iso
from conftest import T0, Clock, cli, fortigate_toml, write_config

HOUR = 3600
DAY = 86400


def reference_step(times: list[int], count: int, decay: int | None) -> int:
    """The decay rule as written in docs/configuration.md, as a recursion over the known
    offenses: the offenses counted but not known (pruned) come first, with no quiet between
    them; each known one after the first is ``max(0, standing − ⌊quiet / decay⌋) + 1``."""
    known = sorted(times)

    def standing(k: int) -> int:  # the step of known offense k
        if k == 0:
            return count - len(known)  # 0 for a first offense, else after the pruned ones
        drops = 0 if decay is None else (known[k] - known[k - 1]) // decay
        return max(0, standing(k - 1) - drops) + 1

    return standing(len(known) - 1) if known else max(0, count - 1)


def reference_ttl(base: int, factor: float, max_ttl: int | None, step: int) -> int:
    ttl = base * factor**step
    return int(ttl if max_ttl is None else min(ttl, max_ttl))


# -- the base TTL per cause ----------------------------------------------------------------


def test_a_causes_entry_is_its_base_ttl_any_case_and_others_take_base_ttl() -> None:
    r = Retention(30 * DAY, 2.0, 365 * DAY, causes={"DoS": DAY, "IPS": 60 * DAY})
    dos = r.judge(T0, 1, ["dos"])
    assert (dos.cause, dos.base_ttl, dos.ttl, dos.active_until) == ("DoS", DAY, DAY, T0 + DAY)
    assert dos.base_from == "[retention.causes] DoS"
    other = r.judge(T0, 1, ["Administrative"])
    assert (other.cause, other.base_ttl, other.base_from) == (None, 30 * DAY, "base_ttl")
    assert r.judge(T0, 1).base_ttl == 30 * DAY  # no cause known: base_ttl
    # escalation applies on top of the cause's base, as on base_ttl
    third = r.judge(T0, 3, ["DoS"])
    assert (third.step, third.multiplier, third.ttl) == (2, 4.0, 4 * DAY)
    assert r.judge(T0, 5, ["IPS"]).ttl == 365 * DAY  # 960 days, capped by max_ttl
    assert r.judge(T0, 5, ["IPS"]).capped and not third.capped


def test_several_causes_take_the_longest_base() -> None:
    r = Retention(30 * DAY, causes={"DoS": DAY, "IPS": 60 * DAY, "AV": None, "APP": 60 * DAY})
    assert r.base(["DoS", "IPS"]) == ("IPS", 60 * DAY)
    assert r.base(["DoS", "Administrative"]) == (None, 30 * DAY)  # base_ttl is longer than DoS
    assert r.base(["dos", "ips", "av"]) == ("AV", None)  # forever is the longest
    assert r.base(["IPS", "APP"]) == ("APP", 60 * DAY)  # a tie: the name that sorts first
    short = Retention(DAY, causes={"IPS": DAY})
    assert short.base(["Administrative", "IPS"]) == ("IPS", DAY)  # a tie with base_ttl: named
    assert r.active_until(T0, 1, ["AV"]) is None


def test_a_cause_of_forever_or_a_huge_count_stays_in_range() -> None:
    r = Retention(DAY, 100.0, None, causes={"IPS": 2 * DAY})
    judged = r.judge(T0, 10_000, ["IPS"])
    assert judged.active_until == MAX_TIME and judged.multiplier == math.inf
    assert judged.record()["multiplier"] is None  # JSON has no infinity


@given(
    count=st.integers(1, 60),
    causes=st.lists(st.sampled_from(["IPS", "dos", "AV", "APP", "DLP", "imported"]), max_size=3),
    last=st.integers(0, MAX_TIME),
)
def test_active_until_is_the_judgements_answer(count: int, causes: list[str], last: int) -> None:
    r = Retention(HOUR, 1.7, 90 * DAY, causes={"IPS": DAY, "DoS": 3 * HOUR, "AV": None})
    expected = r.judge(last, count, causes).active_until
    assert r.active_until(last, count, causes) == expected
    if not causes:  # the cached path of a large ingest is the same rule
        assert Retention(HOUR, 1.7, 90 * DAY).active_until(last, count) == expected


# -- escalation decay ----------------------------------------------------------------------


@given(
    gaps=st.lists(st.integers(0, 400 * DAY), max_size=12),
    pruned=st.integers(0, 5),
    decay=st.one_of(st.none(), st.integers(1, 90 * DAY)),
    factor=st.floats(1.0, 3.0),
)
def test_decay_steps_match_the_reference(
    gaps: list[int], pruned: int, decay: int | None, factor: float
) -> None:
    times = [T0 - 500 * DAY + sum(gaps[:k]) for k in range(len(gaps) + 1)]
    count = len(times) + pruned
    r = Retention(HOUR, factor, 365 * DAY, decay_after=decay)
    judged = r.judge(times[-1], count, (), times)
    step = reference_step(times, count, decay)
    assert judged.step == step
    assert judged.decayed == count - 1 - step >= 0
    assert judged.ttl == reference_ttl(HOUR, factor, 365 * DAY, step)
    assert judged.active_until == times[-1] + judged.ttl
    assert r.active_until(times[-1], count, (), times) == judged.active_until
    if decay is None or all(g < decay for g in gaps):
        assert step == count - 1  # no quiet spell long enough: escalation as without decay


def test_a_long_quiet_drops_one_step_per_decay_after() -> None:
    r = Retention(DAY, 2.0, 365 * DAY, decay_after=30 * DAY)
    busy = [T0 + k * HOUR for k in range(6)]  # six offenses in six hours: step 5, ×32
    assert r.judge(busy[-1], 6, (), busy).step == 5
    for quiet_days, step in ((29, 6), (30, 5), (65, 4), (150, 1), (3 * 365, 1)):
        times = [*busy, busy[-1] + quiet_days * DAY]
        judged = r.judge(times[-1], 7, (), times)
        assert (judged.step, judged.decayed) == (step, 6 - step), quiet_days
    # without decay the years-old repeat offender gets the maximum on one new offense
    assert Retention(DAY, 2.0, 365 * DAY).judge(T0, 7, (), [*busy, T0 + 3 * 365 * DAY]).step == 6


# -- configuration -------------------------------------------------------------------------


def parse(retention: dict[str, Any]) -> config_mod.Config:
    return config_mod.parse({"retention": retention}, base_dir=Path("."))


def test_configuration_builds_the_rule() -> None:
    cfg = parse({"causes": {"DoS": "1d", " ips ": "30d", "AV": "forever"}, "decay_after": "30d"})
    rule = compose.retention(cfg)
    assert rule.causes == {"DoS": DAY, "ips": 30 * DAY, "AV": None}
    assert rule.decay_after == 30 * DAY
    assert rule.base(["IPS"]) == ("ips", 30 * DAY)
    assert compose.retention(parse({})).decay_after is None  # off by default
    assert parse({"decay_after": "off"}).retention.decay_after is None


@pytest.mark.parametrize(
    ("retention", "message"),
    [
        ({"causes": {"DoS": "1x"}}, r"retention\.causes\.DoS: '1x' is not a duration"),
        ({"causes": {"DoS": 30}}, r"retention\.causes\.DoS: write a duration as a string"),
        ({"causes": {"DoS": "1d", "dos": "2d"}}, r"'DoS' and 'dos' are the same cause"),
        ({"causes": {" ": "1d"}}, r"retention\.causes: a cause name is empty"),
        ({"causes": {"IPS": "400d"}}, r"max_ttl is shorter than causes\.IPS; raise max_ttl"),
        ({"causes": "1d"}, r"retention\.causes: Input should be a valid dictionary"),
        ({"decay_after": "forever"}, r"retention\.decay_after: write a period like"),
        ({"decay_after": "0d"}, r"retention\.decay_after: .*longer than zero"),
    ],
)
def test_bad_retention_settings_are_refused(retention: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(retention)


# -- through a real collect cycle ------------------------------------------------------------


def make_runtime(store_url: str, url: str, tmp_path: Path, clock: Clock, **retention: Any) -> Any:
    devices = [{"name": "fw-a", "url": url, "token_env": "TOK_A", "vdoms": ["root", "dmz", "lab"]}]
    data = {"store": {"url": store_url}, "fortigates": devices, "retention": retention}
    cfg = config_mod.parse(data, base_dir=tmp_path)
    return compose.Runtime(cfg, open_store(cfg.store_url(), create=True), clock)


def ttl_of(rt: compose.Runtime, ip: str) -> dict[str, Any]:
    record = reports.offender_detail(rt, parse_address(ip)).record()
    return dict(record["ttl"]) | {"stored_active_until": record["active_until"]}


def test_a_collect_cycle_explains_each_offenders_ttl_by_cause(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    device = fleet.add_device("fw-a", token="tok-a", vdoms=["root", "dmz", "lab"], entries=0)
    device.add("root", "198.51.100.1", created=T0 - 60, source="DoS")
    device.add("root", "198.51.100.2", created=T0 - 60, source="APP")
    device.add("root", "198.51.100.3", created=T0 - 60, source="DoS")  # DoS and IPS: longest
    device.add("dmz", "198.51.100.3", created=T0 - 30, source="IPS")
    # a repeat offender of long ago, back after a quiet spell
    for vdom, ago in (("root", 200 * DAY), ("dmz", 199 * DAY), ("lab", DAY)):
        device.add(vdom, "198.51.100.4", created=T0 - ago, expires=None, source="dos")
    monkeypatch.setenv("TOK_A", "tok-a")
    url = run_sim()["fw-a"]
    causes = {"DoS": "1d", "IPS": "7d"}
    rt = make_runtime(store_url, url, tmp_path, clock, causes=causes, decay_after="30d")
    try:
        assert asyncio.run(rt.collector().cycle()).new_offenses == 7

        dos = ttl_of(rt, "198.51.100.1")
        assert (dos["cause"], dos["base_ttl"], dos["base_from"]) == ("DoS", "1d", causes_key("DoS"))
        assert (dos["step"], dos["multiplier"], dos["ttl"]) == (0, 1.0, "1d")
        assert dos["active_until"] == iso(T0 - 60 + DAY)

        app = ttl_of(rt, "198.51.100.2")  # no entry: base_ttl, as stored
        assert (app["cause"], app["base_from"], app["ttl"]) == (None, "base_ttl", "30d")
        assert app["stored"] and app["active_until"] == app["stored_active_until"]

        both = ttl_of(rt, "198.51.100.3")
        assert (both["cause"], both["base_ttl"], both["step"], both["ttl"]) == (
            "IPS",
            "1w",
            1,
            "2w",
        )

        back = ttl_of(rt, "198.51.100.4")  # step 2 without decay; 198 quiet days drop 6
        assert (back["step"], back["decayed_steps"], back["ttl"]) == (1, 1, "2d")
        assert back["active_until"] == iso(T0 - DAY + 2 * DAY)
        assert "1 dropped by decay" in back["reason"]
        for ttl in (dos, app, both, back):  # what the collector stored is what show explains
            assert ttl["stored"] and ttl["active_until"] == ttl["stored_active_until"], ttl
    finally:
        rt.store.close()


def causes_key(cause: str) -> str:
    return f"[retention.causes] {cause}"


# -- show ------------------------------------------------------------------------------------


def test_show_explains_the_ttl_and_a_changed_config_rewrites_nothing(
    fleet: simulator.SimFleet, run_sim: Any, tmp_path: Path
) -> None:
    device = fleet.add_device("fw-a", token="tok-a", entries=0)
    device.add("root", "203.0.113.50", created=T0 - 60, source="APP")
    url = run_sim()["fw-a"]
    (tmp_path / "state").mkdir()
    config = tmp_path / "banfeed.toml"

    def configure(retention: str) -> None:
        body = fortigate_toml("fw-a", url, "TOK_A") + f"[retention]\n{retention}\n"
        write_config(config, "sqlite:///state/banfeed.db", body)

    env = {"TOK_A": "tok-a", "BANFEED_CONFIG": str(config)}
    configure('base_ttl = "2d"')
    assert cli("db", "upgrade", env=env).exit_code == 0
    assert cli("collect", env=env).exit_code == 0
    first = json.loads(cli("show", "203.0.113.50", "--format", "json", env=env).output)
    assert first["active_until"] == iso(T0 - 60 + 2 * DAY)
    assert first["ttl"] == {
        "cause": None,
        "base_ttl": "2d",
        "base_from": "base_ttl",
        "step": 0,
        "multiplier": 1.0,
        "decayed_steps": 0,
        "capped": False,
        "ttl": "2d",
        "active_until": iso(T0 - 60 + 2 * DAY),
        "reason": f"2d from base_ttl × 1 (escalation step 0) = 2d, until {first['active_until']}",
        "stored": True,
    }
    text = " ".join(cli("show", "203.0.113.50", env=env).output.split())
    assert "ttl: 2d from base_ttl × 1 (escalation step 0) = 2d" in text
    assert "not the stored active_until" not in text

    configure('base_ttl = "2d"\n[retention.causes]\napp = "6h"')
    later = json.loads(cli("show", "203.0.113.50", "--format", "json", env=env).output)
    assert later["active_until"] == first["active_until"]  # stored, not rewritten
    assert (later["ttl"]["cause"], later["ttl"]["ttl"]) == ("app", "6h")
    assert later["ttl"]["base_from"] == "[retention.causes] app" and not later["ttl"]["stored"]
    text = " ".join(cli("show", "203.0.113.50", env=env).output.split())  # unwrapped
    assert "6h from [retention.causes] app" in text and "not the stored active_until" in text
    unknown = json.loads(cli("show", "192.0.2.1", "--format", "json", env=env).stdout)
    assert "ttl" not in unknown  # no offender: nothing to explain


def test_decay_across_cycles_reads_the_stored_offenses(
    fleet: simulator.SimFleet,
    run_sim: Any,
    store_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    clock: Clock,
) -> None:
    device = fleet.add_device("fw-a", token="tok-a", vdoms=["root", "dmz", "lab"], entries=0)
    for vdom, ago in (("root", 200 * DAY), ("dmz", 199 * DAY)):
        device.add(vdom, "198.51.100.9", created=T0 - ago, expires=None, source="DoS")
    monkeypatch.setenv("TOK_A", "tok-a")
    url = run_sim()["fw-a"]
    rt = make_runtime(store_url, url, tmp_path, clock, causes={"DoS": "1d"}, decay_after="30d")
    try:
        asyncio.run(rt.collector().cycle())
        assert ttl_of(rt, "198.51.100.9")["stored_active_until"] == iso(T0 - 199 * DAY + 2 * DAY)
        device.add("lab", "198.51.100.9", created=T0 - 60, expires=None, source="DoS")
        asyncio.run(rt.collector().cycle())
        back = ttl_of(rt, "198.51.100.9")
        assert (back["step"], back["decayed_steps"], back["ttl"]) == (1, 1, "2d")
        assert back["stored"] and back["stored_active_until"] == iso(T0 - 60 + 2 * DAY)
    finally:
        rt.store.close()


def test_an_import_takes_the_base_ttl_of_the_imported_cause(tmp_path: Path) -> None:
    config = write_config(
        tmp_path / "banfeed.toml",
        f"sqlite:///{tmp_path / 'b.db'}",
        '[retention]\nbase_ttl = "30d"\n[retention.causes]\nimported = "2d"\n',
    )
    env = {"BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0
    listing = tmp_path / "list.txt"
    listing.write_text("45.33.9.9\n")
    assert cli("import", str(listing), env=env).exit_code == 0
    shown = json.loads(cli("show", "45.33.9.9", "--format", "json", env=env).output)
    assert shown["ttl"]["base_from"].endswith("imported"), shown["ttl"]
    assert shown["ttl"]["base_ttl"] == "2d" and shown["ttl"]["stored"] is True, shown["ttl"]
