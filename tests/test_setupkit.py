"""The setup kit (`banfeed fortigate-config`) and the feed limit presets.

The printed FortiOS CLI is parsed back into its structure (config/edit/set/next/end, quoted
values over several lines) and checked for the facts a FortiGate depends on; the FortiManager
form is parsed as JSON; one test fetches every printed feed URL from a real `banfeed run`.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from banfeed import config as config_mod
from banfeed import simulator
from banfeed.config.limits import PRESETS
from banfeed.errors import ConfigError
from banfeed.setupkit import (
    FeedTarget,
    Kit,
    build,
    expiry_text,
    fortigate_config,
    render,
    resource_names,
)
from conftest import RunningDaemon, cli, wait_for

PASSWORD = "feed-secret-5f1c2a9e"
PEM = (
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ2FuYXJ5\nZmVlZA==\n-----END CERTIFICATE-----"
)


# -- a parser for FortiOS CLI: what a FortiGate's CLI would refuse fails here ----------------


@dataclass
class Node:
    kind: str  # "config", "edit", "root"
    name: str
    sets: dict[str, list[str]] = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # move, execute …

    def blocks(self, path: str) -> list[Node]:
        """Every ``config path`` at any depth."""
        found = [c for c in self.children if c.kind == "config" and c.name == path]
        for child in self.children:
            found += child.blocks(path)
        return found

    def edits(self) -> list[Node]:
        return [c for c in self.children if c.kind == "edit"]

    def edit(self, name: str) -> Node:
        return next(e for e in self.edits() if e.name == name)


def placeholders(tokens: list[str]) -> list[str]:
    """``<ID of your first policy>`` is one token: what the operator types in."""
    merged: list[str] = []
    for token in tokens:
        if merged and merged[-1].startswith("<") and not merged[-1].endswith(">"):
            merged[-1] += " " + token
        else:
            merged.append(token)
    return merged


def statements(text: str) -> list[list[str]]:
    """Lines as tokens; a quoted value may run over several lines (a PEM certificate)."""
    found: list[list[str]] = []
    pending = ""
    for line in text.splitlines():
        pending = f"{pending}\n{line}" if pending else line
        if (pending.count('"') - pending.count('\\"')) % 2:
            continue  # inside a quoted value
        stripped = pending.strip()
        pending = ""
        if stripped and not stripped.startswith("#"):
            found.append(placeholders(shlex.split(stripped, posix=True)))
    assert not pending, "a quoted value is never closed"
    return found


def parse_cli(text: str) -> Node:
    root = Node("root", "")
    stack = [root]
    for tokens in statements(text):
        verb, args = tokens[0], tokens[1:]
        top = stack[-1]
        if verb == "config":
            assert top.kind in ("root", "edit", "config") and args, tokens
            if top.kind == "config":  # only `config global` holds configs directly
                assert top.name == "global", f"config {args} directly inside config {top.name}"
            child = Node("config", " ".join(args))
            top.children.append(child)
            stack.append(child)
        elif verb == "edit":
            assert top.kind == "config" and len(args) == 1, f"edit outside a config: {tokens}"
            child = Node("edit", args[0])
            top.children.append(child)
            stack.append(child)
        elif verb == "set":
            assert top.kind in ("edit", "config") and top.name != "global", tokens
            assert len(args) >= 2, f"set without a value: {tokens}"
            top.sets[args[0]] = args[1:]
        elif verb == "next":
            assert top.kind == "edit", "next without edit"
            stack.pop()
        elif verb == "end":
            assert top.kind == "config", f"end closes {top.kind} {top.name}"
            stack.pop()
        elif verb == "move":
            assert top.kind == "config" and len(args) == 3 and args[1] == "before", tokens
            top.lines.append(" ".join(tokens))
        elif verb == "execute":
            assert top.kind == "root", "execute inside a config block"
            top.lines.append(" ".join(tokens))
        else:
            raise AssertionError(f"not a FortiOS CLI statement: {tokens}")
    assert stack == [root], f"unclosed: {[n.kind + ' ' + n.name for n in stack[1:]]}"
    return root


def test_the_parser_refuses_unbalanced_cli() -> None:
    with pytest.raises(AssertionError):
        parse_cli("config firewall policy\n    edit 0\n        set action deny\nend\n")
    with pytest.raises(AssertionError):
        parse_cli('config system external-resource\n    edit "x"\n    next\n')
    with pytest.raises(AssertionError):
        parse_cli('config vpn certificate ca\n    edit "x"\n        set ca "open\n')


# -- configs -----------------------------------------------------------------------------------


def write(tmp_path: Path, body: str, **server: str) -> Path:
    lines = [f'{k} = "{v}"' for k, v in {"listen": "127.0.0.1:8080", **server}.items()]
    path = tmp_path / "banfeed.toml"
    path.write_text("[server]\n" + "\n".join(lines) + "\n" + body, encoding="utf-8")
    return path


DEVICES = """
[[fortigates]]
name = "edge-1"
url = "https://192.0.2.10"
token_env = "BANFEED_EDGE1_TOKEN"
[[fortigates]]
name = "core-1"
url = "https://192.0.2.20:8443"
token_file = "/etc/banfeed/core-1.token"
vdoms = ["*"]
"""
FEEDS = """
[[feeds]]
name = "quarantine"
auth = { type = "basic", username = "fgt-pull", password_env = "FEED_PW" }
[[feeds]]
name = "ipv4-only"
family = "ipv4"
[[feeds]]
name = "ipv6-only"
family = "ipv6"
"""


def run(path: Path, *args: str) -> tuple[str, str]:
    result = cli("--config", str(path), "fortigate-config", *args, env={"FEED_PW": PASSWORD})
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output
    return result.stdout, result.stderr


def resources(tree: Node) -> dict[str, Node]:
    (block,) = tree.blocks("system external-resource")
    return {e.name: e for e in block.edits()}


def deny_policy(tree: Node) -> Node:
    edits = [e for b in tree.blocks("firewall policy") for e in b.edits()]
    return next(e for e in edits if e.sets.get("name") == ["banfeed-deny"])


# -- consume -----------------------------------------------------------------------------------


def test_every_feed_is_a_threat_feed_denied_for_ipv4_and_ipv6(tmp_path: Path) -> None:
    path = write(tmp_path, FEEDS, public_url="https://feeds.example.net")
    text, _ = run(path, "--role", "consume")
    tree = parse_cli(text)
    feeds = resources(tree)
    assert set(feeds) == {"banfeed-quarantine", "banfeed-ipv4-only", "banfeed-ipv6-only"}
    quarantine = feeds["banfeed-quarantine"]
    assert quarantine.sets["resource"] == ["https://feeds.example.net/feeds/quarantine.txt"]
    assert quarantine.sets["type"] == ["address"] and quarantine.sets["refresh-rate"] == ["5"]
    assert quarantine.sets["username"] == ["fgt-pull"]
    assert quarantine.sets["password"] == ["<the feed password>"]
    assert "username" not in feeds["banfeed-ipv4-only"].sets
    assert all(f.sets["server-identity-check"] == ["full"] for f in feeds.values())
    policy = deny_policy(tree)
    assert policy.sets["action"] == ["deny"] and policy.name == "0"
    assert policy.sets["srcaddr"] == ["banfeed-quarantine", "banfeed-ipv4-only"]
    assert policy.sets["srcaddr6"] == ["banfeed-quarantine", "banfeed-ipv6-only"]
    assert policy.sets["dstaddr6"] == ["all"] and policy.sets["dstaddr"] == ["all"]
    moves = [line for b in tree.blocks("firewall policy") for line in b.lines]
    assert moves == ["move <ID of banfeed-deny> before <ID of your first policy>"]
    (local4,) = tree.blocks("firewall local-in-policy")
    (local6,) = tree.blocks("firewall local-in-policy6")
    assert local4.edits()[0].sets["srcaddr"] == ["banfeed-quarantine", "banfeed-ipv4-only"]
    assert local6.edits()[0].sets["srcaddr"] == ["banfeed-quarantine", "banfeed-ipv6-only"]
    assert local4.edits()[0].sets["action"] == ["deny"]
    assert "CA Certificate" in text  # how to trust a private CA
    assert not tree.blocks("system api-user")  # the consume role only


def test_an_ipv4_feed_gets_no_srcaddr6_and_http_no_identity_check(tmp_path: Path) -> None:
    path = write(tmp_path, '[[feeds]]\nname = "v4"\nfamily = "ipv4"\n')
    text, err = run(path, "--role", "consume")
    tree = parse_cli(text)
    assert "server-identity-check" not in text and "certificate" not in text
    policy = deny_policy(tree)
    assert "srcaddr6" not in policy.sets and policy.sets["srcaddr"] == ["banfeed-v4"]
    assert not tree.blocks("firewall local-in-policy6")
    assert resources(tree)["banfeed-v4"].sets["resource"] == ["http://127.0.0.1:8080/feeds/v4.txt"]
    assert "pass --url" in err  # no public_url: it says which address it used


def test_policy_ids_make_the_move_step_exact(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    text, _ = run(path, "--role", "consume", "--policy-id", "9001", "--before", "3")
    tree = parse_cli(text)
    assert deny_policy(tree).name == "9001"
    assert [ln for b in tree.blocks("firewall policy") for ln in b.lines] == ["move 9001 before 3"]


def test_a_ca_file_is_printed_as_a_ca_certificate(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text(PEM + "\n")
    path = write(tmp_path, "", cert_file="c.pem", key_file="k.pem")
    text, _ = run(path, "--role", "consume", "--ca-file", str(ca))
    tree = parse_cli(text)
    (block,) = tree.blocks("vpn certificate ca")
    assert block.edit("banfeed-ca").sets["ca"] == [PEM]
    assert resources(tree)["banfeed-quarantine"].sets["resource"][0].startswith("https://")


def test_bearer_feeds_are_left_out_with_a_warning(tmp_path: Path) -> None:
    body = FEEDS + '[[feeds]]\nname = "siem"\nauth = { type = "bearer", token_env = "T" }\n'
    text, err = run(write(tmp_path, body), "--role", "consume")
    assert "banfeed-siem" not in text and "feed siem: bearer auth" in err
    assert "banfeed-quarantine" in text


def test_allow_from_and_feed_selection(tmp_path: Path) -> None:
    body = FEEDS + '[[feeds]]\nname = "partners"\nallow_from = ["198.51.100.0/24"]\n'
    text, _ = run(write(tmp_path, body), "--role", "consume", "--feed", "partners")
    assert set(resources(parse_cli(text))) == {"banfeed-partners"}
    assert "answers only to 198.51.100.0/24" in text
    result = cli("--config", str(tmp_path / "banfeed.toml"), "fortigate-config", "--feed", "nope")
    assert result.exit_code == 2 and "no feed named 'nope'" in result.output


# -- poll --------------------------------------------------------------------------------------


def test_polling_admin_is_read_only_unless_banfeed_writes(tmp_path: Path) -> None:
    path = write(tmp_path, DEVICES, listen="192.0.2.5:8080")
    text, _ = run(path, "--role", "poll")
    tree = parse_cli(text)
    profiles = {e.name: e for b in tree.blocks("system accprofile") for e in b.edits()}
    assert set(profiles) == {"banfeed-read"} and profiles["banfeed-read"].sets["authgrp"] == [
        "read"
    ]
    admins = [e for b in tree.blocks("system api-user") for e in b.edits()]
    assert len(admins) == 2  # edge-1 (root), core-1 (every VDOM, in config global)
    assert all(a.sets["accprofile"] == ["banfeed-read"] for a in admins)
    trusthost = admins[0].children[0].edits()[0].sets
    assert trusthost["ipv4-trusthost"] == ["192.0.2.5", "255.255.255.255"]  # from listen
    assert tree.lines.count("execute api-user generate-key banfeed") == 2
    (global_block,) = tree.blocks("global")
    assert global_block.blocks("system accprofile")[0].edits()[0].sets["scope"] == ["global"]
    assert "$BANFEED_EDGE1_TOKEN" in text and "/etc/banfeed/core-1.token" in text
    assert not tree.blocks("system external-resource")  # the poll role only

    pushed = write(tmp_path, DEVICES + "[push]\nquarantine = true\n")
    tree = parse_cli(run(pushed, "--role", "poll", "--trusthost", "198.51.100.7")[0])
    profiles = {e.name: e for b in tree.blocks("system accprofile") for e in b.edits()}
    assert set(profiles) == {"banfeed-write"}
    assert profiles["banfeed-write"].sets["authgrp"] == ["read-write"]

    tree = parse_cli(run(path, "--role", "poll", "--unban-everywhere")[0])
    profile = tree.blocks("system accprofile")[0].edits()[0]
    assert profile.sets["authgrp"] == ["read-write"]


def test_only_the_devices_that_receive_pushes_get_read_write(tmp_path: Path) -> None:
    body = DEVICES.replace('vdoms = ["*"]', 'vdoms = ["*"]\npush_quarantine = true')
    text, _ = run(write(tmp_path, body), "--role", "poll", "--trusthost", "2001:db8::5")
    tree = parse_cli(text)
    grants = {
        e.name: e.sets["authgrp"] for b in tree.blocks("system accprofile") for e in b.edits()
    }
    assert grants == {"banfeed-read": ["read"], "banfeed-write": ["read-write"]}
    assert "devices: edge-1)" in text and "devices: core-1)" in text
    hosts = [e for b in tree.blocks("trusthost") for e in b.edits()]
    assert hosts[0].sets == {"type": ["ipv6-trusthost"], "ipv6-trusthost": ["2001:db8::5/128"]}


@pytest.mark.parametrize("listen", ["127.0.0.1:8080", "localhost:8080", "0.0.0.0:8080", "[::]:80"])
def test_no_trusthost_known_is_a_placeholder_and_a_warning(tmp_path: Path, listen: str) -> None:
    text, err = run(write(tmp_path, DEVICES, listen=listen), "--role", "poll")
    assert "<banfeed-address> 255.255.255.255" in text and "--trusthost" in err
    result = cli("--config", str(tmp_path / "banfeed.toml"), "fortigate-config", "--trusthost", "x")
    assert result.exit_code == 2 and "--trusthost: 'x' is not an IP network" in result.output


def test_quarantine_actions_expire_after_several_collections(tmp_path: Path) -> None:
    path = write(tmp_path, '[collect]\ninterval = "1h"\n')
    tree = parse_cli(run(path, "--role", "poll", "--interface", "port1")[0])
    ips = tree.blocks("ips sensor")[0].edit("banfeed-quarantine").children[0].edits()[0]
    assert ips.sets["quarantine"] == ["attacker"] and ips.sets["quarantine-expiry"] == ["0d3h0m"]
    dos = tree.blocks("firewall DoS-policy")[0].edits()[0]
    assert dos.sets["interface"] == ["port1"]
    anomalies = dos.children[0].edits()
    assert {a.name for a in anomalies} >= {"tcp_syn_flood", "tcp_port_scan"}
    assert all(a.sets["quarantine"] == ["attacker"] for a in anomalies)
    assert tree.blocks("firewall DoS-policy6")  # the default feed carries IPv6
    app = tree.blocks("application list")[0].edits()[0].children[0].edits()[0]
    assert app.sets["quarantine"] == ["attacker"]
    (nac,) = tree.blocks("nac-quar")
    assert nac.sets["infected"] == ["quar-src-ip"] and nac.sets["expiry"] == ["0d3h0m"]
    text = run(path, "--role", "poll", "--quarantine-expiry", "2d")[0]
    assert "set quarantine-expiry 2d0h0m" in text and "0d3h0m" not in text
    result = cli("--config", str(path), "fortigate-config", "--quarantine-expiry", "soon")
    assert result.exit_code == 2 and "--quarantine-expiry" in result.output


# -- releases and formats ----------------------------------------------------------------------


@pytest.mark.parametrize("release", ["7.0", "7.2", "7.4", "7.6"])
def test_every_release_prints_balanced_cli_with_its_differences(
    tmp_path: Path, release: str
) -> None:
    path = write(tmp_path, DEVICES + FEEDS, public_url="https://feeds.example.net")
    args = ("--fortios", release, "--interface", "port1", "--interface", "port2")
    text, err = run(path, *args)
    tree = parse_cli(text)
    assert tree.blocks("system api-user") and tree.blocks("system external-resource")
    local_in = tree.blocks("firewall local-in-policy")[0].edits()
    if release == "7.6":  # one local-in policy takes several interfaces
        assert [p.sets["intf"] for p in local_in] == [["port1", "port2"]]
    else:
        assert [p.sets["intf"] for p in local_in] == [["port1"], ["port2"]]
    listing = "diagnose user quarantine list" if release == "7.0" else "diagnose user banned-ip"
    assert listing in text
    since = {"7.0": "7.0.8", "7.2": "7.2.4"}.get(release)
    assert (f"FortiOS {since}" in text) == bool(since)
    assert deny_policy(tree).sets["srcintf"] == ["port1", "port2"]


def test_limits_are_checked_against_the_release(tmp_path: Path) -> None:
    body = '[[feeds]]\nname = "big"\nmax_entries = "fortios-7.4"\n'
    _, err = run(write(tmp_path, body), "--role", "consume", "--fortios", "7.2")
    assert "over the 131072 a FortiOS 7.2 feed loads" in err and '"fortios-7.2"' in err
    _, err = run(write(tmp_path, body), "--role", "consume", "--fortios", "7.4")
    assert "warning" not in err
    body += '[[feeds]]\nname = "more"\nmax_entries = 50000\n'
    _, err = run(write(tmp_path, body), "--role", "consume", "--fortios", "7.4")
    assert "add up to 350000" in err


def test_fortimanager_format_is_adom_objects_and_policy_package(tmp_path: Path) -> None:
    path = write(tmp_path, DEVICES + FEEDS, public_url="https://feeds.example.net")
    text, _ = run(path, "--format", "fortimanager", "--adom", "branches", "--package", "edge")
    document = json.loads(text)
    assert document["adom"] == "branches" and document["package"] == "edge"
    calls = [(r["method"], r["params"][0]["url"], r["params"][0]) for r in document["requests"]]
    assert [r["id"] for r in document["requests"]] == list(range(1, len(calls) + 1))
    (feeds,) = [p["data"] for m, u, p in calls if u.endswith("/obj/system/external-resource")]
    by_name = {f["name"]: f for f in feeds}
    assert set(by_name) == {"banfeed-quarantine", "banfeed-ipv4-only", "banfeed-ipv6-only"}
    assert by_name["banfeed-quarantine"]["username"] == "fgt-pull"
    assert by_name["banfeed-quarantine"]["server-identity-check"] == "full"
    assert all(u.startswith("/pm/config/adom/branches/") for m, u, _ in calls if "adom" in u)
    (policy,) = [
        p["data"]
        for m, u, p in calls
        if m == "add" and u == "/pm/config/adom/branches/pkg/edge/firewall/policy"
    ]
    assert policy["action"] == "deny" and policy["srcaddr6"] == [
        "banfeed-quarantine",
        "banfeed-ipv6-only",
    ]
    assert any(m == "move" and p["option"] == "before" for m, _, p in calls)
    admins = [u for m, u, _ in calls if u.endswith("/global/system/api-user")]
    assert admins == [
        "/pm/config/device/edge-1/global/system/api-user",
        "/pm/config/device/core-1/global/system/api-user",
    ]
    assert any("execute api-user generate-key banfeed" in n for n in document["notes"])
    assert any("install policy package edge" in n for n in document["notes"])


# -- the printed URLs are the feeds served -----------------------------------------------------


def test_every_printed_feed_url_is_served_with_the_printed_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fleet = simulator.SimFleet(seed=5)
    fleet.add_device("edge-1", token="t1", entries=12)
    monkeypatch.setenv("T1", "t1")
    monkeypatch.setenv("FEED_PW", PASSWORD)
    with simulator.start(fleet) as sim:
        path = tmp_path / "banfeed.toml"
        path.write_text(
            '[store]\nurl = "sqlite:///banfeed.db"\n[collect]\ninterval = "1s"\n'
            '[server]\nlisten = "127.0.0.1:0"\n'
            f'[[fortigates]]\nname = "edge-1"\nurl = "{sim.urls["edge-1"]}"\ntoken_env = "T1"\n'
            + FEEDS
        )
        assert cli("--config", str(path), "db", "upgrade").exit_code == 0
        daemon = RunningDaemon(config_mod.load(path))
        try:
            text, _ = run(path, "--role", "consume", "--url", daemon.url)
            feeds = resources(parse_cli(text))
            assert len(feeds) == 3
            for feed in feeds.values():
                (url,) = feed.sets["resource"]
                auth = (feed.sets["username"][0], PASSWORD) if "username" in feed.sets else None

                def fetch(url: str = url, auth: Any = auth) -> httpx.Response | None:
                    answer = httpx.get(url, auth=auth, headers={"User-Agent": "curl/7.58.0"})
                    return answer if answer.status_code == 200 else None

                assert wait_for(fetch, what=f"feed {url}").status_code == 200
            (quarantine,) = feeds["banfeed-quarantine"].sets["resource"]
            assert httpx.get(quarantine).status_code == 401  # the user is needed
        finally:
            daemon.stop()


# -- the kit as a library ----------------------------------------------------------------------


def test_names_are_cut_to_35_characters_and_stay_unique() -> None:
    long = [FeedTarget("a" * 40 + str(i), f"http://192.0.2.1/feeds/{i}.txt") for i in range(3)]
    names = resource_names(long)
    assert len(set(names.values())) == 3 and all(len(n) <= 35 for n in names.values())
    tree = parse_cli(render(build(Kit(role="consume", feeds=tuple(long))).sections))
    assert set(resources(tree)) == set(names.values())
    assert all(len(n) <= 35 for n in deny_policy(tree).sets["srcaddr"])


def test_the_demo_form_is_one_feed_and_its_deny_policy() -> None:
    text = fortigate_config("quarantine", "http://127.0.0.1:8080", None, 7)
    tree = parse_cli(text)
    feed = resources(tree)["banfeed-quarantine"]
    assert feed.sets["refresh-rate"] == ["7"] and "username" not in feed.sets
    assert deny_policy(tree).sets["srcaddr"] == ["banfeed-quarantine"]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(59, "0d0h1m"), (60, "0d0h1m"), (90, "0d0h2m"), (3600, "0d1h0m"), (10**9, "364d23h59m")],
)
def test_quarantine_expiry_is_fortios_format(seconds: int, text: str) -> None:
    assert expiry_text(seconds) == text


# -- limit presets -----------------------------------------------------------------------------


def feed_with(value: object) -> int:
    config = config_mod.parse({"feeds": [{"name": "f", "max_entries": value}]}, base_dir=Path())
    return config.feeds[0].max_entries


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_a_number_of_entries(name: str) -> None:
    assert feed_with(name) == PRESETS[name].entries


def test_preset_values_follow_the_fortios_facts() -> None:
    assert feed_with("fortios-7.4") == 300000 and feed_with("fortios-7.6-entry") == 300000
    assert feed_with("fortios-7.6-mid") == 1000000 and feed_with("fortios-vm02") == 168928
    assert feed_with("FortiOS-7.0") == 131072  # case does not matter
    assert feed_with(50000) == 50000 and feed_with("50000") == 50000  # old configs stay valid
    assert config_mod.parse({}, base_dir=Path()).feeds[0].max_entries == 131072


@pytest.mark.parametrize("bad", ["fortios-7.5", "vm02", True, 0, 10_000_001])
def test_a_bad_limit_fails_and_lists_the_presets(bad: object) -> None:
    with pytest.raises(ConfigError) as caught:
        feed_with(bad)
    message = str(caught.value)
    assert "feeds[0].limit" in message  # the old name is read, errors name the new one
    if isinstance(bad, str):
        assert all(name in message for name in PRESETS), message


def test_a_bad_preset_in_a_file_exits_2_naming_the_presets(tmp_path: Path) -> None:
    path = write(tmp_path, '[[feeds]]\nname = "q"\nmax_entries = "fortios-9"\n')
    result = cli("--config", str(path), "fortigate-config")
    assert result.exit_code == 2
    assert "'fortios-9' is not a known limit preset" in result.output
    assert "fortios-7.6-mid (1000000)" in result.output
