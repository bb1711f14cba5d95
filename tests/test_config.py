"""config: the TOML file, its key-path errors, store URL, tokens, and keeping secrets secret."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from importlib.resources import as_file, files
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any

import pytest

from banfeed import config
from banfeed.config import Config, FortiGateConfig
from banfeed.errors import BanfeedError, ConfigError

EXAMPLE_TOML = """
[store]
url = "sqlite:///banfeed.db"
[[fortigates]]
name = "edge-1"
url = "https://192.0.2.10:8443"
token_env = "BANFEED_EDGE1_TOKEN"
vdoms = ["root"]
verify_tls = true
timeout = "10s"
[retention]
base_ttl = "30d"
factor = 2.0
max_ttl = "365d"
[allowlist]
networks = ["198.51.100.0/24", "2001:db8:1::/48"]
[[feeds]]
name = "quarantine"
"""
EXAMPLE: dict[str, Any] = tomllib.loads(EXAMPLE_TOML)
DAY = 86400
SECRET = "TOPSECRET-b4nf33d-7f3a9c2e"


def example() -> dict[str, Any]:
    return copy.deepcopy(EXAMPLE)


def parse(data: dict[str, Any], base_dir: Path = Path("/srv/banfeed")) -> Config:
    return config.parse(data, base_dir=base_dir)


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as info:
        parse(data)
    return str(info.value)


def device(**overrides: Any) -> FortiGateConfig:
    fields: dict[str, Any] = {"name": "edge-1", "url": "https://192.0.2.10"}
    fields.update(overrides)
    return FortiGateConfig.model_validate(fields)


# --------------------------------------------------------------------------- the example


def test_example_parses() -> None:
    cfg = parse(example())
    assert cfg.store.url == "sqlite:///banfeed.db"
    (fg,) = cfg.fortigates
    assert fg.name == "edge-1"
    assert fg.url == "https://192.0.2.10:8443"
    assert fg.token_env == "BANFEED_EDGE1_TOKEN"
    assert fg.token is None and fg.token_file is None
    assert fg.vdoms == ["root"]
    assert fg.verify_tls is True
    assert fg.timeout == 10
    assert fg.max_response == 256 * 1024**2
    assert cfg.retention.base_ttl == 30 * DAY
    assert cfg.retention.factor == 2.0
    assert cfg.retention.max_ttl == 365 * DAY
    assert cfg.allowlist.networks == [
        IPv4Network("198.51.100.0/24"),
        IPv6Network("2001:db8:1::/48"),
    ]
    assert [f.name for f in cfg.feeds] == ["quarantine"]
    assert cfg.feed("quarantine").family == "any"
    assert cfg.feed("quarantine").min_offenses == 1
    assert cfg.collect.concurrency == 16
    assert cfg.base_dir == Path("/srv/banfeed")


def test_empty_config_has_defaults() -> None:
    cfg = parse({})
    assert cfg.fortigates == []
    assert [f.name for f in cfg.feeds] == ["quarantine"]
    assert cfg.retention.base_ttl == 30 * DAY
    assert cfg.retention.max_ttl == 365 * DAY
    assert cfg.store.url == "sqlite:///banfeed.db"


def test_optional_values() -> None:
    data = example()
    data["fortigates"][0].update(
        {"vdoms": ["*"], "max_response": "64MiB", "timeout": "2m", "url": "http://fw.lab/"}
    )
    data["retention"] = {"base_ttl": "forever", "factor": 1.0, "max_ttl": "forever"}
    data["feeds"] = [
        {"name": "v4", "family": "ipv4", "causes": ["IPS"], "min_offenses": 2},
        {"name": "v6", "family": "ipv6", "devices": ["edge-1"]},
    ]
    cfg = parse(data)
    fg = cfg.fortigates[0]
    assert fg.vdoms == ["*"]
    assert fg.max_response == 64 * 1024**2
    assert fg.timeout == 120
    assert fg.url == "http://fw.lab"  # trailing slash dropped
    assert cfg.retention.base_ttl is None and cfg.retention.max_ttl is None
    assert [f.name for f in cfg.feeds] == ["v4", "v6"]
    assert cfg.feed("v4").min_offenses == 2


def test_unknown_feed() -> None:
    cfg = parse(example())
    with pytest.raises(ConfigError, match="no feed named 'nope'") as info:
        cfg.feed("nope")
    assert "quarantine" in str(info.value)


def test_config_is_frozen() -> None:
    cfg = parse(example())
    with pytest.raises(ValueError):
        cfg.retention.factor = 3.0  # type: ignore[misc]


# --------------------------------------------------------------------------- errors


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        target[path[-1]] = value

    return mutate


def _delete(path: tuple[Any, ...]) -> Callable[[dict[str, Any]], None]:
    def mutate(data: dict[str, Any]) -> None:
        target = data
        for part in path[:-1]:
            target = target[part]
        del target[path[-1]]

    return mutate


@pytest.mark.parametrize(
    ("mutate", "key_path"),
    [
        (_set(("fortigates", 0, "bogus"), 1), "fortigates[0].bogus"),
        (_set(("retention", "bogus"), 1), "retention.bogus"),
        (_set(("store", "path"), "x.db"), "store.path"),
        (_set(("allowlist", "network"), []), "allowlist.network"),
        (_set(("feeds", 0, "familly"), "ipv4"), "feeds[0].familly"),
        (_set(("collect",), {"concurency": 4}), "collect.concurency"),
        (_set(("fortigate",), []), "fortigate"),
    ],
)
def test_unknown_key_names_its_path(
    mutate: Callable[[dict[str, Any]], None], key_path: str
) -> None:
    data = example()
    mutate(data)
    message = error_of(data)
    assert f"{key_path}: unknown key" in message


@pytest.mark.parametrize(
    ("section", "key"),
    [("retention", "functional"), ("fortigates", "function_timeout")],
)
def test_unknown_key_names_its_path_whatever_its_spelling(section: str, key: str) -> None:
    """A misspelt key is named even when it looks like pydantic's own loc decorations."""
    data = example()
    table = data[section][0] if section == "fortigates" else data[section]
    table[key] = 1
    message = error_of(data)
    expected = f"{section}[0].{key}" if section == "fortigates" else f"{section}.{key}"
    assert f"{expected}: unknown key" in message


def test_base_dir_is_not_a_key() -> None:
    data = example()
    data["base_dir"] = "/etc"
    with pytest.raises(ConfigError, match="base_dir: unknown key"):
        parse(data)


@pytest.mark.parametrize(
    ("mutate", "key_path", "hint"),
    [
        (_set(("fortigates", 0, "timeout"), 10), "fortigates[0].timeout", "as a string"),
        (_set(("fortigates", 0, "timeout"), "forever"), "fortigates[0].timeout", "forever"),
        (_set(("fortigates", 0, "timeout"), "10"), "fortigates[0].timeout", "duration"),
        (_set(("fortigates", 0, "vdoms"), "root"), "fortigates[0].vdoms", "list"),
        (_set(("fortigates", 0, "vdoms"), []), "fortigates[0].vdoms", ""),
        (_set(("fortigates", 0, "vdoms"), ["*", "root"]), "fortigates[0].vdoms", "alone"),
        (_set(("fortigates", 0, "vdoms"), ["root", "root"]), "fortigates[0].vdoms", "twice"),
        (_set(("fortigates", 0, "vdoms"), ["ro ot"]), "fortigates[0].vdoms", "VDOM name"),
        (_set(("fortigates", 0, "url"), "ftp://x"), "fortigates[0].url", "https://"),
        (_set(("fortigates", 0, "url"), "192.0.2.10"), "fortigates[0].url", "https://"),
        (
            _set(("fortigates", 0, "url"), "https://192.0.2.10:8443/api/v2"),
            "fortigates[0].url",
            "only scheme, host and port",
        ),
        (
            _set(("fortigates", 0, "url"), "https://192.0.2.10/?a=1"),
            "fortigates[0].url",
            "only scheme, host and port",
        ),
        (
            _set(("fortigates", 0, "url"), "https://admin:hunter2pw@192.0.2.10"),
            "fortigates[0].url",
            "no credentials",
        ),
        (
            _set(("fortigates", 0, "url"), "https://192.0.2.10:99999"),
            "fortigates[0].url",
            "port",
        ),
        (_set(("fortigates", 0, "name"), "bad name"), "fortigates[0].name", ""),
        (_set(("fortigates", 0, "name"), ""), "fortigates[0].name", ""),
        (_delete(("fortigates", 0, "name")), "fortigates[0].name", "required key is missing"),
        (_delete(("fortigates", 0, "url")), "fortigates[0].url", "required key is missing"),
        (_set(("fortigates", 0, "verify_tls"), "maybe"), "fortigates[0].verify_tls", ""),
        (_set(("fortigates", 0, "max_response"), "lots"), "fortigates[0].max_response", "size"),
        (_set(("fortigates", 0, "max_response"), 0), "fortigates[0].max_response", "size"),
        (_set(("fortigates", 0, "max_response"), "²MiB"), "fortigates[0].max_response", "size"),
        (_set(("fortigates", 0, "max_response"), "9" * 5000), "fortigates[0].max_response", "size"),
        (_set(("fortigates", 0, "timeout"), "²s"), "fortigates[0].timeout", "duration"),
        (_set(("fortigates", 0, "timeout"), "1" * 5000 + "s"), "fortigates[0].timeout", "long"),
        (_set(("retention", "base_ttl"), "3x"), "retention.base_ttl", "'3x'"),
        (_set(("retention", "base_ttl"), "0s"), "retention.base_ttl", "longer than zero"),
        (_set(("retention", "max_ttl"), 30), "retention.max_ttl", "as a string"),
        (_set(("retention", "factor"), 0.5), "retention.factor", ""),
        (_set(("retention", "factor"), 1000.0), "retention.factor", ""),
        (
            _set(("allowlist", "networks"), ["198.51.100.1/24"]),
            "allowlist.networks[0]",
            "did you mean 198.51.100.0/24",
        ),
        (
            _set(("allowlist", "networks"), ["10.0.0.0/8", "2001:db8:1::1/48"]),
            "allowlist.networks[1]",
            "did you mean 2001:db8:1::/48",
        ),
        (_set(("allowlist", "networks"), ["example.com"]), "allowlist.networks[0]", ""),
        (_set(("allowlist", "networks"), "10.0.0.0/8"), "allowlist.networks", ""),
        (_set(("store", "url"), "mysql://db/banfeed"), "store.url", "postgresql://"),
        (_set(("feeds", 0, "family"), "ipv5"), "feeds[0].family", ""),
        (_set(("feeds", 0, "min_offenses"), 0), "feeds[0].min_offenses", ""),
        (_set(("feeds", 0, "name"), "has/slash"), "feeds[0].name", ""),
        (_set(("collect",), {"concurrency": 0}), "collect.concurrency", ""),
    ],
)
def test_bad_value_names_its_key(
    mutate: Callable[[dict[str, Any]], None], key_path: str, hint: str
) -> None:
    data = example()
    mutate(data)
    message = error_of(data)
    assert f"{key_path}: " in message
    assert hint in message
    assert "hunter2pw" not in message


def test_duplicate_device_names() -> None:
    data = example()
    data["fortigates"].append(copy.deepcopy(data["fortigates"][0]))
    message = error_of(data)
    assert "fortigates: names must be unique" in message
    assert "edge-1" in message


def test_duplicate_feed_names() -> None:
    data = example()
    data["feeds"].append({"name": "quarantine"})
    message = error_of(data)
    assert "feeds: names must be unique" in message
    assert "quarantine" in message


def test_two_token_sources() -> None:
    data = example()
    data["fortigates"][0]["token_file"] = "edge-1.token"
    message = error_of(data)
    assert "fortigates[0]: set exactly one of token_env" in message
    assert "found token_env, token_file" in message


def test_no_token_source() -> None:
    data = example()
    del data["fortigates"][0]["token_env"]
    message = error_of(data)
    assert "fortigates[0]: set exactly one of token_env" in message
    assert "found" not in message


def test_second_device_errors_name_index_one() -> None:
    data = example()
    second = copy.deepcopy(data["fortigates"][0])
    second["name"] = "edge-2"
    second["timeout"] = 5
    data["fortigates"].append(second)
    message = error_of(data)
    assert "fortigates[1].timeout: " in message
    assert "fortigates[0]" not in message


def test_all_errors_reported_at_once() -> None:
    data = example()
    data["retention"]["base_ttl"] = "3x"
    data["fortigates"][0]["timeout"] = 10
    message = error_of(data)
    assert "retention.base_ttl: " in message
    assert "fortigates[0].timeout: " in message


def test_config_error_is_a_banfeed_error() -> None:
    with pytest.raises(BanfeedError):
        parse({"bogus": 1})


# --------------------------------------------------------------------------- load


def test_load_missing_file_says_run_init(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        config.load(path)
    message = str(info.value)
    assert str(path) in message
    assert "banfeed init" in message


@pytest.mark.parametrize(
    "content",
    [b"[store\nurl = 1\n", b"a = = 1\n", b"key = 'unterminated\n", b"\xff\xfe\x00bad"],
)
def test_load_bad_toml(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        config.load(path)
    assert str(path) in str(info.value)


def test_load_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        config.load(tmp_path)


def test_load_error_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "banfeed.toml"
    path.write_text("[retention]\nbogus = 1\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        config.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert "retention.bogus: unknown key" in str(info.value)


def test_load_example_sets_base_dir(tmp_path: Path) -> None:
    sub = tmp_path / "etc"
    sub.mkdir()
    path = sub / "banfeed.toml"
    path.write_text(EXAMPLE_TOML, encoding="utf-8")
    cfg = config.load(path)
    assert cfg.base_dir == sub.resolve()
    assert cfg.store_url() == "sqlite:///" + str((sub / "banfeed.db").resolve())
    assert [fg.name for fg in cfg.fortigates] == ["edge-1"]


def test_template_loads() -> None:
    template = files("banfeed") / "data" / "banfeed.toml"
    with as_file(template) as path:
        cfg = config.load(Path(path))
        assert cfg.base_dir == Path(path).resolve().parent
    assert [f.name for f in cfg.feeds] == ["quarantine"]
    assert cfg.fortigates == []
    assert cfg.allowlist.networks == []
    assert cfg.retention.base_ttl == 30 * DAY
    assert cfg.retention.max_ttl == 365 * DAY
    assert cfg.store.url == "sqlite:///banfeed.db"


def test_template_copy_resolves_store_next_to_it(tmp_path: Path) -> None:
    text = (files("banfeed") / "data" / "banfeed.toml").read_text(encoding="utf-8")
    path = tmp_path / "banfeed.toml"
    path.write_text(text, encoding="utf-8")
    cfg = config.load(path)
    assert cfg.store_url() == "sqlite:///" + str((tmp_path / "banfeed.db").resolve())


def test_config_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("BANFEED_CONFIG", raising=False)
    assert config.config_path(None) == Path("banfeed.toml")
    assert config.config_path(tmp_path / "x.toml") == tmp_path / "x.toml"
    monkeypatch.setenv("BANFEED_CONFIG", str(tmp_path / "env.toml"))
    assert config.config_path(None) == tmp_path / "env.toml"
    assert config.config_path("explicit.toml") == Path("explicit.toml")


# --------------------------------------------------------------------------- store_url


@pytest.mark.parametrize(
    ("url", "relative"),
    [
        ("sqlite:///banfeed.db", "banfeed.db"),
        ("sqlite:///data/banfeed.db", "data/banfeed.db"),
        ("sqlite:///../state/banfeed.db", "../state/banfeed.db"),
    ],
)
def test_store_url_relative_sqlite_is_made_absolute(
    tmp_path: Path, url: str, relative: str
) -> None:
    cfg = parse({"store": {"url": url}}, base_dir=tmp_path)
    result = cfg.store_url()
    assert result == "sqlite:///" + str((tmp_path / relative).resolve())
    assert Path(result.removeprefix("sqlite:///")).is_absolute()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:////abs/x.db",
        "sqlite:///:memory:",
        "sqlite://",
        "postgresql://banfeed@db.example/banfeed",
        "postgresql+psycopg://banfeed@db.example:5432/banfeed",
    ],
)
def test_store_url_left_alone(tmp_path: Path, url: str) -> None:
    assert parse({"store": {"url": url}}, base_dir=tmp_path).store_url() == url


# --------------------------------------------------------------------------- tokens


def test_token_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BANFEED_TEST_TOKEN", f"  {SECRET}\n")
    fg = device(token_env="BANFEED_TEST_TOKEN")
    assert fg.resolve_token(tmp_path).get_secret_value() == SECRET


@pytest.mark.parametrize("value", [None, "", "   \n"])
def test_token_env_missing_says_export(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str | None
) -> None:
    if value is None:
        monkeypatch.delenv("BANFEED_TEST_MISSING_TOKEN", raising=False)
    else:
        monkeypatch.setenv("BANFEED_TEST_MISSING_TOKEN", value)
    fg = device(token_env="BANFEED_TEST_MISSING_TOKEN")
    with pytest.raises(ConfigError) as info:
        fg.resolve_token(tmp_path)
    message = str(info.value)
    assert "BANFEED_TEST_MISSING_TOKEN" in message
    assert "export" in message
    assert "edge-1" in message


def test_token_file_relative_to_base_dir(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "edge-1.token").write_text(f"{SECRET}\n", encoding="utf-8")
    fg = device(token_file="secrets/edge-1.token")
    assert fg.resolve_token(tmp_path).get_secret_value() == SECRET


def test_token_file_absolute(tmp_path: Path) -> None:
    token_file = tmp_path / "edge-1.token"
    token_file.write_text(SECRET, encoding="utf-8")
    fg = device(token_file=str(token_file))
    assert fg.resolve_token(Path("/nonexistent-base")).get_secret_value() == SECRET


def test_token_file_via_load_is_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "edge-1.token").write_text(SECRET + "\n", encoding="utf-8")
    path = tmp_path / "banfeed.toml"
    path.write_text(
        '[[fortigates]]\nname = "edge-1"\nurl = "https://192.0.2.10"\n'
        'token_file = "edge-1.token"\n',
        encoding="utf-8",
    )
    cfg = config.load(path)
    assert cfg.fortigates[0].resolve_token(cfg.base_dir).get_secret_value() == SECRET


def test_token_file_missing(tmp_path: Path) -> None:
    fg = device(token_file="missing.token")
    with pytest.raises(ConfigError) as info:
        fg.resolve_token(tmp_path)
    message = str(info.value)
    assert "token_file" in message
    assert str(tmp_path / "missing.token") in message


def test_token_literal(tmp_path: Path) -> None:
    fg = device(token=SECRET)
    assert fg.resolve_token(tmp_path).get_secret_value() == SECRET


@pytest.mark.parametrize(
    "bad", [f"{SECRET} {SECRET}", f"{SECRET}\x07", f"{SECRET}\n{SECRET}", "   ", ""]
)
def test_bad_token_rejected_without_echoing_it(tmp_path: Path, bad: str) -> None:
    (tmp_path / "t").write_text(bad, encoding="utf-8")
    for fg in (device(token=bad), device(token_file="t")):
        with pytest.raises(ConfigError, match="empty or has spaces or control") as info:
            fg.resolve_token(tmp_path)
        assert SECRET not in str(info.value)


# --------------------------------------------------------------------------- secrets


def test_token_never_appears_in_config_text() -> None:
    data = example()
    del data["fortigates"][0]["token_env"]
    data["fortigates"][0]["token"] = SECRET
    cfg = parse(data)
    assert cfg.fortigates[0].token is not None
    assert cfg.fortigates[0].token.get_secret_value() == SECRET
    for text in (
        repr(cfg),
        str(cfg),
        cfg.model_dump_json(),
        str(cfg.model_dump()),
        repr(cfg.fortigates[0]),
        str(cfg.fortigates[0]),
        cfg.fortigates[0].model_dump_json(),
        repr(cfg.fortigates[0].resolve_token(Path("."))),
        str(cfg.fortigates[0].resolve_token(Path("."))),
    ):
        assert SECRET not in text


@pytest.mark.parametrize(
    "mutate",
    [
        _set(("fortigates", 0, "token_env"), "BANFEED_EDGE1_TOKEN"),  # two sources
        _set(("fortigates", 0, "token_file"), "x.token"),  # two sources
        _set(("fortigates", 0, "timeout"), 10),
        _set(("fortigates", 0, "bogus"), SECRET),
        _set(("fortigates", 0, "url"), "ftp://x"),
        _set(("fortigates", 0, "token"), [SECRET]),
        _set(("fortigates", 0, "token"), {"value": SECRET}),
        _set(("retention", "base_ttl"), "3x"),
    ],
)
def test_token_never_appears_in_config_errors(mutate: Callable[[dict[str, Any]], None]) -> None:
    data = example()
    del data["fortigates"][0]["token_env"]
    data["fortigates"][0]["token"] = SECRET
    mutate(data)
    message = error_of(data)
    assert SECRET not in message
    assert "TOPSECRET" not in message


def test_token_never_appears_in_duplicate_device_error() -> None:
    data = example()
    del data["fortigates"][0]["token_env"]
    data["fortigates"][0]["token"] = SECRET
    data["fortigates"].append(copy.deepcopy(data["fortigates"][0]))
    assert SECRET not in error_of(data)
