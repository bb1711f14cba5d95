"""Every config key and every command is documented: a new one without docs fails here.

The walkers read the pydantic models and the click tree themselves, so keys and commands added
later are checked without editing this file.
"""

from __future__ import annotations

import re
import types
import typing
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from banfeed.cli import main
from banfeed.config import Config

DOCS = Path(__file__).resolve().parent.parent / "docs"
CONFIGURATION = DOCS / "configuration.md"
CLI = DOCS / "cli.md"

# Fields of Config that are not TOML keys (set by config.load, refused in a file).
NOT_TOML_KEYS = {"base_dir"}


# -- walkers -----------------------------------------------------------------------------------


def _models_in(annotation: object) -> list[type[BaseModel]]:
    """The BaseModel classes in an annotation: ``Model``, ``list[Model]``, ``Model | None``…"""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    if typing.get_origin(annotation) is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    found: list[type[BaseModel]] = []
    if typing.get_origin(annotation) is not None or isinstance(annotation, types.UnionType):
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found


def config_fields(
    model: type[BaseModel] = Config, prefix: str = ""
) -> Iterator[tuple[str, FieldInfo, bool]]:
    """``(dotted key, field, is_section)`` for every key of the TOML file, depth first."""
    for name, field in model.model_fields.items():
        if not prefix and name in NOT_TOML_KEYS:
            continue
        key = f"{prefix}{name}"
        nested = _models_in(field.annotation)
        yield key, field, bool(nested)
        for sub in nested:
            yield from config_fields(sub, f"{key}.")


def config_keys() -> list[str]:
    """Dotted keys of the values a user writes (sections excluded)."""
    return [key for key, _, is_section in config_fields() if not is_section]


def commands(
    command: click.Command = main, path: tuple[str, ...] = ()
) -> Iterator[tuple[str, click.Command]]:
    """``(name, command)`` for the root (name ``""``), every command and every subcommand."""
    yield " ".join(path), command
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            yield from commands(sub, (*path, name))


def longest_flag(option: click.Option) -> str:
    return max([*option.opts, *option.secondary_opts], key=len)


# -- reading the docs --------------------------------------------------------------------------


def _text(path: Path) -> str:
    if not path.is_file():
        pytest.fail(f"{path.relative_to(DOCS.parent)} is missing")
    return path.read_text(encoding="utf-8")


def headings_and_rows(path: Path) -> list[str]:
    """Markdown headings and table rows: where a key or command counts as documented."""
    return [
        line for line in _text(path).splitlines() if line.startswith("#") or line.startswith("|")
    ]


def cli_sections() -> dict[str, str]:
    """cli.md's ``## `banfeed NAME` `` sections by command name (``""`` for the root)."""
    sections: dict[str, str] = {}
    current: str | None = None
    for line in _text(CLI).splitlines():
        if line.startswith("## "):
            match = re.fullmatch(r"## `banfeed(?: ([^`]+))?`", line.strip())
            current = (match.group(1) or "") if match else None
            if current is not None:
                sections[current] = ""
        elif current is not None:
            sections[current] += line + "\n"
    return sections


# -- sanity of the walkers: a broken walker must not pass vacuously ----------------------------


def test_walkers_find_known_keys_and_commands() -> None:
    keys = config_keys()
    for expected in ("store.url", "fortigates.token_env", "retention.base_ttl", "feeds.name"):
        assert expected in keys
    assert "collect.concurrency" in keys
    assert not any(k.split(".")[0] in NOT_TOML_KEYS for k in keys)
    sections = [key for key, _, is_section in config_fields() if is_section]
    assert {"store", "fortigates", "retention", "allowlist", "feeds", "collect"} <= set(sections)
    names = [name for name, _ in commands()]
    assert {"", "list", "show", "db", "db upgrade"} <= set(names)


# -- (a) every config key is documented --------------------------------------------------------


@pytest.mark.parametrize("key", config_keys())
def test_config_key_is_documented(key: str) -> None:
    lines = headings_and_rows(CONFIGURATION)
    assert any(f"`{key}`" in line for line in lines), (
        f"docs/configuration.md has no heading or table row with `{key}`: document it "
        "(type, default, what it does, valid values, example, error for a bad value)"
    )


def test_configuration_documents_no_unknown_key() -> None:
    sections = sorted({key.split(".")[0] for key in config_keys() if "." in key})
    alternatives = "|".join(map(re.escape, sections))
    pattern = re.compile(rf"`((?:{alternatives})\.[a-z_][a-z0-9_.]*)`")
    known = {key for key, _, _ in config_fields()}  # sections may have headings too
    stale = {
        key
        for line in headings_and_rows(CONFIGURATION)
        for key in pattern.findall(line)
        if key not in known
    }
    assert not stale, f"docs/configuration.md documents keys the config does not have: {stale}"


# -- (d) every config key has a description ----------------------------------------------------


@pytest.mark.parametrize("key", config_keys())
def test_config_key_has_a_description(key: str) -> None:
    field = next(field for name, field, _ in config_fields() if name == key)
    assert field.description and field.description.strip(), (
        f"{key}: give the pydantic Field a description= (sections are exempt)"
    )


# -- (b) every command is documented under its own heading -------------------------------------


@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_command_has_a_heading(name: str) -> None:
    label = f"`banfeed {name}`" if name else "`banfeed`"
    headings = [line for line in headings_and_rows(CLI) if line.startswith("#")]
    assert any(label in line for line in headings), (
        f"docs/cli.md has no heading with {label}: add a section '## {label}'"
    )


def test_cli_documents_no_unknown_command() -> None:
    known = {name for name, _ in commands()}
    stale = set(cli_sections()) - known
    assert not stale, f"docs/cli.md has sections for commands that do not exist: {stale}"


# -- (c) every option and argument is documented in its command's section ----------------------


def _params() -> list[tuple[str, str]]:
    found = []
    for name, command in commands():
        for param in command.params:
            if isinstance(param, click.Option):
                found.append((name, longest_flag(param)))
            elif isinstance(param, click.Argument):
                found.append((name, param.human_readable_name))
    return found


def test_every_command_has_options_to_check() -> None:
    flags = {flag for _, flag in _params()}
    assert {"--config", "--format", "--force", "--fault", "ADDRESS"} <= flags


@pytest.mark.parametrize(("name", "flag"), _params())
def test_option_is_documented(name: str, flag: str) -> None:
    section = cli_sections().get(name)
    label = f"banfeed {name}" if name else "banfeed"
    assert section is not None, f"docs/cli.md has no section '## `{label}`'"
    assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", section), (
        f"docs/cli.md, section `{label}`: document {flag}"
    )
