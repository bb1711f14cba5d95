"""constraints.txt stays current: it pins every dependency pyproject.toml names (runtime and
every extra), and every package installed in this venv at the version installed — what
``scripts/setup`` installs is what was tested. (``pip-audit`` needs a vulnerability service on
the network, which this machine lacks: docs/reliability.md, "Bad input".)"""

from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# pip is upgraded by scripts/setup before the pinned install; banfeed is the project itself.
UNPINNED = {"pip", "banfeed"}


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins() -> dict[str, str]:
    found: dict[str, str] = {}
    for line in (ROOT / "constraints.txt").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, equals, version = line.partition("==")
        assert equals and version and re.fullmatch(r"[A-Za-z0-9._-]+", name), f"not a pin: {line}"
        assert normalized(name) not in found, f"pinned twice: {name}"
        found[normalized(name)] = version
    return found


def requirement_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return normalized(match.group(1))


def test_every_dependency_of_pyproject_is_pinned() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    named = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        named += extra
    missing = sorted({requirement_name(r) for r in named} - set(pins()))
    assert not missing, f"add to constraints.txt (pip freeze): {missing}"


def test_every_installed_package_is_pinned_at_its_installed_version() -> None:
    assert sys.prefix != sys.base_prefix, "run in the project's venv (scripts/test)"
    installed = {
        normalized(d.metadata["Name"]): d.version
        for d in metadata.distributions()
        if normalized(d.metadata["Name"]) not in UNPINNED
    }
    pinned = pins()
    unpinned = sorted(set(installed) - set(pinned))
    assert not unpinned, f"installed but not in constraints.txt: {unpinned}"
    drifted = {n: (pinned[n], v) for n, v in installed.items() if pinned[n] != v}
    assert not drifted, f"constraints.txt pins other versions than installed: {drifted}"
