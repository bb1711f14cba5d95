"""Fuzzing the config through the real CLI (`banfeed check --config F`): malformed TOML, wrong
types at every key of the schema, unknown keys, empty files, huge values, odd Unicode. Each
must end in a clear message naming the key (or the file), exit 2, and no traceback."""

from __future__ import annotations

import json
import re
import tempfile
import unicodedata
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from banfeed.config import Config
from conftest import cli

FUZZ = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FOLDER = Path(tempfile.mkdtemp(prefix="banfeed-fuzz-config-"))
# Only 127.0.0.1 and a store file in the test's folder: a config that validates is probed, and
# the probe must not leave the machine (port 9 is closed: refused at once).
BASE: dict[str, Any] = {
    "store": {"url": f"sqlite:///{FOLDER / 'absent.db'}"},
    "retention": {"base_ttl": "30d", "factor": 2.0, "max_ttl": "365d"},
    "allowlist": {"networks": ["192.0.2.0/24"]},
    "collect": {"concurrency": 4, "interval": "60s"},
    "fortigates": [
        {"name": "edge-1", "url": "http://127.0.0.1:9", "token_env": "FUZZ_TOKEN", "timeout": "1s"}
    ],
    "feeds": [{"name": "quarantine", "max_entries": 1000}],
    "fortimanagers": [
        {
            "name": "fmg-1",
            "url": "http://127.0.0.1:9",
            "token_env": "FUZZ_TOKEN",
            "timeout": "2s",
            "device_timeout": "1s",
        }
    ],
    "blocklists": [{"name": "list-1", "url": "http://127.0.0.1:9/list.txt", "timeout": "1s"}],
}
# The first table of a nested array of tables, before a key of it is fuzzed.
ARRAY_ITEMS: dict[str, dict[str, Any]] = {
    "alerts.targets[]": {
        "name": "hook",
        "type": "webhook",
        "url": "http://127.0.0.1:9/hook",
        "secret_env": "FUZZ_TOKEN",
    }
}
NETWORK_KEYS = {"url", "listen", "public_url"}  # never given a generated string: no lookups


# -- a small TOML writer (tomllib only reads) -------------------------------------------------


def _key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _value(key)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return {"inf": "inf", "-inf": "-inf", "nan": "nan"}.get(str(value), repr(value))
    if isinstance(value, str):  # JSON's escapes are TOML's, but for DEL
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + "}"


def toml(data: dict[str, Any]) -> str:
    lines = [f"{_key(k)} = {_value(v)}" for k, v in data.items() if not isinstance(v, dict | list)]
    lines += [f"{_key(k)} = {_value(v)}" for k, v in data.items() if _scalar_list(v)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"\n[{_key(key)}]")
            lines += [f"{_key(k)} = {_value(v)}" for k, v in value.items()]
        elif isinstance(value, list) and not _scalar_list(value):
            for item in value:
                lines.append(f"\n[[{_key(key)}]]")
                lines += [f"{_key(k)} = {_value(v)}" for k, v in item.items()]
    return "\n".join(lines) + "\n"


def _scalar_list(value: Any) -> bool:
    return isinstance(value, list) and not all(isinstance(v, dict) for v in value) or value == []


# -- the schema's keys ------------------------------------------------------------------------


def _model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        if (found := _model(arg)) is not None:
            return found
    return None


def leaf_keys() -> list[tuple[str, str, bool]]:
    """(section, key, section is an array of tables) for every scalar or list key."""
    keys = []
    for section, field in Config.model_fields.items():
        model = _model(field.annotation)
        if model is None:
            continue
        many = get_origin(field.annotation) is list
        for name, sub in model.model_fields.items():
            if _model(sub.annotation) is None:  # feeds.auth is a table: its own keys below
                keys.append((section, name, many))
            else:  # a sub-table, or an array of them (alerts.targets): "[]" marks the array
                mark = "[]" if get_origin(sub.annotation) is list else ""
                keys += [
                    (f"{section}.{name}{mark}", n, many)
                    for n in _model(sub.annotation).model_fields  # type: ignore[union-attr]
                ]
    return keys


LEAVES = leaf_keys()


def array_keys() -> set[str]:
    """The keys whose value is an array (of values, not of tables): a table or another array
    there may be what is wrong, or an array may be right."""
    found = set()
    models = [m for f in Config.model_fields.values() if (m := _model(f.annotation))]
    while models:
        model = models.pop()
        for name, field in model.model_fields.items():
            sub = _model(field.annotation)
            if sub is not None:
                models.append(sub)
            elif _is_array(field.annotation):
                found.add(name)
    return found


def _is_array(annotation: Any) -> bool:
    """A list or tuple, or an optional one (not a table whose values are lists)."""
    if get_origin(annotation) in (list, tuple):
        return True
    if get_origin(annotation) in (Union, UnionType):
        return any(_is_array(a) for a in get_args(annotation))
    return get_origin(annotation) is Annotated and _is_array(get_args(annotation)[0])


ARRAY_KEYS = array_keys()


def table_keys() -> set[str]:
    """The keys whose value is a table of values (``retention.causes``, ``abuseipdb.categories``):
    there a table is right, and a table or an array in place of one of its values is wrong."""
    found = set()
    models = [m for f in Config.model_fields.values() if (m := _model(f.annotation))]
    while models:
        model = models.pop()
        for name, field in model.model_fields.items():
            if (sub := _model(field.annotation)) is not None:
                models.append(sub)
            elif get_origin(field.annotation) is dict or any(
                get_origin(a) is dict for a in get_args(field.annotation)
            ):
                found.add(name)
    return found


TABLE_KEYS = table_keys()

# -- running it -------------------------------------------------------------------------------


def check(text: str | bytes) -> tuple[int, str]:
    path = Path(tempfile.mkstemp(dir=FOLDER, suffix=".toml")[1])
    path.write_bytes(text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text)
    result = cli("check", "--config", str(path), env={"FUZZ_TOKEN": "fuzz-token-0123456789"})
    path.unlink()
    return result.exit_code, result.output


# Characters that rewrite what a terminal or a log shows: controls (escape sequences, CR),
# format characters (bidirectional overrides), line separators and lone surrogates.
_HIDDEN = {"Cc", "Cf", "Cs", "Zl", "Zp"}


def shown_safely(text: str) -> bool:
    return not any(unicodedata.category(c) in _HIDDEN for c in text.replace("\n", ""))


def refused(code: int, output: str) -> str:
    """The message of a refused config: exit 2, an error line, no traceback, nothing that
    rewrites the terminal."""
    assert code == 2, f"exit {code}: {output[-2000:]}"
    assert "Traceback" not in output
    assert any(line.lstrip().startswith("error: ") for line in output.splitlines()), output[:300]
    assert shown_safely(output), repr(output[:300])
    return output


_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_odd_text = st.one_of(
    _text,
    st.sampled_from(["", " ", "\u202ertl", "e\u0301", "\U0001f525", "\x00", "\x1b[2J", "\ufeff"]),
)
_any_value = st.recursive(
    st.one_of(
        st.booleans(),
        st.integers(-(2**63), 2**63 - 1),
        st.floats(),
        _odd_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(_odd_text, inner, max_size=2)
    ),
    max_leaves=5,
)


def _place(data: dict[str, Any], section: str, many: bool) -> dict[str, Any]:
    """The table ``section`` (``feeds.auth``: a sub-table) of ``data``, made if absent."""
    head, _, sub = section.partition(".")
    table = data[head][0] if many else data.setdefault(head, {})
    if sub.endswith("[]"):  # an array of tables: its first one (made with what it requires)
        items = table.setdefault(sub[:-2], [])
        if not items:
            items.append(dict(ARRAY_ITEMS.get(section, {})))
        first: dict[str, Any] = items[0]
        return first
    return table.setdefault(sub, {}) if sub else table


@FUZZ
@given(leaf=st.sampled_from(LEAVES), value=_any_value)
def test_a_wrong_value_at_any_key_is_refused_naming_it_or_accepted(
    leaf: tuple[str, str, bool], value: Any
) -> None:
    section, key, many = leaf
    if key in NETWORK_KEYS and isinstance(value, str):
        value = len(value)  # no generated host names: they would be looked up
    data = json.loads(json.dumps(BASE))
    _place(data, section, many)[key] = value
    code, output = check(toml(data))
    assert "Traceback" not in output
    if code == 2:
        message = refused(code, output)
        head, _, sub = section.partition(".")
        table = f"{head}[0]" if many else head
        table += f".{sub}" if sub else ""
        table = table.replace("[]", "[0]")  # the first table of a nested array
        # The key, or its table when a rule spans keys ("set exactly one of token_env, …").
        named = f"{table}.{key}" in message or f"{table}:" in message
        assert named or "not valid TOML" in message, message
    else:
        assert code in (0, 1) and output.startswith("config "), output[-500:]


@FUZZ
@given(leaf=st.sampled_from(LEAVES), value=_any_value.filter(lambda v: isinstance(v, dict | list)))
def test_a_table_or_array_where_a_value_belongs_names_the_key(
    leaf: tuple[str, str, bool], value: Any
) -> None:
    section, key, many = leaf
    if key in ARRAY_KEYS or key in ("networks", "protect", "trusted_proxies", "proxy_from"):
        value = {"x": value}  # these keys take arrays: an array may be right
    if key in ("adoms", "targets", "allow_from", "vdoms"):  # arrays too (fortimanagers' …)
        value = {"x": value}
    if key in ("causes", "devices", "access_log", "max_entries", "seen_within"):
        value = {"x": value}
    if key in TABLE_KEYS:
        value = {"x": {"y": value}}  # a table where one of the table's values belongs
    data = json.loads(json.dumps(BASE))
    _place(data, section, many)[key] = value
    code, output = check(toml(data))
    message = refused(code, output)
    assert key in message, message


_unknown = st.text(st.characters(exclude_categories=["Cs", "Cc"]), min_size=1, max_size=20).filter(
    lambda k: k.strip() == k and k not in {n for _, n, _ in LEAVES} | set(Config.model_fields)
)


@FUZZ
@given(section=st.sampled_from([None, *Config.model_fields]), key=_unknown, value=_any_value)
def test_an_unknown_key_anywhere_is_refused_by_name(
    section: str | None, key: str, value: Any
) -> None:
    data = json.loads(json.dumps(BASE))
    if section is None or section == "base_dir":
        data[key] = value
        where = ""
    elif section in ("fortigates", "feeds", "fortimanagers", "blocklists"):
        data[section][0][key] = value
        where = f"{section}[0]."
    else:
        data.setdefault(section, {})[key] = value
        where = f"{section}."
    code, output = check(toml(data))
    message = refused(code, output)
    assert "unknown key" in message
    shown = key if key.isprintable() else None
    if shown is not None:
        assert f"{where}{key}" in message, message


@FUZZ
@given(cut=st.integers(0, 10_000), byte=st.integers(0, 255), at=st.integers(0, 10_000))
def test_damaged_toml_is_refused_naming_the_file(cut: int, byte: int, at: int) -> None:
    raw = toml(BASE).encode()
    raw = raw[: cut % (len(raw) + 1)]
    if raw:
        i = at % len(raw)
        raw = raw[:i] + bytes([byte]) + raw[i + 1 :]
    code, output = check(raw)
    assert "Traceback" not in output
    if code == 2:
        refused(code, output)
    else:  # a cut on a line boundary, or a byte that changed a value into another good one
        assert code in (0, 1) and output.startswith("config "), output[-500:]


@FUZZ
@given(raw=st.binary(max_size=300))
def test_random_bytes_are_refused_or_read(raw: bytes) -> None:
    code, output = check(raw)
    assert "Traceback" not in output and code in (0, 1, 2)
    if code == 2:
        refused(code, output)


HUGE = [
    ("collect", "concurrency", "9" * 5000),  # over Python's 4,300-digit limit
    ("collect", "concurrency", str(2**64)),
    ("retention", "factor", "1e400"),
    ("retention", "base_ttl", json.dumps("9" * 100 + "d")),
    ("collect", "interval", json.dumps("1" * 1_000_000 + "s")),
    # 100,000 networks, the last with host bits set: named by its index
    ("allowlist", "networks", "[" + '"192.0.2.0/24", ' * 99_999 + '"192.0.2.1/24"]'),
    ("allowlist", "networks", "[" * 5000 + "]" * 5000),  # nesting deeper than tomllib recurses
    ("retention", "max_ttl", "{a = " * 5000 + "1" + "}" * 5000),
    ("collect", "jitter", "nan"),
    ("collect", "jitter", "inf"),
]


@pytest.mark.parametrize(("section", "key", "raw"), HUGE, ids=lambda v: str(v)[:20])
def test_huge_and_deep_values_are_refused_clearly(section: str, key: str, raw: str) -> None:
    text = toml({k: v for k, v in BASE.items() if k != section})
    code, output = check(text + f"\n[{section}]\n{key} = {raw}\n")
    message = refused(code, output)
    assert len(message) < 2000, "the message does not repeat the huge value"
    assert f"{section}.{key}" in message or "not valid TOML" in message, message


@pytest.mark.parametrize(
    "raw",
    [b"", b"\n\n", b"# only a comment\n", b"   \t  \n"],
    ids=["empty", "newlines", "comment", "blank"],
)
def test_empty_files_are_the_defaults(raw: bytes) -> None:
    code, output = check(raw)
    assert code in (0, 1) and output.startswith("config ") and "valid" in output, output


@pytest.mark.parametrize(
    "raw",
    [
        b"\xef\xbb\xbf[store]\n",  # a UTF-8 byte-order mark (Windows editors add one)
        "[store]\nurl = 1\n".encode("utf-16"),
        b"\xff\xfe\x00",
        b"[store]\x00\n",
        b'[store]\nurl = "\xc3\x28"\n',  # invalid UTF-8
        "[\u202estore]\n".encode(),
        '["sto\u202ere"]\nx = 1\n'.encode(),
        b'[collect]\n"\x1b[2Jinterval" = 5\n',
    ],
)
def test_odd_bytes_and_unicode_are_refused_printably(raw: bytes) -> None:
    refused(*check(raw))
