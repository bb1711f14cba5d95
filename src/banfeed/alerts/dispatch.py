"""Deliveries: a bounded queue drained by one task, so a dead receiver never slows banfeed.

:meth:`Dispatcher.submit` never waits: it puts one delivery a target on the queue (the oldest
dropped, counted and logged, when it is full) and returns. :meth:`Dispatcher.run` sends them,
one at a time per target (in order) and targets side by side; a failed delivery is tried again
after the project's one back-off (``policy.backoff_seconds``), up to the target's ``retries``.
Each target also has a rate limit: past ``max_per_hour`` an alert is counted and not sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .. import metrics
from ..errors import BanfeedError
from ..policy import backoff_seconds
from .model import Alert
from .targets import DeliveryError, Target

log = logging.getLogger("banfeed.alerts")

HOUR = 3600.0


@dataclass
class Delivery:
    alert: Alert
    target: Target
    attempt: int = 0  # failed attempts so far
    due: float = 0.0  # monotonic time before which it is not tried (a back-off)


class Dispatcher:
    def __init__(
        self,
        targets: Sequence[Target],
        size: int,
        *,
        backoff: Callable[[int], float] = backoff_seconds,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.targets = list(targets)
        self.size = size
        self.backoff = backoff
        self.monotonic = monotonic
        self.queue: deque[Delivery] = deque()
        self.dropped = 0
        self._sent: dict[str, deque[float]] = {}  # per target: when it was last sent to
        self._busy: set[str] = set()  # targets with a delivery in flight
        self._wake = asyncio.Event()
        self._sending: set[asyncio.Task[None]] = set()
        self._bug: BaseException | None = None

    def submit(self, alert: Alert) -> None:
        """Queue ``alert`` for every target that wants it; never waits, never raises."""
        for target in self.targets:
            if not target.wants(alert):
                continue
            if not self._allowed(target):
                metrics.ALERTS.labels(alert.kind.value, target.label, "rate_limited").inc()
                log.warning(
                    "alert %s %s not sent to %s: over its max_per_hour (%d)",
                    alert.kind.value,
                    alert.subject,
                    target.label,
                    target.max_per_hour,
                )
                continue
            self._put(Delivery(alert, target))

    def _allowed(self, target: Target) -> bool:
        now = self.monotonic()
        sent = self._sent.setdefault(target.label, deque())
        while sent and now - sent[0] >= HOUR:
            sent.popleft()
        if len(sent) >= target.max_per_hour:
            return False
        sent.append(now)
        return True

    def _put(self, delivery: Delivery, *, first: bool = False) -> None:
        if len(self.queue) >= self.size:
            old = self.queue.popleft()
            self.dropped += 1
            metrics.ALERTS_DROPPED.inc()
            log.warning(
                "alert queue full (%d): dropped the oldest delivery, %s %s to %s",
                self.size,
                old.alert.kind.value,
                old.alert.subject,
                old.target.label,
            )
        if first:
            self.queue.appendleft(delivery)
        else:
            self.queue.append(delivery)
        self._wake.set()

    @property
    def pending(self) -> int:
        return len(self.queue) + len(self._busy)

    async def run(self) -> None:
        """Send until cancelled (the deliveries still queued then are given up)."""
        self._wake = asyncio.Event()  # of this event loop
        try:
            while True:
                self._wake.clear()
                now = self.monotonic()
                waiting: list[Delivery] = []
                blocked = set(self._busy)  # a target's deliveries go one at a time, in order
                while self.queue:
                    delivery = self.queue.popleft()
                    label = delivery.target.label
                    if delivery.due > now or label in blocked:
                        blocked.add(label)
                        waiting.append(delivery)
                        continue
                    self._busy.add(label)
                    blocked.add(label)
                    task = asyncio.ensure_future(self._deliver(delivery))
                    self._sending.add(task)
                    task.add_done_callback(self._finished)
                if self._bug is not None:  # a send raised what no target should: a bug
                    raise self._bug
                self.queue.extendleft(reversed(waiting))
                due = [d.due for d in self.queue if d.due > now]
                timeout = max(0.0, min(due) - now) if due else None
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    pass
        finally:
            for task in list(self._sending):
                task.cancel()
            if self.queue:
                log.warning("stopping: %d alert deliveries not sent", len(self.queue))

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._bug = task.exception()
            self._wake.set()

    async def _deliver(self, delivery: Delivery) -> None:
        alert, target = delivery.alert, delivery.target
        try:
            await target.send(alert)
        except DeliveryError as exc:
            delivery.attempt += 1
            if delivery.attempt > target.retries:
                metrics.ALERTS.labels(alert.kind.value, target.label, "failed").inc()
                log.error(
                    "alert %s %s not delivered after %d attempts: %s",
                    alert.kind.value,
                    alert.subject,
                    delivery.attempt,
                    exc,
                )
            else:
                delay = self.backoff(delivery.attempt)
                metrics.ALERTS.labels(alert.kind.value, target.label, "retried").inc()
                log.warning("alert delivery failed (trying again in %gs): %s", delay, exc)
                delivery.due = self.monotonic() + delay
                self._put(delivery, first=True)  # before the target's later deliveries
        except BanfeedError as exc:  # apprise not installed: trying again will not help
            metrics.ALERTS.labels(alert.kind.value, target.label, "failed").inc()
            log.error("alert %s %s not delivered: %s", alert.kind.value, alert.subject, exc)
        else:
            metrics.ALERTS.labels(alert.kind.value, target.label, "sent").inc()
        finally:
            self._busy.discard(target.label)
            self._wake.set()

    async def drain(self, timeout: float) -> bool:
        """Wait until nothing is queued or in flight (tests, `alerts test`); False on timeout."""
        deadline = self.monotonic() + timeout
        while self.pending and self.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return not self.pending
