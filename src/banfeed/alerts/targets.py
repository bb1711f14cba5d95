"""Where alerts go: a signed JSON webhook, or apprise (chat and mail) when it is installed.

A target sends one alert or raises :class:`DeliveryError`; retries, back-off and the rate limit
are the dispatcher's. Secrets (the HMAC key, apprise URLs with their credentials) are resolved
once, when the target is built, and never appear in a repr, a log line or an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import socket
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from pydantic import SecretStr

from .. import __version__
from ..config.alerts import AlertKind, AlertTargetConfig, Severity
from ..errors import BanfeedError, ConfigError
from .model import Alert

SIGNATURE_HEADER = "X-Banfeed-Signature"
INSTALL_APPRISE = "pip install 'banfeed[alerts]' (or pip install apprise)"


class DeliveryError(BanfeedError):
    """An alert could not be delivered to a target (it may be tried again)."""


def signature(secret: str, body: bytes) -> str:
    """The value of ``X-Banfeed-Signature``: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def body_of(alert: Alert) -> bytes:
    return json.dumps(alert.record(), separators=(",", ":"), sort_keys=True).encode()


class Target(Protocol):
    label: str
    kinds: frozenset[AlertKind]
    min_severity: Severity
    retries: int
    max_per_hour: int

    def wants(self, alert: Alert) -> bool: ...

    async def send(self, alert: Alert) -> None: ...


@dataclass(eq=False)
class _Filtered:
    label: str
    kinds: frozenset[AlertKind]
    min_severity: Severity
    timeout: float
    retries: int
    max_per_hour: int

    def wants(self, alert: Alert) -> bool:
        """Whether this target takes ``alert``: its kind listed (or no list), severe enough (a
        resolved notice goes wherever the alert it resolves went; a test goes everywhere)."""
        if alert.kind is AlertKind.TEST:
            return True
        if self.kinds and alert.kind not in self.kinds:
            return False
        return alert.resolved or alert.severity.rank >= self.min_severity.rank


@dataclass(eq=False)
class WebhookTarget(_Filtered):
    url: str = ""
    secret: SecretStr = field(default_factory=lambda: SecretStr(""), repr=False)

    async def send(self, alert: Alert) -> None:
        body = body_of(alert)
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"banfeed/{__version__}",
            SIGNATURE_HEADER: signature(self.secret.get_secret_value(), body),
            "X-Banfeed-Kind": alert.kind.value,
        }
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                response = await client.post(self.url, content=body, headers=headers)
        except httpx.TimeoutException:
            raise DeliveryError(f"{self.label}: no answer within {self.timeout:g}s") from None
        except httpx.HTTPError as exc:
            raise DeliveryError(f"{self.label}: {type(exc).__name__}: {exc}") from None
        if not 200 <= response.status_code < 300:
            raise DeliveryError(f"{self.label}: the receiver answered HTTP {response.status_code}")

    def address(self) -> tuple[str, int]:
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return parts.hostname or "", port


@dataclass(eq=False)
class AppriseTarget(_Filtered):
    urls: list[SecretStr] = field(default_factory=list, repr=False)

    def _notifier(self) -> Any:
        apprise = import_apprise(self.label)
        notifier = apprise.Apprise()
        with _quiet():  # its plugins are imported by the first add()
            for number, url in enumerate(self.urls, 1):
                if not notifier.add(url.get_secret_value()):
                    raise DeliveryError(
                        f"{self.label}: apprise URL {number} is not one apprise knows"
                    )
        return notifier

    async def send(self, alert: Alert) -> None:
        notifier = self._notifier()
        apprise = import_apprise(self.label)
        kind = "SUCCESS" if alert.resolved else _NOTIFY_TYPES[alert.severity]
        text = alert.text + "\n\n" + json.dumps(alert.facts, sort_keys=True, default=str)
        notify_type = getattr(apprise.NotifyType, kind)
        call = asyncio.to_thread(
            notifier.notify, body=text, title=alert.title, notify_type=notify_type
        )
        try:
            sent = await asyncio.wait_for(call, timeout=self.timeout)
        except TimeoutError:
            raise DeliveryError(f"{self.label}: not sent within {self.timeout:g}s") from None
        if not sent:
            raise DeliveryError(f"{self.label}: apprise could not notify every URL (see its log)")


_NOTIFY_TYPES = {Severity.INFO: "INFO", Severity.WARNING: "WARNING", Severity.CRITICAL: "FAILURE"}


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """apprise 2.2 imports ``imghdr``, deprecated since Python 3.11: not banfeed's warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        yield


def import_apprise(label: str) -> Any:
    """The apprise module, imported on first use: banfeed runs without it."""
    try:
        with _quiet():
            import apprise
    except ImportError:
        raise ConfigError(
            f'{label}: type = "apprise" needs the apprise library — {INSTALL_APPRISE}'
        ) from None
    return apprise


def build_target(cfg: AlertTargetConfig, index: int, base_dir: Path) -> Target:
    """Target ``index`` of ``[[alerts.targets]]`` with its secrets read; a ConfigError names
    what is missing (``alerts.targets[0].secret_env: $X is not set — …``)."""
    where = f"alerts.targets[{index}]"
    common: dict[str, Any] = {
        "label": cfg.label(index),
        "kinds": frozenset(cfg.kinds),
        "min_severity": cfg.min_severity,
        "timeout": float(cfg.timeout),
        "retries": cfg.retries,
        "max_per_hour": cfg.max_per_hour,
    }
    if cfg.type == "webhook":
        assert cfg.url is not None  # AlertTargetConfig._complete
        return WebhookTarget(**common, url=cfg.url, secret=cfg.resolve_secret(where, base_dir))
    return AppriseTarget(**common, urls=cfg.resolve_urls(where, base_dir))


def build_targets(
    configs: Sequence[AlertTargetConfig], base_dir: Path
) -> tuple[list[Target], list[str]]:
    """Every target that can be built, and why the others cannot: one target whose secret is
    missing fails alone, the others still send."""
    built: list[Target] = []
    problems: list[str] = []
    for index, cfg in enumerate(configs):
        try:
            target = build_target(cfg, index, base_dir)
            if isinstance(target, AppriseTarget):
                import_apprise(target.label)  # not installed: said now, not at the first alert
            built.append(target)
        except ConfigError as exc:
            problems.append(str(exc))
    return built, problems


def reach(target: Target, timeout: float = 3.0) -> str | None:
    """Why ``target`` cannot be reached (a webhook's host and port refuse a connection), or
    None. Nothing is sent; an apprise target is checked for URLs apprise knows."""
    if isinstance(target, AppriseTarget):
        try:
            target._notifier()
        except BanfeedError as exc:
            return str(exc)
        return None
    assert isinstance(target, WebhookTarget)
    host, port = target.address()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        return f"{target.label}: cannot connect to {host}:{port} ({reason})"
