"""FortiOS CLI as a tree: ``config`` blocks, ``edit`` entries, ``set`` lines, comments, commands.

The kit builds trees, never text, so the CLI and the FortiManager JSON are two renderings of one
thing, and a printed block always closes what it opens.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

INDENT = "    "
NAME_LIMIT = 35  # FortiOS: names of external resources, policies, profiles


@dataclass(frozen=True)
class Set:
    """``set key value …``; ``quoted`` values are names (``"all"``), the others keywords."""

    key: str
    values: tuple[str, ...]
    quoted: bool = False


@dataclass(frozen=True)
class Edit:
    """``edit name`` … ``next``; an ``int`` name is an ID (``0``: the next free one)."""

    name: str | int
    body: tuple[Node, ...]


@dataclass(frozen=True)
class Block:
    """``config path`` … ``end``."""

    path: str
    body: tuple[Node, ...]


@dataclass(frozen=True)
class Comment:
    """A ``#`` line: what a step is for, what to fill in."""

    text: str


@dataclass(frozen=True)
class Command:
    """A line run as it is: ``execute api-user generate-key banfeed``."""

    text: str


@dataclass(frozen=True)
class Move:
    """``move ID before TARGET`` inside a ``config`` block of ordered policies."""

    policy: str | int
    before: str | int


Node = Set | Edit | Block | Comment | Command | Move


@dataclass
class Section:
    """One step of the kit: a title, who it is for, and its nodes."""

    title: str
    nodes: list[Node] = field(default_factory=list)
    devices: tuple[str, ...] = ()  # the polled devices it is for (device-level settings)


def keyword(key: str, *values: str | int) -> Set:
    return Set(key, tuple(str(v) for v in values))


def names(key: str, *values: str) -> Set:
    return Set(key, values, quoted=True)


def edit(name: str | int, *body: Node) -> Edit:
    return Edit(name, body)


def block(path: str, *body: Node) -> Block:
    return Block(path, body)


def short_name(text: str) -> str:
    return text[:NAME_LIMIT]


def quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def render(sections: Iterable[Section]) -> str:
    """The CLI text of ``sections``, each introduced by its title as a comment."""
    lines: list[str] = []
    for section in sections:
        if lines:
            lines.append("")
        lines.append(f"# --- {section.title}")
        for node in section.nodes:
            lines.extend(_lines(node, 0))
    return "\n".join(lines) + "\n"


def placeholder(value: str | int) -> bool:
    """``<ID of your first policy>``: what the operator fills in, never quoted."""
    return isinstance(value, str) and value.startswith("<")


def _id_or_name(name: str | int) -> str:
    return str(name) if isinstance(name, int) or placeholder(name) else quote(name)


def _lines(node: Node, depth: int) -> Iterator[str]:
    pad = INDENT * depth
    if isinstance(node, Set):
        shown = [quote(v) if node.quoted else v for v in node.values]
        yield f"{pad}set {node.key} {' '.join(shown)}"
    elif isinstance(node, Edit):
        yield f"{pad}edit {_id_or_name(node.name)}"
        for child in node.body:
            yield from _lines(child, depth + 1)
        yield f"{pad}next"
    elif isinstance(node, Block):
        yield f"{pad}config {node.path}"
        for child in node.body:
            yield from _lines(child, depth + 1)
        yield f"{pad}end"
    elif isinstance(node, Comment):
        yield f"{pad}# {node.text}"
    elif isinstance(node, Command):
        yield f"{pad}{node.text}"
    else:
        yield f"{pad}move {node.policy} before {node.before}"


@dataclass
class Plan:
    """The sections to print, and what the operator must be told beside them (stderr)."""

    sections: list[Section] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
