"""The last collection cycles, for the overview: when each started, how long it took, its polls
ok and failed, its new offenses and offenders, its rejected entries.

Kept as one bounded JSON list in the store's ``meta`` table (key ``cycles``, newest first, at
most ``KEEP``), written by the cycle's own transaction: a cycle is in the list exactly when its
offenses were stored. No table of its own: it is a display aid, not history (offenses are that).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from .models import PollResult
from .store import Tx

log = logging.getLogger(__name__)

KEY = "cycles"
KEEP = 50
FAILED_NAMED = 10  # failed polls named per cycle; the count is always whole


class Cycle(Protocol):
    """What a cycle's report tells (``collector.CycleReport``)."""

    @property
    def started(self) -> int: ...

    @property
    def results(self) -> Sequence[PollResult]: ...

    @property
    def new_offenses(self) -> int: ...

    @property
    def new_offenders(self) -> int: ...

    @property
    def rejected(self) -> int: ...


@dataclass(frozen=True, slots=True)
class CycleEntry:
    started: int  # epoch seconds
    duration: float  # seconds, polling and writing, up to the commit
    polls_ok: int
    polls_failed: int
    new_offenses: int
    new_offenders: int
    rejected: int
    failed: tuple[str, ...] = ()  # "edge-2/dmz timeout", at most FAILED_NAMED

    @classmethod
    def of(cls, cycle: Cycle, duration: float) -> CycleEntry:
        failed = [r for r in cycle.results if r.error is not None]
        return cls(
            started=cycle.started,
            duration=round(duration, 3),
            polls_ok=len(cycle.results) - len(failed),
            polls_failed=len(failed),
            new_offenses=cycle.new_offenses,
            new_offenders=cycle.new_offenders,
            rejected=cycle.rejected,
            failed=tuple(
                f"{r.device}/{r.vdom} {r.error.kind}" for r in failed[:FAILED_NAMED] if r.error
            ),
        )

    @classmethod
    def parse(cls, item: Any) -> CycleEntry:
        """One element of the stored list; ValueError (TypeError, KeyError) if it is not one."""
        return cls(
            started=int(item["started"]),
            duration=float(item["duration"]),
            polls_ok=int(item["polls_ok"]),
            polls_failed=int(item["polls_failed"]),
            new_offenses=int(item["new_offenses"]),
            new_offenders=int(item["new_offenders"]),
            rejected=int(item["rejected"]),
            failed=tuple(str(f) for f in item.get("failed", ())),
        )


def recent(tx: Tx) -> list[CycleEntry]:
    """The kept cycles, newest first. A list this version cannot read (written by hand, or by a
    later version in another shape) is logged and read as empty: it is rewritten by the next
    cycle, and must never stop a collection from being stored."""
    text = tx.get_meta(KEY)
    if not text:
        return []
    try:
        items = json.loads(text)
        if not isinstance(items, list):
            raise TypeError(f"a JSON {type(items).__name__}, not a list")
        return [CycleEntry.parse(item) for item in items]
    except (ValueError, TypeError, KeyError) as exc:
        log.warning("meta %r: the cycle list cannot be read (%s); it starts again", KEY, exc)
        return []


def record(tx: Tx, cycle: Cycle, duration: float, keep: int = KEEP) -> None:
    """Put ``cycle`` first in the kept list, in ``tx`` (the cycle's own write), keeping
    ``keep``. A cycle that polled nothing (a replica holding no lease) is not kept."""
    if not cycle.results:
        return
    entries = [CycleEntry.of(cycle, duration), *recent(tx)][:keep]
    tx.set_meta(KEY, json.dumps([asdict(e) for e in entries], separators=(",", ":")))
