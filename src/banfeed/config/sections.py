"""The sections of banfeed.toml, one pydantic model each (Config in ``__init__`` holds them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    StrictBool,
    field_validator,
    model_validator,
)

from . import limits
from .causes import CauseTTLs, check_caps
from .fields import (
    NAME_PATTERN,
    Duration,
    FiniteDuration,
    Network,
    Size,
    _finite_duration,
    _is_name,
    _Section,
    read_secret,
    split_listen,
)
from .limits import DEFAULT_MAX_ENTRIES, MAX_ENTRIES_LIMIT, MAX_SHARDS, MaxEntries


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


def _every(value: object) -> int | None:
    """A period like "1h", or "off" (also false): None."""
    if value is False or (isinstance(value, str) and value.strip().lower() == "off"):
        return None
    if not isinstance(value, str) or value.strip().lower() == "forever":
        raise ValueError('write a period like "1h" or "1d", or "off"')
    return _finite_duration(value)


Every = Annotated[int | None, BeforeValidator(_every)]


class RetentionConfig(_Section):
    base_ttl: Duration = Field(30 * 86400, description="How long a first offense stays active.")
    factor: float = Field(2.0, ge=1.0, le=100.0, description="TTL multiplier per repeat.")
    max_ttl: Duration = Field(365 * 86400, description="The longest TTL.")
    causes: CauseTTLs = Field({}, description="Base TTL per cause (any case); else base_ttl.")
    decay_after: Every = Field(None, description="Quiet time undoing one escalation step.")
    keep_history: Duration = Field(
        400 * 86400, description="`prune` deletes offenses and events older than this."
    )
    prune_every: Every = Field(
        3600, description='How often `banfeed run` prunes, like `banfeed prune`; "off": never.'
    )

    @model_validator(mode="after")
    def _cap_not_below_base(self) -> RetentionConfig:
        check_caps(self.max_ttl, self.base_ttl, self.causes)
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
    limit: MaxEntries = Field(
        DEFAULT_MAX_ENTRIES,
        ge=1,
        le=MAX_ENTRIES_LIMIT,
        description='Most lines a consumer loads (a shard): a number or a preset ("fortios-7.2"…).',
    )
    shards: int = Field(
        1, ge=1, le=MAX_SHARDS, description="Split into this many feeds of `limit` (NAME-1 …)."
    )
    aggregate: StrictBool = Field(False, description="Merge addresses into CIDR blocks (lossless).")
    auth: FeedAuthConfig = FeedAuthConfig()
    allow_from: list[Network] = Field([], description="Only these consumer networks may fetch.")

    @model_validator(mode="before")
    @classmethod
    def _old_limit_name(cls, data: object) -> object:
        return limits.renamed_limit(data)

    @model_validator(mode="after")
    def _shard_names_fit(self) -> FeedConfig:
        limits.check_shard_names(self.name, self.shards)
        return self

    @property
    def max_entries(self) -> int:
        return self.limit  # by its old name

    @property
    def shard_names(self) -> list[str]:
        return limits.shard_names(self.name, self.shards)


class CollectConfig(_Section):
    concurrency: int = Field(16, ge=1, le=1024, description="Requests in flight at once.")
    interval: FiniteDuration = Field(300, description="Time between cycles of `banfeed run`.")
    jitter: float = Field(0.1, ge=0.0, le=0.5, description="Random share of interval (±).")
    shared: StrictBool | None = Field(
        None, description="Replicas share devices by leases (default: on for PostgreSQL)."
    )


class StatusConfig(_Section):
    auth: FeedAuthConfig = Field(
        FeedAuthConfig(), description="Credentials /metrics and / need (as a feed's auth)."
    )
    allow_from: list[Network] = Field(
        [], description="Only these networks may fetch /metrics and / (as a feed's)."
    )


class ServerConfig(_Section):
    listen: str = Field("127.0.0.1:8080", description="host:port the HTTP server binds.")
    cert_file: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    key_file: Path | None = Field(None, description="TLS private key (PEM).")
    public_url: str | None = Field(None, description="URL consumers use, for printed config.")
    trusted_proxies: list[Network] = Field(
        [], description="Reverse proxies whose X-Forwarded-For names the client (none trusted)."
    )
    max_connections: int | None = Field(
        None, ge=8, description="Connections served at once (default: from the descriptor limit)."
    )
    max_header_size: Size = Field(
        16 * 1024, description="Largest request line and headers accepted (431 above it)."
    )
    header_timeout: FiniteDuration = Field(
        10, description="Time a client has to send a whole request head (408, or closed)."
    )
    send_timeout: FiniteDuration = Field(
        60, description="Time a client may read nothing of a response before it is dropped."
    )
    status: StatusConfig = Field(
        StatusConfig(), description="Who may fetch /metrics and the status page / (open)."
    )
    stix_identity: str = Field("banfeed", min_length=1, description="Name of the STIX identity.")

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

    @field_validator("max_header_size")
    @classmethod
    def _header_size(cls, value: int) -> int:
        if not 1024 <= value <= 1024**2:
            raise ValueError('give a size from "1KiB" to "1MiB"')
        return value

    @field_validator("header_timeout", "send_timeout")
    @classmethod
    def _timeouts(cls, value: int) -> int:
        if value < 1:
            raise ValueError('at least "1s"')
        return value


class HistoryConfig(_Section):
    versions: int = Field(500, ge=1, description="Published versions kept per feed.")
    bodies: int = Field(
        48, ge=1, description="Newest versions whose bytes are kept (diff, rollback)."
    )


def _access_log(value: object) -> bool | Path:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip() not in ("", "."):
        return Path(value.strip())
    raise ValueError('write true, false or a file path like "/var/log/banfeed/access.log"')


class LogConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = Field(
        "info", description="Least severe messages `run` and `serve` log (-v, -vv go lower)."
    )
    format: Literal["text", "json"] = Field(
        "text", description='"text" lines, or "json": one object a line for log shippers.'
    )
    access_log: Annotated[bool | Path, BeforeValidator(_access_log)] = Field(
        False, description="Log every HTTP request: true (with the other logs) or a file path."
    )


class DashboardConfig(_Section):
    enabled: StrictBool = Field(
        False, description="Serve the dashboard (/dashboard/) and the JSON API (/api/v1/)."
    )
    session_secret_env: str | None = Field(
        None, min_length=1, description="Environment variable with the cookie signing secret."
    )
    session_secret_file: Path | None = Field(
        None, description="File with the cookie signing secret (default: one kept in the store)."
    )
    session_ttl: FiniteDuration = Field(
        8 * 3600, description="How long a login lasts before signing in again."
    )
    proxy_header: str | None = Field(
        None,
        min_length=1,
        description="Trust this header's user name (a reverse proxy's login); off by default.",
    )
    proxy_from: list[Network] = Field(
        [], description="Addresses of the reverse proxy whose proxy_header is trusted."
    )

    @model_validator(mode="after")
    def _secret_and_proxy(self) -> DashboardConfig:
        if self.session_secret_env and self.session_secret_file:
            raise ValueError("set session_secret_env or session_secret_file, not both")
        if self.session_ttl < 60:
            raise ValueError("session_ttl: at least 60s")
        if self.proxy_header and not self.proxy_from:
            raise ValueError(
                "proxy_header is trusted only from the proxy: set proxy_from to its address"
            )
        if self.proxy_from and not self.proxy_header:
            raise ValueError("proxy_from is set without proxy_header; set both or neither")
        if self.proxy_header and not all(c.isalnum() or c == "-" for c in self.proxy_header):
            raise ValueError('proxy_header: a header name like "X-Remote-User"')
        return self

    def resolve_secret(self, base_dir: Path) -> SecretStr | None:
        """The configured signing secret, or None (the store keeps a generated one)."""
        if not (self.session_secret_env or self.session_secret_file):
            return None
        return read_secret(
            "dashboard.session_secret",
            None,
            self.session_secret_env,
            self.session_secret_file,
            base_dir,
            what="a long random secret",
        )
