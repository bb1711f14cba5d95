"""``[alerts]`` and ``[[alerts.targets]]``: when banfeed notifies someone, and whom.

The vocabulary of alerts (their kinds and severities) lives here, at the bottom, so the config
can validate ``kinds = [...]`` and ``min_severity``; the alerts package builds on it.
"""

from __future__ import annotations

import os
import re
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, StrictBool, field_validator, model_validator

from ..errors import ConfigError
from .fields import FiniteDuration, _Section, beside, read_secret


class AlertKind(StrEnum):
    """What an alert is about (the ``kind`` of the webhook body and of the metrics)."""

    FEED_HELD = "feed_held"  # a guard holds a feed: the last good version is served
    FEED_PINNED = "feed_pinned"  # an operator pinned (rolled back) a feed
    DEVICE_FAILING = "device_failing"  # a device failed [alerts] device_failures cycles in a row
    DEVICE_BACKOFF = "device_backoff"  # a device is backed off after a 401 or 429
    CONSUMER_SILENT = "consumer_silent"  # a consumer stopped fetching a feed
    FEED_DIVERGED = "feed_diverged"  # a FortiGate loaded something else than what is served
    BAN_STORM = "ban_storm"  # more than [alerts] storm_new_offenders new offenders in a cycle
    TEST = "test"  # `banfeed alerts test`


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Severity).index(self)


_URL_SPLIT = re.compile(r"[\s,]+")


class AlertTargetConfig(_Section):
    type: Literal["webhook", "apprise"] = Field(
        description='"webhook" (signed JSON POST) or "apprise" (chat and mail, through apprise).'
    )
    name: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        description="Label in logs and metrics (default: TYPE[N]).",
    )
    url: str | None = Field(None, description="Webhook: the http(s) URL the JSON is POSTed to.")
    secret_env: str | None = Field(
        None, min_length=1, description="Webhook: environment variable with the HMAC secret."
    )
    secret_file: Path | None = Field(None, description="Webhook: file holding the HMAC secret.")
    urls_env: str | None = Field(
        None, min_length=1, description="Apprise: environment variable with the apprise URLs."
    )
    urls_file: Path | None = Field(
        None, description="Apprise: file with the apprise URLs (one a line)."
    )
    kinds: list[AlertKind] = Field([], description="Only these kinds (default: every kind).")
    min_severity: Severity = Field(Severity.INFO, description="Only alerts this severe or more.")
    timeout: FiniteDuration = Field(10, description="Time allowed for one delivery.")
    retries: int = Field(5, ge=0, le=20, description="Deliveries tried again after a failure.")
    max_per_hour: int = Field(
        60, ge=1, description="Most alerts sent to this target an hour; more are counted, dropped."
    )

    @field_validator("url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError('write the webhook URL like "https://hooks.example/banfeed"')
        if parts.username or parts.password:
            raise ValueError("put no credentials in the URL; use secret_env or secret_file")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError("the port must be a number from 1 to 65535") from None
        return value

    @model_validator(mode="after")
    def _complete(self) -> AlertTargetConfig:
        webhook = [k for k in ("url", "secret_env", "secret_file") if getattr(self, k) is not None]
        apprise = [k for k in ("urls_env", "urls_file") if getattr(self, k) is not None]
        if self.type == "webhook":
            if self.url is None:
                raise ValueError('a webhook needs url = "https://…"')
            if self.secret_env is not None and self.secret_file is not None:
                raise ValueError("set one of secret_env, secret_file")
            if len(webhook) == 1:
                raise ValueError("a webhook is signed: set secret_env (or secret_file)")
            if apprise:
                raise ValueError(f"{', '.join(apprise)}: for apprise targets only")
        else:
            if len(apprise) != 1:
                raise ValueError("an apprise target needs exactly one of urls_env, urls_file")
            if webhook:
                raise ValueError(f"{', '.join(webhook)}: for webhook targets only")
        return self

    def label(self, index: int) -> str:
        return self.name or f"{self.type}[{index}]"

    def resolve_secret(self, where: str, base_dir: Path) -> SecretStr:
        """The webhook's HMAC secret; a ConfigError names the fix."""
        return read_secret(
            f"{where}.secret",
            None,
            self.secret_env,
            self.secret_file,
            base_dir,
            what="HMAC secret shared with the receiver",
        )

    def resolve_urls(self, where: str, base_dir: Path) -> list[SecretStr]:
        """The apprise URLs (they hold credentials: kept secret); a ConfigError names the fix."""
        if self.urls_env is not None:
            text = os.environ.get(self.urls_env, "")
            if not text.strip():
                raise ConfigError(
                    f"{where}.urls_env: ${self.urls_env} is not set — export "
                    f"{self.urls_env}=<apprise URLs> or use urls_file"
                )
        else:
            assert self.urls_file is not None  # _complete
            path = beside(self.urls_file, base_dir)
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigError(
                    f"{where}.urls_file: cannot read {path}: {exc.strerror} — create it with one "
                    "apprise URL a line, readable by banfeed only"
                ) from None
        lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
        urls = [u for u in _URL_SPLIT.split("\n".join(lines)) if u]
        if not urls:
            raise ConfigError(f"{where}: no apprise URL given")
        return [SecretStr(u) for u in urls]


class AlertsConfig(_Section):
    device_failures: int = Field(
        3, ge=1, description="A device failing this many cycles in a row is alerted."
    )
    storm_new_offenders: int = Field(
        1000, ge=1, description="More new offenders than this in one cycle is a ban storm."
    )
    consumer_silence: float = Field(
        3, gt=1, description="A consumer not fetching for this many × its usual interval."
    )
    repeat: FiniteDuration = Field(
        6 * 3600, description="An alert still firing is sent again after this long."
    )
    queue: int = Field(
        1000, ge=1, le=100_000, description="Deliveries waiting at most; the oldest are dropped."
    )
    verify: StrictBool = Field(
        True, description="Ask the FortiGates what they loaded (feed_diverged alerts)."
    )
    verify_every: FiniteDuration = Field(
        900, description="How often the FortiGates are asked what they loaded."
    )
    verify_grace: FiniteDuration = Field(
        600, description="How long a FortiGate may hold the previous version."
    )
    targets: list[AlertTargetConfig] = []
