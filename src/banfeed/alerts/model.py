"""An alert, the JSON it is sent as, and the tracker that de-duplicates them.

A condition that keeps holding (a feed held, a device down) is one *active* alert, keyed by
kind and subject. The tracker sends it when it starts, again every ``repeat`` while it holds,
and once more, marked resolved, when a later evaluation no longer finds it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .. import metrics
from ..config.alerts import AlertKind, Severity
from ..timeutil import iso

log = logging.getLogger("banfeed.alerts")

SCHEMA = 1  # the version of the webhook body (docs/alerts.md); bumped on an incompatible change
RECENT = 50  # alerts kept for the dashboard


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AlertKind
    subject: str  # what it is about: "quarantine", "edge-1/root", "quarantine 192.0.2.9 …"
    severity: Severity
    text: str  # one line for a human
    time: int  # epoch seconds: when this notice was made
    facts: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    resolved: bool = False
    since: int | None = None  # when the condition started (None: now)

    @property
    def key(self) -> str:
        """The de-duplication key: one active alert per kind and subject."""
        return f"{self.kind.value}:{self.subject}"

    @property
    def title(self) -> str:
        state = "resolved" if self.resolved else self.severity.value
        return f"banfeed {state}: {self.kind.value} {self.subject}"

    def record(self) -> dict[str, Any]:
        """The webhook body (version ``SCHEMA``, documented in docs/alerts.md)."""
        return {
            "schema": SCHEMA,
            "kind": self.kind.value,
            "subject": self.subject,
            "severity": self.severity.value,
            "status": "resolved" if self.resolved else "firing",
            "text": self.text,
            "time": iso(self.time),
            "since": iso(self.since if self.since is not None else self.time),
            "facts": self.facts,
        }

    def stored(self) -> dict[str, Any]:
        """What the store's recent list keeps (times as epoch seconds)."""
        return {**self.record(), "time": self.time, "since": self.since}

    @classmethod
    def parse(cls, item: Any) -> Alert:
        """An element of the stored recent list (``stored()``); ValueError etc. if not one."""
        return cls(
            kind=AlertKind(item["kind"]),
            subject=str(item["subject"]),
            severity=Severity(item["severity"]),
            text=str(item["text"]),
            time=int(item["time"]),
            facts=dict(item.get("facts") or {}),
            resolved=item["status"] == "resolved",
            since=None if item.get("since") is None else int(item["since"]),
        )


@dataclass
class _Active:
    alert: Alert
    since: int
    sent: int  # when it was last sent


class Tracker:
    """Which alerts are active; what to send now. Not thread-safe: one owner calls it."""

    def __init__(self, repeat: int) -> None:
        self.repeat = repeat
        self.active: dict[str, _Active] = {}
        self.recent: deque[Alert] = deque(maxlen=RECENT)  # newest last

    def update(
        self,
        firing: Iterable[Alert],
        kinds: Iterable[AlertKind],
        now: int,
        *,
        checked: set[str] | None = None,
    ) -> list[Alert]:
        """The notices to send after an evaluation of ``kinds`` found ``firing``: the new ones,
        the ones due again, and a resolved notice for each active alert of those kinds (and of
        the ``checked`` subjects, when given) that is no longer firing."""
        kinds = set(kinds)
        out: list[Alert] = []
        seen: set[str] = set()
        for alert in firing:
            seen.add(alert.key)
            known = self.active.get(alert.key)
            if known is None:
                alert = replace(alert, since=alert.since or now)
                self.active[alert.key] = _Active(alert, alert.since or now, now)
                out.append(alert)
            else:
                alert = replace(alert, since=known.since)
                known.alert = alert
                if now - known.sent >= self.repeat:
                    known.sent = now
                    out.append(alert)
        for key, known in list(self.active.items()):
            old = known.alert
            if key in seen or old.kind not in kinds:
                continue
            if checked is not None and old.subject not in checked:
                continue
            del self.active[key]
            out.append(replace(old, resolved=True, time=now, severity=Severity.INFO))
        self._publish(kinds, out)
        return out

    def _publish(self, kinds: set[AlertKind], notices: Sequence[Alert]) -> None:
        for kind in kinds:
            count = sum(1 for a in self.active.values() if a.alert.kind is kind)
            metrics.ALERT_ACTIVE.labels(kind.value).set(count)
        for notice in notices:
            announce(notice)
            self.recent.append(notice)


def announce(alert: Alert) -> None:
    """The one log line of an alert: WARNING, INFO once resolved."""
    level = logging.INFO if alert.resolved else logging.WARNING
    state = "resolved" if alert.resolved else alert.severity.value
    log.log(level, "alert %s (%s) %s: %s", alert.kind.value, state, alert.subject, alert.text)


def firing(notices: list[Alert]) -> list[Alert]:
    """Of ``notices`` (newest first), the alerts whose newest notice is not "resolved"."""
    seen: set[str] = set()
    found = []
    for alert in notices:
        if alert.key not in seen:
            seen.add(alert.key)
            if not alert.resolved:
                found.append(alert)
    return found


def records(notices: list[Alert]) -> dict[str, Any]:
    """``GET /api/v1/alerts`` and the overview's ``alerts``: what fires now and the last
    notices, each the webhook's record (docs/alerts.md)."""
    return {
        "firing": [a.record() for a in firing(notices)],
        "recent": [a.record() for a in notices],
    }
