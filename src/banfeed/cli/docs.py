"""Command docs: the reference shipped with the package (docs/*.md), readable where banfeed is
installed — every error message points to configuration.md or cli.md."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import InputError
from .base import handle_errors, main, out

ALIASES = {"config": "configuration"}  # `banfeed docs config`, as error messages say


def docs_dir() -> Path:
    """The wheel ships docs/*.md as ``banfeed/data/docs`` (setup.py); a source checkout or an
    editable install reads the repository's docs/ itself."""
    package = Path(__file__).resolve().parent.parent
    shipped = package / "data" / "docs"
    if shipped.is_dir():
        return shipped
    repository = package.parent.parent
    if (repository / "pyproject.toml").is_file() and (repository / "docs").is_dir():
        return repository / "docs"
    raise InputError(f"no documentation is installed with banfeed ({shipped} is missing)")


def topics(folder: Path) -> dict[str, Path]:
    found = {path.stem: path for path in sorted(folder.glob("*.md"))}
    found.update({alias: found[name] for alias, name in ALIASES.items() if name in found})
    return found


def title(path: Path) -> str:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return path.stem


def section(text: str, wanted: str) -> str | None:
    """The first heading containing ``wanted`` (case-insensitive), down to the next heading of
    its level or above; None when no heading matches."""
    lines = text.splitlines(keepends=True)
    fenced = False
    start = level = None
    for number, line in enumerate(lines):
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not line.startswith("#"):
            continue
        depth = len(line) - len(line.lstrip("#"))
        if start is None and wanted.lower() in line.lower():
            start, level = number, depth
        elif start is not None and level is not None and depth <= level:
            return "".join(lines[start:number])
    return None if start is None else "".join(lines[start:])


@main.command()
@click.argument("topic", required=False)
@click.argument("heading", required=False)
@click.option("--path", "show_path", is_flag=True, help="Print the file's path, not its text.")
@handle_errors
def docs(topic: str | None, heading: str | None, show_path: bool) -> None:
    """Print the reference shipped with banfeed: config, cli, operations, safety, ha…"""
    folder = docs_dir()
    known = topics(folder)
    if topic is None:
        shown = {name: alias for alias, name in ALIASES.items()}
        for name, path in known.items():
            if name == path.stem:  # each file once, under its short name
                out.print(f"{shown.get(name, name):<14} {title(path)}")
        return
    page = known.get(topic.lower())
    if page is None:
        raise InputError(f"no topic {topic!r}; topics: {', '.join(known)}")
    if show_path:
        out.print(str(page))
        return
    text = page.read_text(encoding="utf-8")
    if heading is not None:
        found = section(text, heading)
        if found is None:
            raise InputError(
                f"{page.name} has no heading with {heading!r} — "
                f"`banfeed docs {topic}` prints all of it"
            )
        text = found
    if sys.stdout.isatty():
        click.echo_via_pager(text)
    else:
        click.echo(text, nl=False)
