"""A device's status after each poll, and the back-off rules: how long a device is left
alone after a 401 or 429, and for which token (one rule, one place)."""

from __future__ import annotations

import hashlib
from dataclasses import replace

from .errors import DeviceAuthError, DeviceBackedOff, DeviceError, DeviceRateLimited
from .fortios import DeviceTarget
from .models import DeviceStatus, PollResult
from .policy import backoff_seconds


def token_id(target: DeviceTarget) -> str | None:
    """A short fingerprint of the device's token: a back-off after a 401 holds for the token
    that was refused, so a fixed token (or another process's right one) is tried at once."""
    if target.token is None:
        return None
    return hashlib.sha256(target.token.get_secret_value().encode()).hexdigest()[:16]


def backoff_delay(failures: int, error: DeviceError) -> int | None:
    """How long to leave a device alone after a failed poll: the one back-off rule.
    ``60 s × 2^(n−1)``, at most an hour, at least the device's Retry-After, after 401 and 429
    only (other failures are retried next cycle)."""
    if error.kind not in ("auth", "rate_limited"):
        return None
    delay = backoff_seconds(failures)
    if isinstance(error, DeviceRateLimited) and error.retry_after:
        delay = max(delay, int(error.retry_after))
    return delay


def backed_off(status: DeviceStatus | None, token: str | None, now: int) -> bool:
    """Whether a device is inside its back-off window for this token. A 429 locks out the
    source whatever the token (``backoff_token`` None); a 401 only the token refused."""
    if status is None or status.backoff_until is None or now >= status.backoff_until:
        return False
    return status.backoff_token is None or status.backoff_token == token


def health(status: DeviceStatus, now: int) -> str:
    """A status row's state in one word, worst last: ok, not_polled, failing, backed_off (the
    dashboard's overview and sources pages and their JSON say it in these terms)."""
    if status.backoff_until is not None and status.backoff_until > now:
        return "backed_off"
    if status.error_kind:
        return "failing"
    return "ok" if status.last_success is not None else "not_polled"


HEALTH_RANK = {"ok": 0, "not_polled": 1, "failing": 2, "backed_off": 3}


def next_status(
    old: DeviceStatus | None, result: PollResult, now: int, token: str | None
) -> DeviceStatus | None:
    """The device's status after this poll; ``None`` when it was not polled (backed off)."""
    if isinstance(result.error, DeviceBackedOff):
        return None
    base = old or DeviceStatus(result.device, result.vdom)
    duration_ms = round(result.duration * 1000)
    if result.error is None:
        return replace(
            base,
            last_attempt=now,
            last_success=now,
            error_kind=None,
            error_message=None,
            entries=base.entries if result.unchanged else result.entries,
            rejected=base.rejected if result.unchanged else result.rejected,
            duration_ms=duration_ms,
            consecutive_failures=0,
            backoff_until=None,
            backoff_token=None,
            fingerprint=result.fingerprint,
        )
    failures = base.consecutive_failures + 1
    delay = backoff_delay(failures, result.error)
    return replace(
        base,
        last_attempt=now,
        error_kind=result.error.kind,
        error_message=result.error.detail,
        duration_ms=duration_ms,
        consecutive_failures=failures,
        backoff_until=None if delay is None else now + delay,
        backoff_token=token if isinstance(result.error, DeviceAuthError) else None,
    )
