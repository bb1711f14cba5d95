"""Alerts: a feed held or pinned, a device failing or backed off, a consumer gone silent, a
FortiGate loading something else than what is served, a ban storm — each sent once (again
after ``repeat``, and when resolved) to a signed JSON webhook or through apprise, and each a
log line and a metric. docs/alerts.md has the kinds, the config and the webhook's shape."""

from __future__ import annotations

from ..config.alerts import AlertKind, Severity
from .check import SendOutcome, problems, send_test
from .dispatch import Dispatcher
from .model import SCHEMA, Alert, Tracker, firing, records
from .runtime import VERIFIED_KEY, Alerting, CycleSeen, after_cycle, recent_alerts, running
from .targets import SIGNATURE_HEADER, DeliveryError, signature

__all__ = [
    "SCHEMA",
    "SIGNATURE_HEADER",
    "VERIFIED_KEY",
    "Alert",
    "AlertKind",
    "Alerting",
    "CycleSeen",
    "DeliveryError",
    "Dispatcher",
    "Severity",
    "SendOutcome",
    "Tracker",
    "after_cycle",
    "firing",
    "problems",
    "recent_alerts",
    "records",
    "running",
    "send_test",
    "signature",
]
