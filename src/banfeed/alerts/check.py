"""`banfeed check` for alerts (every target complete and reachable, nothing sent) and
`banfeed alerts test` (one test alert to every target, each outcome reported)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from ..config import Config
from ..config.alerts import AlertKind, Severity
from ..errors import BanfeedError, ConfigError
from .model import Alert
from .targets import build_target, reach


def problems(config: Config) -> list[str]:
    """What `banfeed check` warns about each ``[[alerts.targets]]``: a secret or URL list that
    cannot be read, apprise not installed, a webhook whose host and port refuse a connection."""
    found = []
    for index, cfg in enumerate(config.alerts.targets):
        try:
            target = build_target(cfg, index, config.base_dir)
        except ConfigError as exc:
            found.append(str(exc))
            continue
        reason = reach(target)
        if reason is not None:
            found.append(reason)
    return found


@dataclass(frozen=True, slots=True)
class SendOutcome:
    target: str
    error: str | None  # None: the target accepted it

    @property
    def ok(self) -> bool:
        return self.error is None


def sample_alert(now: int) -> Alert:
    return Alert(
        AlertKind.TEST,
        "test",
        Severity.INFO,
        "a test alert from `banfeed alerts test`: this target receives banfeed's alerts",
        now,
        {"test": True},
    )


def send_test(config: Config, now: int) -> list[SendOutcome]:
    """Send one test alert to each target, once (no retry), and say how each went."""
    alert = sample_alert(now)

    async def one(index: int) -> SendOutcome:
        cfg = config.alerts.targets[index]
        try:
            target = build_target(cfg, index, config.base_dir)
            await target.send(alert)
        except BanfeedError as exc:
            return SendOutcome(cfg.label(index), str(exc))
        return SendOutcome(target.label, None)

    async def every() -> list[SendOutcome]:
        return list(await asyncio.gather(*(one(i) for i in range(len(config.alerts.targets)))))

    return asyncio.run(every())
