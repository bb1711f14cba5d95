"""``/dashboard/sources`` and ``GET /api/v1/sources``: where each device's answers come from
(polled directly, through a ``[[fortimanagers]]`` entry, or a ``[[blocklists]]`` list) with each
source's status, the AbuseIPDB reporting, and the alert targets.

The status rows are the store's ``device_status`` rows that the overview, ``banfeed check`` and
``collect`` read; :func:`source_of` is the one rule that says which configured source a row
belongs to. AbuseIPDB is :func:`banfeed.sharing.abuseipdb.status`, what
``banfeed abuseipdb status`` prints.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route

from .. import alerts, blocklists, devicestatus, metrics
from ..config import Config
from ..config.blocklists import PREFIX as LIST_PREFIX
from ..config.fortimanager import SEPARATOR
from ..errors import BanfeedError
from ..models import DeviceStatus
from ..sharing import abuseipdb
from ..timeutil import iso
from . import overview
from .context import Web, store_failed
from .pages import BASE, environment
from .sessions import SECURITY_HEADERS, Session, guarded

REPORTS_SHOWN = 20  # the latest AbuseIPDB reports, as `banfeed abuseipdb status` by default
OUTCOMES = ("sent", "retried", "failed", "rate_limited")  # banfeed_alerts_total's outcomes


class SourceKind(StrEnum):
    FORTIGATE = "fortigate"  # [[fortigates]]: polled directly
    FORTIMANAGER = "fortimanager"  # [[fortimanagers]]: its own rows, and its devices FMG.DEVICE
    BLOCKLIST = "blocklist"  # [[blocklists]]: the device import:NAME
    UNCONFIGURED = "unconfigured"  # a status row of a source no longer in banfeed.toml


@dataclass(frozen=True, slots=True)
class SourceRef:
    kind: SourceKind
    name: str  # the entry's name in banfeed.toml (the device's own name when unconfigured)


def source_of(config: Config, device: str) -> SourceRef:
    """Which configured source a status row's device belongs to: a FortiGate of its own name,
    a FortiManager (its own row ``fmg-1``, or a device behind it ``fmg-1.DEVICE``), a list
    (``import:NAME``); else none any more. Names are unique across the three (the config
    refuses a FortiGate named like a FortiManager's device)."""
    if any(fg.name == device for fg in config.fortigates):
        return SourceRef(SourceKind.FORTIGATE, device)
    for fmg in config.fortimanagers:
        if device == fmg.name or device.startswith(fmg.name + SEPARATOR):
            return SourceRef(SourceKind.FORTIMANAGER, fmg.name)
    name = device.removeprefix(LIST_PREFIX)
    if device.startswith(LIST_PREFIX) and any(b.name == name for b in config.blocklists):
        return SourceRef(SourceKind.BLOCKLIST, name)
    return SourceRef(SourceKind.UNCONFIGURED, device)


def row_words(status: DeviceStatus, now: int) -> str:
    """ok; failing N cycles: KIND; backed off until …; not polled yet."""
    state = devicestatus.health(status, now)
    if state == "failing":
        n = status.consecutive_failures
        return f"failing {n} cycle{'s' if n != 1 else ''}: {status.error_kind}"
    return overview.device_words(status, now)


def row_record(status: DeviceStatus, now: int) -> dict[str, Any]:
    """``GET /api/v1/devices``' object, with the health in these words and its state."""
    record = overview.device_record(status, now)
    return record | {"health": row_words(status, now), "state": devicestatus.health(status, now)}


@dataclass(frozen=True)
class Source:
    ref: SourceRef
    own: list[DeviceStatus]  # a FortiGate's VDOMs, a FortiManager's VDOM selectors, a list's row
    managed: list[DeviceStatus] = field(default_factory=list)  # a FortiManager's devices

    def worst(self, now: int) -> DeviceStatus:
        return max(self.own, key=lambda s: devicestatus.HEALTH_RANK[devicestatus.health(s, now)])

    def last_success(self) -> int | None:
        """The oldest of its rows' last successes: every row answered since then."""
        times = [s.last_success for s in self.own]
        return None if None in times else min(t for t in times if t is not None)

    def entries(self) -> int:
        """Entries in the last answers (a FortiManager's: its devices' together)."""
        return sum(s.entries for s in (self.managed if self.managed else self.own))

    def failing(self, now: int) -> int:
        """A FortiManager's devices failing or backed off (each with its own error)."""
        return sum(
            1 for s in self.managed if devicestatus.health(s, now) in ("failing", "backed_off")
        )

    def record(self, now: int) -> dict[str, Any]:
        worst = self.worst(now)
        error = f"{worst.error_kind}: {worst.error_message or ''}" if worst.error_kind else None
        health = row_words(worst, now)
        if failing := self.failing(now):
            health += f"; {failing} of {len(self.managed)} devices failing"
        return {
            "name": self.ref.name,
            "kind": self.ref.kind.value,
            "state": devicestatus.health(worst, now),
            "health": health,
            "devices_failing": failing,
            "last_success": iso(self.last_success()),
            "last_error": error,
            "entries": self.entries(),
            "rows": [row_record(s, now) for s in self.own],
            "devices": [row_record(s, now) for s in self.managed],
        }


def sources(web: Web) -> list[Source]:
    """Every source in config order (FortiGates, FortiManagers, lists), then status rows of
    sources no longer configured; a configured one not polled yet has rows of its own that say
    so (a FortiManager's devices are known from its answers only)."""
    config = web.host.config
    rows = {(d.device, d.vdom): d for d in overview.devices(web)}  # FortiGates' placeholders
    for fmg in config.fortimanagers:
        for vdom in fmg.vdoms:
            rows.setdefault((fmg.name, vdom), DeviceStatus(fmg.name, vdom))
    for blocklist in config.blocklists:
        device = LIST_PREFIX + blocklist.name
        rows.setdefault((device, blocklists.VDOM), DeviceStatus(device, blocklists.VDOM))
    found: dict[SourceRef, Source] = {}
    for ref in (
        *(SourceRef(SourceKind.FORTIGATE, fg.name) for fg in config.fortigates),
        *(SourceRef(SourceKind.FORTIMANAGER, fmg.name) for fmg in config.fortimanagers),
        *(SourceRef(SourceKind.BLOCKLIST, b.name) for b in config.blocklists),
    ):
        found[ref] = Source(ref, [])
    for key in sorted(rows):
        status = rows[key]
        ref = source_of(config, status.device)
        source = found.setdefault(ref, Source(ref, []))
        managed = ref.kind is SourceKind.FORTIMANAGER and status.device != ref.name
        (source.managed if managed else source.own).append(status)
    return [s for s in found.values() if s.own]


def abuse_record(web: Web) -> dict[str, Any]:
    """`banfeed abuseipdb status --format json`'s object (the same call), with the latest
    report and the latest one the API refused among those shown."""
    section = web.host.config.abuseipdb
    shown = abuseipdb.status(web.host.store, section, now=web.now(), limit=REPORTS_SHOWN)
    refused = [r for r in shown.recent if r.status.value == "rejected"]
    return {
        **abuseipdb.status_record(shown),
        "last_report": abuseipdb.record(shown.recent[0]) if shown.recent else None,
        "last_refused": abuseipdb.record(refused[0]) if refused else None,
    }


def _outcomes() -> dict[str, dict[str, int]]:
    """Per target label: its deliveries by outcome, from ``banfeed_alerts_total``."""
    counts: dict[str, dict[str, int]] = {}
    for family in metrics.ALERTS.collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                labels = sample.labels
                per = counts.setdefault(labels["target"], dict.fromkeys(OUTCOMES, 0))
                per[labels["outcome"]] = per.get(labels["outcome"], 0) + int(sample.value)
    return counts


def targets_record(web: Web) -> dict[str, Any]:
    """Each ``[[alerts.targets]]``: name, type, what it takes; when this process alerts
    (`banfeed run`), whether it is in use (built: its secret read) and its deliveries by
    outcome, and the deliveries dropped from the full queue; else those are null (not known)."""
    config = web.host.config
    running = alerts.running(web.host)
    in_use = {t.label for t in running.targets} if running is not None else None
    outcomes = _outcomes() if running is not None else None
    found = []
    for index, target in enumerate(config.alerts.targets):
        label = target.label(index)
        found.append(
            {
                "target": label,
                "type": target.type,
                "kinds": sorted(k.value for k in target.kinds),
                "min_severity": target.min_severity.value,
                "max_per_hour": target.max_per_hour,
                "in_use": None if in_use is None else label in in_use,
                "deliveries": None
                if outcomes is None
                else outcomes.get(label, dict.fromkeys(OUTCOMES, 0)),
            }
        )
    return {
        "alerting": running is not None,
        "targets": found,
        "dropped": None if running is None else running.dispatcher.dropped,
    }


def sources_record(web: Web) -> dict[str, Any]:
    """``GET /api/v1/sources``: what the page shows."""
    now = web.now()
    return {
        "sources": [s.record(now) for s in sources(web)],
        "abuseipdb": abuse_record(web),
        "alerts": targets_record(web),
    }


def routes(web: Web) -> list[Route]:
    env = environment()

    @guarded(web, api=False)
    async def page(_request: Request, session: Session) -> Response:
        try:
            found = await asyncio.to_thread(sources_record, web)
        except BanfeedError as exc:
            html = env.get_template("error.html").render(
                user=session, csrf=session.csrf, message=store_failed(exc)
            )
            return HTMLResponse(html, status_code=503, headers=SECURITY_HEADERS)
        html = env.get_template("sources.html").render(
            user=session, csrf=session.csrf, s=found, now=web.now()
        )
        return HTMLResponse(html, headers=SECURITY_HEADERS)

    @guarded(web, api=True)
    async def api(_request: Request, _session: Session) -> Response:
        try:
            return JSONResponse(await asyncio.to_thread(sources_record, web))
        except BanfeedError as exc:
            return JSONResponse({"error": store_failed(exc)}, status_code=503)

    return [
        Route(f"{BASE}/sources", page, methods=["GET"]),
        Route("/api/v1/sources", api, methods=["GET"]),
    ]
