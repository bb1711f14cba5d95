"""The TOML configuration, parsed once into pydantic models.

Errors name the key path and the fix (``fortigates[1].timeout: …``). Secrets are ``SecretStr``
and are resolved (from the environment or a file) only when a device is actually used, so
commands that never talk to a FortiGate do not need the tokens.
"""

from __future__ import annotations

import os
import tomllib
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    StrictBool,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, InputError
from .net import IPNetwork, parse_network
from .timeutil import parse_duration

DEFAULT_CONFIG = "banfeed.toml"
CONFIG_ENV = "BANFEED_CONFIG"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _duration(value: object) -> int | None:
    if not isinstance(value, str):
        raise ValueError('write a duration as a string, like "30m", "30d" or "forever"')
    try:
        return parse_duration(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _finite_duration(value: object) -> int:
    seconds = _duration(value)
    if seconds is None:
        raise ValueError("'forever' is not allowed here; give a duration like \"10s\"")
    return seconds


def _network(value: object) -> IPNetwork:
    try:
        return parse_network(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024}
_SIZE_UNITS |= {"mib": 1024**2, "gib": 1024**3}


def _size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        well_formed = digits.isascii() and digits.isdigit() and len(digits) <= 15
        if well_formed and unit in _SIZE_UNITS and int(digits) > 0:
            return int(digits) * _SIZE_UNITS[unit]
    raise ValueError('write a size like "64MiB", "500MB" or a number of bytes')


Duration = Annotated[int | None, BeforeValidator(_duration)]
FiniteDuration = Annotated[int, BeforeValidator(_finite_duration)]
Network = Annotated[IPNetwork, BeforeValidator(_network)]
Size = Annotated[int, BeforeValidator(_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class StoreConfig(_Section):
    url: str = Field("sqlite:///banfeed.db", description="SQLAlchemy URL of the store.")
    password_env: str | None = Field(
        None, min_length=1, description="Environment variable with the PostgreSQL password."
    )
    password_file: Path | None = Field(None, description="File with the PostgreSQL password.")

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, value: str) -> str:
        scheme = value.split(":", 1)[0]
        if scheme not in ("sqlite", "postgresql", "postgresql+psycopg"):
            raise ValueError('use "sqlite:///path/to/banfeed.db" or "postgresql://user@host/db"')
        return value


class FortiGateConfig(_Section):
    name: str = Field(pattern=NAME_PATTERN, description="Unique short name of the device.")
    url: str = Field(description="Base URL of the admin interface: https://host[:port].")
    token: SecretStr | None = Field(None, description="The API token itself (discouraged).")
    token_env: str | None = Field(
        None, min_length=1, description="Environment variable holding the token."
    )
    token_file: Path | None = Field(None, description="File holding the token.")
    vdoms: list[str] = Field(["root"], min_length=1, description='VDOMs to poll; ["*"] = all.')
    verify_tls: StrictBool = Field(True, description="Verify the device's certificate.")
    ca_file: Path | None = Field(None, description="CA bundle for a self-signed device.")
    timeout: FiniteDuration = Field(10, description="Time allowed for one request.")
    max_response: Size = Field(256 * 1024**2, description="Largest answer accepted.")
    push_quarantine: StrictBool | None = Field(
        None, description="Receive pushed quarantines (default: [push] quarantine)."
    )
    push_feed: str | None = Field(
        None, description="Name of a push-type threat feed on this device to keep in sync."
    )

    @field_validator("url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError('write the admin URL like "https://192.0.2.10:8443"')
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; use token_env or token_file")
        if parts.query or parts.fragment or parts.path not in ("", "/"):
            raise ValueError("give only scheme, host and port; banfeed adds the API path")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value.rstrip("/")

    @field_validator("vdoms")
    @classmethod
    def _vdom_names(cls, value: list[str]) -> list[str]:
        for vdom in value:
            if vdom != "*" and not _is_name(vdom):
                raise ValueError(f"{vdom!r} is not a VDOM name (letters, digits, _ . -)")
        if "*" in value and len(value) > 1:
            raise ValueError('"*" already means every VDOM; list it alone')
        if len(set(value)) != len(value):
            raise ValueError("a VDOM is listed twice")
        return value

    @model_validator(mode="after")
    def _one_token_source(self) -> FortiGateConfig:
        given = [k for k in ("token", "token_env", "token_file") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of token_env (recommended), token_file or token"
                + (f"; found {', '.join(given)}" if given else "")
            )
        return self

    def resolve_token(self, base_dir: Path) -> SecretStr:
        """The token, from wherever the config says; a ConfigError names the fix."""
        return read_secret(
            f"fortigates[{self.name}].token",
            self.token,
            self.token_env,
            self.token_file,
            base_dir,
            what="token of the REST API admin",
        )


def read_secret(
    where: str,
    literal: SecretStr | None,
    env: str | None,
    file: Path | None,
    base_dir: Path,
    *,
    what: str,
) -> SecretStr:
    """A secret from the config (``literal``), the environment or a file; never echoed."""
    if literal is not None:
        secret = literal.get_secret_value()
    elif env is not None:
        secret = os.environ.get(env, "")
        if not secret.strip():
            raise ConfigError(
                f"{where}_env: ${env} is not set — export {env}=<{what}> or use {where}_file"
            )
    elif file is not None:
        path = file if file.is_absolute() else base_dir / file
        try:
            secret = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{where}_file: cannot read {path}: {exc.strerror} — "
                "create it with the secret on one line, readable by banfeed only"
            ) from None
    else:
        raise ConfigError(f"{where}: not set — set {where}_env or {where}_file")
    secret = secret.strip()
    if not secret or any(c.isspace() for c in secret) or not secret.isprintable():
        raise ConfigError(f"{where}: the secret is empty or has spaces or control characters")
    return SecretStr(secret)


class RetentionConfig(_Section):
    base_ttl: Duration = Field(30 * 86400, description="How long a first offense stays active.")
    factor: float = Field(2.0, ge=1.0, le=100.0, description="TTL multiplier per repeat.")
    max_ttl: Duration = Field(365 * 86400, description="The longest TTL.")
    keep_history: Duration = Field(
        400 * 86400, description="`prune` deletes offenses and events older than this."
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetentionConfig:
        if self.base_ttl is not None and self.max_ttl is not None and self.max_ttl < self.base_ttl:
            raise ValueError("max_ttl is shorter than base_ttl; raise max_ttl or lower base_ttl")
        return self


class SafetyConfig(_Section):
    protect: list[Network] = Field([], description="Your own ranges: never published.")
    max_prefix_v4: int = Field(16, ge=8, le=32, description="Broadest IPv4 network published.")
    max_prefix_v6: int = Field(48, ge=16, le=128, description="Broadest IPv6 network published.")
    max_drop: float = Field(
        0.5, gt=0.0, le=1.0, description="Unexplained share a feed may lose in one step."
    )


class EscalationConfig(_Section):
    enabled: StrictBool = Field(False, description="Publish a whole prefix for busy prefixes.")
    min_offenders: int = Field(8, ge=2, description="Active offenders in one prefix to do it.")
    prefix_v4: int = Field(24, ge=16, le=31, description="IPv4 prefix length escalated to.")
    prefix_v6: int = Field(64, ge=32, le=127, description="IPv6 prefix length escalated to.")


class PushConfig(_Section):
    quarantine: StrictBool = Field(
        False, description="Quarantine new offenders on the other FortiGates too."
    )
    max_per_cycle: int = Field(500, ge=1, description="Addresses pushed per device per cycle.")
    max_expiry: FiniteDuration = Field(
        30 * 86400, description="Longest quarantine pushed (else: until active_until)."
    )
    feed: str | None = Field(None, description="Feed synced to devices' push_feed.")


class AllowlistConfig(_Section):
    networks: list[Network] = Field([], description="Networks never published.")


class FeedAuthConfig(_Section):
    type: Literal["none", "basic", "bearer"] = Field("none", description="How consumers log in.")
    username: str | None = Field(None, description="Basic auth user name.")
    password: SecretStr | None = Field(None, description="Basic auth password (discouraged).")
    password_env: str | None = Field(
        None, min_length=1, description="Environment variable with the password."
    )
    password_file: Path | None = Field(None, description="File holding the password.")
    token: SecretStr | None = Field(None, description="Bearer token (discouraged).")
    token_env: str | None = Field(
        None, min_length=1, description="Environment variable with the token."
    )
    token_file: Path | None = Field(None, description="File holding the bearer token.")

    @model_validator(mode="after")
    def _complete(self) -> FeedAuthConfig:
        passwords = [k for k in ("password", "password_env", "password_file") if getattr(self, k)]
        tokens = [k for k in ("token", "token_env", "token_file") if getattr(self, k)]
        if self.type == "basic":
            if not self.username or ":" in self.username or not self.username.isprintable():
                raise ValueError('basic auth needs a username without ":"')
            if len(passwords) != 1 or tokens:
                raise ValueError("basic auth needs exactly one of password_env, password_file")
        elif self.type == "bearer":
            if len(tokens) != 1 or passwords or self.username:
                raise ValueError("bearer auth needs exactly one of token_env, token_file")
        elif passwords or tokens or self.username:
            raise ValueError('credentials given but type = "none"; set type = "basic"')
        return self


class FeedConfig(_Section):
    name: str = Field(pattern=NAME_PATTERN, description="Feed name, as in /feeds/<name>.txt.")
    family: Literal["ipv4", "ipv6", "any"] = Field("any", description="Address family.")
    causes: list[str] = Field([], description="Only these causes (case-insensitive).")
    devices: list[str] = Field([], description="Only offenses from these devices.")
    vdoms: list[str] = Field([], description='Only these VDOMs ("dmz" or "edge-1/dmz").')
    min_offenses: int = Field(1, ge=1, description="Only offenders with this many offenses.")
    seen_within: Duration = Field(None, description="Only offenders seen this recently.")
    max_entries: int = Field(131072, ge=1, le=10_000_000, description="Most lines published.")
    aggregate: StrictBool = Field(False, description="Merge addresses into CIDR blocks (lossless).")
    auth: FeedAuthConfig = FeedAuthConfig()
    allow_from: list[Network] = Field([], description="Only these consumer networks may fetch.")


class CollectConfig(_Section):
    concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once.")
    interval: FiniteDuration = Field(300, description="Time between cycles of `banfeed run`.")
    jitter: float = Field(0.1, ge=0.0, le=0.5, description="Random share of interval (±).")
    shared: StrictBool | None = Field(
        None, description="Replicas share devices by leases (default: on for PostgreSQL)."
    )


class ServerConfig(_Section):
    listen: str = Field("127.0.0.1:8080", description="host:port the HTTP server binds.")
    cert_file: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    key_file: Path | None = Field(None, description="TLS private key (PEM).")
    public_url: str | None = Field(None, description="URL consumers use, for printed config.")

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

    @model_validator(mode="after")
    def _tls_pair(self) -> ServerConfig:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file, or neither")
        return self


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` → (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    usage = 'write listen as "address:port", like "127.0.0.1:8080" or "[::1]:8080"'
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ValueError(usage)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip_address(host)  # an address, not a name: nothing is resolved
    except ValueError:
        raise ValueError(f"{usage}; the host must be an IP address") from None
    if (":" in host) != value.startswith("["):
        raise ValueError(f"{usage}; brackets go around IPv6 addresses only")
    return host, int(port)


class HistoryConfig(_Section):
    versions: int = Field(500, ge=1, description="Published versions kept per feed.")
    bodies: int = Field(
        48, ge=1, description="Newest versions whose bytes are kept (diff, rollback)."
    )


class Config(_Section):
    store: StoreConfig = StoreConfig()
    fortigates: list[FortiGateConfig] = []
    retention: RetentionConfig = RetentionConfig()
    allowlist: AllowlistConfig = AllowlistConfig()
    feeds: list[FeedConfig] = []
    collect: CollectConfig = CollectConfig()
    server: ServerConfig = ServerConfig()
    safety: SafetyConfig = SafetyConfig()
    escalation: EscalationConfig = EscalationConfig()
    push: PushConfig = PushConfig()
    history: HistoryConfig = HistoryConfig()
    # Where relative paths in the file are resolved; set by load(), not a TOML key.
    base_dir: Path = Field(Path("."), exclude=True)

    @model_validator(mode="after")
    def _unique_and_defaults(self) -> Config:
        for section, items in (("fortigates", self.fortigates), ("feeds", self.feeds)):
            names = [item.name for item in items]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"{section}: names must be unique; repeated: {', '.join(dupes)}")
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


def _is_name(value: str) -> bool:
    return bool(value) and len(value) <= 64 and all(c.isalnum() or c in "_.-" for c in value)


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
    return parse(data, base_dir=path.resolve().parent, origin=str(path))


def parse(data: dict[str, Any], *, base_dir: Path, origin: str = "config") -> Config:
    if "base_dir" in data:
        raise ConfigError(f"{origin}: base_dir: unknown key")
    try:
        return Config.model_validate({**data, "base_dir": base_dir})
    except ValidationError as exc:
        lines = [_describe(err) for err in exc.errors()]
        raise ConfigError(f"{origin}: invalid configuration:\n  " + "\n  ".join(lines)) from None


_VALIDATOR_TAGS = ("function-before[", "function-after[", "function-plain[", "function-wrap[")


def _describe(err: Any) -> str:
    loc = err["loc"]
    # pydantic adds a validator's tag ("function-after[…]") to loc: drop those, keep every key.
    parts = [p for p in loc if not (isinstance(p, str) and p.startswith(_VALIDATOR_TAGS))]
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        message = "unknown key — check its spelling against docs/configuration.md"
    elif err["type"] == "missing":
        message = "required key is missing"
    return f"{path or '(top level)'}: {message}"
