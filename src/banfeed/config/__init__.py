"""The TOML configuration, parsed once into pydantic models.

Errors name the key path and the fix (``fortigates[1].timeout: …``). Secrets are ``SecretStr``
and are resolved (from the environment or a file) only when a device is actually used, so
commands that never talk to a FortiGate do not need the tokens.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from pathlib import Path
from typing import Any, get_args
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import BaseModel, Field, ValidationError, model_validator

from ..errors import ConfigError
from .abuseipdb import AbuseIPDBConfig
from .alerts import AlertsConfig
from .blocklists import Blocklists
from .fields import (
    CONFIG_ENV,
    DEFAULT_CONFIG,
    NAME_PATTERN,
    Duration,
    FiniteDuration,
    Network,
    Size,
    _Section,
    beside,
    read_secret,
    split_listen,
)
from .fortimanager import FortiManagers
from .limits import shard_clashes
from .sections import (
    AllowlistConfig,
    CollectConfig,
    DashboardConfig,
    EscalationConfig,
    FeedAuthConfig,
    FeedConfig,
    FortiGateConfig,
    HistoryConfig,
    LogConfig,
    PushConfig,
    RetentionConfig,
    SafetyConfig,
    ServerConfig,
    StoreConfig,
)

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "NAME_PATTERN",
    "AllowlistConfig",
    "CollectConfig",
    "Config",
    "DashboardConfig",
    "Duration",
    "EscalationConfig",
    "FeedAuthConfig",
    "FeedConfig",
    "FiniteDuration",
    "FortiGateConfig",
    "HistoryConfig",
    "LogConfig",
    "Network",
    "PushConfig",
    "RetentionConfig",
    "SafetyConfig",
    "ServerConfig",
    "Size",
    "StoreConfig",
    "config_path",
    "load",
    "parse",
    "beside",
    "read_secret",
    "split_listen",
]


class Config(_Section):
    store: StoreConfig = StoreConfig()
    fortigates: list[FortiGateConfig] = []
    fortimanagers: FortiManagers = []  # after fortigates: its names are checked against them
    blocklists: Blocklists = []  # after both: names unique across the three
    retention: RetentionConfig = RetentionConfig()
    allowlist: AllowlistConfig = AllowlistConfig()
    feeds: list[FeedConfig] = []
    collect: CollectConfig = CollectConfig()
    server: ServerConfig = ServerConfig()
    safety: SafetyConfig = SafetyConfig()
    escalation: EscalationConfig = EscalationConfig()
    push: PushConfig = PushConfig()
    history: HistoryConfig = HistoryConfig()
    log: LogConfig = LogConfig()
    dashboard: DashboardConfig = DashboardConfig()
    alerts: AlertsConfig = AlertsConfig()
    abuseipdb: AbuseIPDBConfig = AbuseIPDBConfig()
    # Where relative paths in the file are resolved; set by load(), not a TOML key.
    base_dir: Path = Field(Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_and_defaults(self) -> Config:
        for section, items in (("fortigates", self.fortigates), ("feeds", self.feeds)):
            names = [item.name for item in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{section}: names must be unique; repeated: {', '.join(dupes)}")
        clash = shard_clashes(self.feeds)
        if clash is not None:
            raise ValueError(clash)
        if not self.feeds:
            object.__setattr__(self, "feeds", [FeedConfig(name="quarantine")])
        feed_names = {feed.name for feed in self.feeds}
        if self.push.feed is not None and self.push.feed not in feed_names:
            raise ValueError(f"push.feed: no feed named {self.push.feed!r}")
        if self.push.feed is None and any(fg.push_feed for fg in self.fortigates):
            raise ValueError("fortigates: push_feed is set; set push.feed to the feed to sync")
        return self

    def store_url(self) -> str:
        """The store URL with a relative SQLite path made relative to the config file, and the
        PostgreSQL password from ``password_env``/``password_file`` (never shown: stores print
        their URL with the password hidden)."""
        url = self.store.url
        if self.store.password_env or self.store.password_file:
            secret = read_secret(
                "store.password",
                None,
                self.store.password_env,
                self.store.password_file,
                self.base_dir,
                what="PostgreSQL password",
            )
            return _with_password(url, secret.get_secret_value())
        prefix = "sqlite:///"
        if url.startswith(prefix) and not url.startswith(prefix + "/"):
            path = url[len(prefix) :]
            if path and path != ":memory:" and not Path(path).is_absolute():
                return prefix + str((self.base_dir / path).resolve())
        return url

    def feed(self, name: str) -> FeedConfig:
        for feed in self.feeds:
            if feed.name == name:
                return feed
        known = ", ".join(f.name for f in self.feeds)
        raise ConfigError(f"no feed named {name!r}; configured feeds: {known}")


def _with_password(url: str, password: str) -> str:
    """``url`` with its password set (user names and hosts kept as written)."""
    parts = urlsplit(url)
    user, _, host = parts.netloc.rpartition("@")
    user = user.partition(":")[0]
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def config_path(explicit: str | os.PathLike[str] | None) -> Path:
    """``--config``, else ``$BANFEED_CONFIG``, else ``./banfeed.toml``."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def load(path: Path) -> Config:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such config file — run `banfeed init` to write one, "
            f"or pass --config PATH (or set ${CONFIG_ENV})"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except ValueError as exc:  # an integer over Python's 4,300-digit limit
        raise ConfigError(f"{path}: not valid TOML: {str(exc)[:100]}") from None
    except RecursionError:  # tomllib recurses into each nested array or inline table
        raise ConfigError(f"{path}: not valid TOML: arrays or tables nested too deeply") from None
    return parse(data, base_dir=path.resolve().parent, origin=str(path))


def parse(data: dict[str, Any], *, base_dir: Path, origin: str = "config") -> Config:
    if "base_dir" in data:
        raise ConfigError(f"{origin}: base_dir: unknown key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        lines = [_describe(err, data) for err in exc.errors()]
        raise ConfigError(f"{origin}: invalid configuration:\n  " + "\n  ".join(lines)) from None


_VALIDATOR_TAGS = ("function-before[", "function-after[", "function-plain[", "function-wrap[")


def _describe(err: Any, data: dict[str, Any]) -> str:
    loc = err["loc"]
    # pydantic adds a validator's tag ("function-after[…]") to loc: drop those, keep every key.
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(_VALIDATOR_TAGS))]
    path = ""
    for part in parts:
        if isinstance(part, str) and not part.isprintable():  # no escapes reach a terminal
            part = repr(part)[1:-1]
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = _unknown_key(parts, data)
    elif err["type"] == "missing":
        message = "required key is missing"
    return f"{path or '(top level)'}: {message}"


_ITEM_NOUNS = {"fortigates": "device", "feeds": "feed"}


def _unknown_key(parts: list[Any], data: dict[str, Any]) -> str:
    """``unknown key (device "edge-1") — did you mean token_env? …``: the name of the table
    it is in, and the nearest key that section knows."""
    model: type[BaseModel] | None = Config
    node: Any = data
    named = ""
    for part in parts[:-1]:
        node = node[part] if isinstance(node, (dict, list)) else None
        if isinstance(part, int):
            if isinstance(node, dict) and isinstance(node.get("name"), str):
                noun = _ITEM_NOUNS.get(str(parts[0]), str(parts[0]))
                named = f' ({noun} "{node["name"]}")'
            continue
        field = model.model_fields.get(part) if model else None
        model = _section_model(field.annotation) if field else None
    known = [n for n in model.model_fields if n != "base_dir"] if model else []
    close = difflib.get_close_matches(str(parts[-1]), known, n=1, cutoff=0.6)
    hint = f" — did you mean {close[0]}?" if close else ""
    return f"unknown key{named}{hint} (docs/configuration.md lists every key)"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    """The model in ``Model``, ``list[Model]`` or ``Model | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_model(arg)
        if found is not None:
            return found
    return None
