"""``--format json`` of the reporting commands: the option, and the records the tables of
``check`` and ``collect`` are rendered from too (one computation, two renderings).

JSON goes to standard output alone, so ``| jq`` works; warnings, logs and errors go to
standard error. The shapes are documented in docs/cli.md, next to each command.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from ..timeutil import iso

if TYPE_CHECKING:
    from ..collector import CycleReport
    from ..control import PruneReport
    from ..errors import DeviceError
    from ..models import DeviceStatus, PollResult
    from ..publish.publisher import FeedResult
    from ..push import PushResult

FORMAT = click.option(
    "--format",
    "fmt",
    type=click.Choice(("table", "json")),
    default="table",
    show_default=True,
    help="table for people; json for scripts (one document on stdout, shape in docs/cli.md).",
)


def emit(document: object) -> None:
    """Write one JSON document to standard output."""
    click.echo(json.dumps(document, indent=1))


def error_record(error: DeviceError | None) -> dict[str, str] | None:
    return None if error is None else {"kind": error.kind, "detail": error.detail}


def probe_record(result: PollResult, last: DeviceStatus | None) -> dict[str, Any]:
    """One element of `check --format json`'s ``devices``."""
    counts = Counter(v.vdom for v in result.lists for _ in v.offenses)
    return {
        "device": result.device,
        "vdom": result.vdom,
        "ok": result.error is None,
        "error": error_record(result.error),
        "entries": sum(counts.values()),
        "entries_by_vdom": dict(sorted(counts.items())),
        "rejected": result.rejected,
        "duration_ms": round(result.duration * 1000),
        "last_success": iso(last.last_success) if last and last.last_success else None,
        # polled inside a back-off window (--retry-now) and answered: the window it lifts
        "backoff_lifted": (
            iso(last.backoff_until)
            if last is not None and last.backoff_until and result.error is None
            else None
        ),
    }


def poll_record(result: PollResult) -> dict[str, Any]:
    """One element of `collect --format json`'s ``polls``."""
    counted = result.error is None and not result.unchanged
    return {
        "device": result.device,
        "vdom": result.vdom,
        "ok": result.error is None,
        "unchanged": result.unchanged,
        "error": error_record(result.error),
        "entries": result.entries if counted else None,
        "rejected": result.rejected,
        "duration_ms": round(result.duration * 1000),
    }


def feed_result_record(result: FeedResult) -> dict[str, Any]:
    """One element of `collect --format json`'s ``feeds``: what the publish did."""
    version = result.version
    return {
        "feed": result.feed,
        "outcome": result.outcome.value,
        "version": version.number if version else None,
        "entries": version.entries if version else None,
        "added": version.added if version else None,
        "removed": version.removed if version else None,
        "reason": result.decision.reason if result.decision else None,
    }


def push_record(result: PushResult) -> dict[str, Any]:
    return {
        "device": result.device,
        "action": result.action,
        "ok": result.error is None,
        "count": result.count,
        "skipped": result.skipped,
        "error": error_record(result.error),
    }


def cycle_record(
    report: CycleReport, published: Sequence[FeedResult], pushes: Sequence[PushResult]
) -> dict[str, Any]:
    """The stable JSON shape of `banfeed collect` (documented in docs/cli.md)."""
    from ..publish import Outcome

    return {
        "ok": not report.failed and not any(r.outcome is Outcome.HELD for r in published),
        "started": iso(report.started),
        "duration_s": round(report.duration, 3),
        "polls": [poll_record(r) for r in report.results],
        "summary": {
            "polls": len(report.results),
            "polls_ok": len(report.results) - len(report.failed),
            "new_offenses": report.new_offenses,
            "new_offenders": report.new_offenders,
            "updated_offenders": report.updated_offenders,
            "suppressed": report.suppressed,
            "rejected": report.rejected,
        },
        "feeds": [feed_result_record(r) for r in published],
        "pushes": [push_record(p) for p in pushes],
    }


def prune_record(report: PruneReport, keep_history: int | None, now: int) -> dict[str, Any]:
    """The stable JSON shape of `banfeed prune` (documented in docs/cli.md)."""
    return {
        "expired": report.expired_events,
        "deleted": {
            "offenses": report.offenses,
            "events": report.events,
            "offenders": report.offenders,
        },
        "keep_history_s": keep_history,
        "cutoff": None if keep_history is None else iso(now - keep_history),
    }
