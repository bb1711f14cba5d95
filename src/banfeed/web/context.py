"""What the dashboard runs on: the running daemon's config, store and clock (read on every
request, so a SIGHUP reload is seen at once), and the secrets and counters of the web part."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass, field
from typing import Protocol

from ..compose import Runtime
from ..config import Config
from ..store import Store
from ..timeutil import Clock

SECRET_META_KEY = "dashboard_session_secret"  # the generated signing secret, in the store


class Host(Protocol):
    """The running daemon (``banfeed.daemon.Daemon``) as the dashboard sees it."""

    @property
    def config(self) -> Config: ...

    @property
    def store(self) -> Store: ...

    @property
    def clock(self) -> Clock: ...


@dataclass
class Site:
    """A :class:`Host` of its own (tests, embedding): config, store and clock."""

    config: Config
    store: Store
    clock: Clock


def signing_secret(host: Host) -> str:
    """``[dashboard] session_secret_env/_file``, else the secret generated once and kept in the
    store's meta table (so every replica on one store accepts the same cookies, and a restart
    signs no one out)."""
    dashboard = host.config.dashboard
    configured = dashboard.resolve_secret(host.config.base_dir)
    if configured is not None:
        return configured.get_secret_value()
    with host.store.read() as tx:
        kept = tx.get_meta(SECRET_META_KEY)
    if kept:
        return kept
    with host.store.write() as tx:
        kept = tx.get_meta(SECRET_META_KEY)  # another replica may have written it meanwhile
        if not kept:
            kept = secrets.token_urlsafe(48)
            tx.set_meta(SECRET_META_KEY, kept)
    return kept


@dataclass
class LoginThrottle:
    """Failed logins per client address: after ``limit`` failures within ``window`` seconds,
    that address is refused until the window has passed (argon2 makes each guess slow too)."""

    limit: int = 5
    window: int = 900
    failures: dict[str, list[int]] = field(default_factory=dict)

    def blocked(self, address: str, now: int) -> bool:
        recent = [t for t in self.failures.get(address, []) if t > now - self.window]
        if recent:
            self.failures[address] = recent
        else:
            self.failures.pop(address, None)
        return len(recent) >= self.limit

    def failed(self, address: str, now: int) -> None:
        self.failures.setdefault(address, []).append(now)
        if len(self.failures) > 10_000:  # bounded memory under a spray of addresses
            self.failures.pop(next(iter(self.failures)))

    def succeeded(self, address: str) -> None:
        self.failures.pop(address, None)


@dataclass
class Web:
    """The dashboard's state: its host, the cookie secret, the login throttle."""

    host: Host
    secret: str
    throttle: LoginThrottle = field(default_factory=LoginThrottle)

    def runtime(self) -> Runtime:
        """What reports and control functions take, from the host's current config."""
        return Runtime(self.host.config, self.host.store, self.host.clock)

    def now(self) -> int:
        return int(self.host.clock())


STORE_FAILED = "the store could not be used; the server log says why"
_log = logging.getLogger("banfeed.dashboard")


def store_failed(exc: Exception) -> str:
    """Log a store failure in full and say it to the client without its text (a store's
    message names its URL and its file path)."""
    _log.error("dashboard request failed: %s", exc)
    return STORE_FAILED
