"""Imports point one way, down the layers of STYLE.md; nothing imports ``cli``."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "banfeed"

# Lower number = lower layer. A module may import only from layers strictly below its own,
# or from inside its own package (``store/``, ``server/``).
LAYERS: dict[str, int] = {
    "errors": 0,
    "net": 1,
    "spans": 1,
    "timeutil": 1,
    "models": 2,
    "config": 2,
    "metrics": 2,
    "logsetup": 2,
    "policy": 3,
    "fortios": 3,
    "store": 3,
    "devicestatus": 4,
    "ingest": 4,
    "publish": 4,
    "control": 4,
    "cyclelog": 4,
    "push": 4,
    "setupkit": 4,
    "alerts": 5,
    "sharing": 5,
    "collector": 5,
    "importing": 4,  # below blocklists, which reads lists with its parser
    "blocklists": 5,
    "server": 5,
    "compose": 6,
    "checks": 6,
    "simulator": 6,
    "cycles": 7,
    "reports": 7,
    "reload": 7,
    "web": 8,
    "daemon": 9,
    "cli": 10,
    "__main__": 11,
}


def modules(package: Path) -> list[tuple[Path, str]]:
    """(file, top-level module of banfeed it belongs to), migrations and __init__ left out."""
    found = []
    for path in sorted(package.rglob("*.py")):
        rel = path.relative_to(package)
        if "migrations" in rel.parts or rel == Path("__init__.py"):
            continue
        found.append((path, rel.with_suffix("").parts[0]))
    return found


def imported(path: Path, package: Path) -> set[str]:
    """Top-level banfeed modules that ``path`` imports."""
    depth = len(path.relative_to(package).parts)  # 1: banfeed/x.py, 2: banfeed/store/x.py
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0 and (node.module or "").startswith("banfeed."):
                names.add((node.module or "").split(".")[1])
            elif node.level == 0 and node.module == "banfeed":  # from banfeed import x
                names.update(a.name for a in node.names)
            elif node.level == depth:  # relative import that reaches the package top
                if node.module:
                    names.add(node.module.split(".")[0])
                else:
                    names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("banfeed."))
    return names


def violations(package: Path) -> list[str]:
    found = []
    for path, own in modules(package):
        for name in sorted(imported(path, package) - {own, "__version__"}):
            if name in LAYERS and LAYERS[name] >= LAYERS[own]:
                found.append(f"{path.relative_to(package)} imports {name}")
    return found


def third_party(path: Path) -> set[str]:
    """Top-level names of every non-banfeed module ``path`` imports (any import form)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
    return names - {"banfeed"}


def test_only_the_store_imports_sqlalchemy() -> None:
    outside = [
        str(path.relative_to(PACKAGE))
        for path in sorted(PACKAGE.rglob("*.py"))
        if "sqlalchemy" in third_party(path) and path.relative_to(PACKAGE).parts[0] != "store"
    ]
    assert outside == []


def test_the_sqlalchemy_rule_sees_every_import_form(tmp_path: Path) -> None:
    for i, line in enumerate(
        ["import sqlalchemy\n", "from sqlalchemy import select\n", "import sqlalchemy.orm as o\n"]
    ):
        (tmp_path / f"m{i}.py").write_text(line)
        assert "sqlalchemy" in third_party(tmp_path / f"m{i}.py")


def test_no_module_is_over_400_lines() -> None:
    long = {
        str(path.relative_to(PACKAGE)): n
        for path in sorted(PACKAGE.rglob("*.py"))
        if (n := len(path.read_text().splitlines())) > 400
    }
    assert long == {}


def test_every_module_has_a_layer() -> None:
    for path, module in modules(PACKAGE):
        assert module in LAYERS, f"{path} has no layer in test_architecture.LAYERS"


def test_imports_point_down() -> None:
    assert violations(PACKAGE) == []


def test_simulator_shares_no_code_with_the_client() -> None:
    files = sorted((PACKAGE / "simulator").glob("*.py"))
    assert len(files) >= 2
    for path in files:
        assert imported(path, PACKAGE) - {"simulator"} == set(), path


def test_the_rule_catches_an_upward_import(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "net.py").write_text("from .cli import main\n")
    (tmp_path / "store" / "tx.py").write_text("from ..collector import Collector\n")
    (tmp_path / "publish.py").write_text("from .store import Tx\n")  # fine: store is lower
    (tmp_path / "policy.py").write_text("from banfeed import publish\n")
    assert violations(tmp_path) == [
        "net.py imports cli",
        "policy.py imports publish",
        "store/tx.py imports collector",
    ]
