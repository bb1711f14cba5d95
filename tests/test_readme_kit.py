"""The README's "Use it with your FortiGates" walks through what `banfeed fortigate-config`
prints: each of its six numbered steps is a step of the kit, in the same order, and the
external-resource block it quotes is the kit's own block for that config, line for line (the
password aside). A change of the kit that the README does not follow fails here."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import cli

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "readme-feed-password-0123"
CONFIG = """[server]
listen = "0.0.0.0:8080"
public_url = "https://banfeed.example:8080"
[[fortigates]]
name = "edge-1"
url = "https://192.0.2.10"
token_env = "BANFEED_EDGE1_TOKEN"
[[feeds]]
name = "quarantine"
auth = { type = "basic", username = "fortigate", password_env = "FEED_PW" }
"""


def section() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return text.split("## Use it with your FortiGates", 1)[1].split("\n## ", 1)[0]


def kit(tmp_path: Path) -> str:
    path = tmp_path / "banfeed.toml"
    path.write_text(CONFIG, encoding="utf-8")
    result = cli(
        "--config", str(path), "fortigate-config", "--trusthost", "192.0.2.5",
        env={"FEED_PW": PASSWORD},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_readme_steps_are_the_kits_steps_in_order(tmp_path: Path) -> None:
    readme = re.findall(r"^\d\. \*\*((?:poll|consume)[^*]*?)\*\*", section(), re.M)
    printed = re.findall(r"^# --- (.+)$", kit(tmp_path), re.M)
    assert len(readme) == len(printed) == 6, (readme, printed)
    for said, step in zip(readme, printed, strict=True):
        role, _, words = said.partition(": ")
        assert step.startswith(role + ": "), (said, step)
        wanted = {w for w in re.findall(r"[a-z]{5,}", words.lower())} - {"banfeed"}
        got = set(re.findall(r"[a-z]{5,}", step.lower()))
        assert wanted & got, f"README step {said!r} says nothing of kit step {step!r}"


def test_the_quoted_external_resource_is_the_kits_own(tmp_path: Path) -> None:
    quoted = section().split("config system external-resource", 1)[1].split("   end", 1)[0]
    quoted_sets = [line.strip() for line in quoted.splitlines() if line.strip()]
    out = kit(tmp_path)
    block = out.split('edit "banfeed-quarantine"')
    printed = [b for b in block[1:] if "set type address" in b.split("next", 1)[0]]
    assert printed, "the kit prints no external resource banfeed-quarantine"
    printed_sets = [line.strip() for line in printed[0].split("next", 1)[0].splitlines()]
    printed_sets = ['edit "banfeed-quarantine"', *filter(None, printed_sets), "next"]
    for line in quoted_sets:
        if line.startswith("set password"):
            assert any(p.startswith("set password") for p in printed_sets)
            continue
        assert line in printed_sets, f"README quotes {line!r}; the kit prints {printed_sets}"
    assert PASSWORD not in out  # the kit never prints the feed's secret


def test_the_readme_names_what_each_step_prints(tmp_path: Path) -> None:
    out, text = kit(tmp_path), section()
    for phrase in (
        "authgrp read",
        "execute api-user generate-key banfeed",
        "set quarantine attacker",
        "quarantine-expiry",
        "quar-src-ip",
        "server-identity-check full",
        "srcaddr6",
        "move",
        "local-in",
    ):
        assert phrase in text, f"README does not say {phrase!r}"
        assert phrase in out.replace("local-in-policy", "local-in"), f"the kit prints no {phrase!r}"
