"""Filtered reads for the day-2 commands: offenders (`list`), bans (`bans`), events (`events`).

Filters are applied in SQL wherever a column or an index answers them (state, address range,
time, origin, kind, actor); what SQL cannot say exactly (a cause inside the JSON list of
sources, a network containing an event's subject) is narrowed in SQL first and decided here,
row by row, as the rows stream: memory stays bounded whatever the store holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from ipaddress import ip_network
from typing import Any

from sqlalchemy import Connection, Select, and_, func, or_, select

from ..models import Ban, BanOrigin, Event, EventKind, Offender, OffenderStatus
from ..net import IPNetwork, aggregate, sort_key
from ._common import active, offender_from_row
from ._control import _ban
from .schema import bans, events, offenders


def _texts_containing(network: IPNetwork) -> list[str]:
    """How the store names every network that contains ``network`` (itself included): a host
    network is written as its address."""
    texts = []
    for length in range(network.prefixlen + 1):
        outer = network.supernet(new_prefix=length)
        texts.append(str(outer.network_address) if outer.num_addresses == 1 else str(outer))
    return texts


def _listed(column: Any, wanted: Sequence[str], suffix: bool) -> Any:
    """A case-insensitive SQL prefilter on a JSON-list column: one of ``wanted`` as an element
    (``suffix``: as the part after the ``/`` of an element, a VDOM without its device)."""
    tests = []
    for value in wanted:
        quoted = json.dumps(value.lower())
        pattern = "/" + quoted[1:] if suffix else quoted
        tests.append(func.lower(column).contains(pattern, autoescape=True))
    return or_(*tests)


def _has(items: Sequence[str], wanted: Sequence[str]) -> bool:
    lowered = {i.lower() for i in items}
    return any(w.lower() in lowered for w in wanted)


def _has_vdom(vdoms: Sequence[str], wanted: Sequence[str]) -> bool:
    """``wanted`` names a VDOM (``dmz``: on any device) or a device's VDOM (``edge-1/dmz``)."""
    full = {v.lower() for v in vdoms}
    names = {v.lower().partition("/")[2] for v in vdoms}
    return any(w.lower() in (full if "/" in w else names) for w in wanted)


@dataclass(frozen=True)
class OffenderWhere:
    """What the offender reads (`list`, the dashboard's search) narrow by; each given must
    hold: ``status``; active at ``active_at``; listed and expired at ``expired_at``; the
    address inside ``within`` and inside any network of ``inside``; the last offense between
    ``since`` and ``last_until``, the first between ``first_since`` and ``first_until``; one of
    ``sources``, ``devices`` or ``vdoms`` (case-insensitive; a VDOM as ``name`` or
    ``device/name``)."""

    status: OffenderStatus | None = None
    active_at: int | None = None
    expired_at: int | None = None
    within: IPNetwork | None = None
    inside: Sequence[IPNetwork] = ()
    since: int | None = None
    last_until: int | None = None
    first_since: int | None = None
    first_until: int | None = None
    sources: Sequence[str] = ()
    devices: Sequence[str] = ()
    vdoms: Sequence[str] = ()


def narrowed(
    query: Select[Any], where: OffenderWhere
) -> tuple[Select[Any], list[Callable[[Offender], bool]]]:
    """The one meaning of the offender filters (`list`, the dashboard's search): ``query``
    narrowed in SQL, and the exact checks to run on each row it returns (the JSON lists of
    causes, devices and VDOMs are prefiltered in SQL by text, decided here)."""
    status, active_at, expired_at = where.status, where.active_at, where.expired_at
    within, inside, since = where.within, where.inside, where.since
    sources, devices, vdoms = where.sources, where.devices, where.vdoms
    last_until, first_since, first_until = where.last_until, where.first_since, where.first_until
    if status is not None:
        query = query.where(offenders.c.status == status.value)
    if active_at is not None:
        query = query.where(active(active_at))
    if expired_at is not None:
        query = query.where(
            offenders.c.status == OffenderStatus.LISTED.value,
            offenders.c.active_until.is_not(None),
            # "+ 0": not a range of the active_until index, which SQLite would otherwise read
            # and then sort, a third of a big store for each page; the sort's index instead.
            offenders.c.active_until + 0 <= expired_at,
        )
    if within is not None:
        query = query.where(
            offenders.c.sort_key >= sort_key(within.network_address),
            offenders.c.sort_key <= sort_key(within.broadcast_address),
        )
    if inside:  # inside any of these networks (at most a few hundred, merged first)
        query = query.where(
            or_(
                *(
                    offenders.c.sort_key.between(
                        sort_key(n.network_address), sort_key(n.broadcast_address)
                    )
                    for n in aggregate(inside)
                )
            )
        )
    for column, low, high in (
        (offenders.c.last_offense, since, last_until),
        (offenders.c.first_offense, first_since, first_until),
    ):
        if low is not None:
            query = query.where(column >= low)
        if high is not None:
            query = query.where(column <= high)
    checks: list[Callable[[Offender], bool]] = []
    if sources:
        query = query.where(_listed(offenders.c.sources, sources, suffix=False))
        checks.append(lambda o: _has(o.sources, sources))
    if devices:
        query = query.where(_listed(offenders.c.devices, devices, suffix=False))
        checks.append(lambda o: _has(o.devices, devices))
    if vdoms:
        names = [v for v in vdoms if "/" not in v]
        full = [v for v in vdoms if "/" in v]
        tests = []
        if names:
            tests.append(_listed(offenders.c.vdoms, names, suffix=True))
        if full:
            tests.append(_listed(offenders.c.vdoms, full, suffix=False))
        query = query.where(or_(*tests))
        checks.append(lambda o: _has_vdom(o.vdoms, vdoms))
    return query, checks


ALL = OffenderWhere()  # every offender


class FilterQueries:
    conn: Connection

    def iter_offenders_matching(self, where: OffenderWhere | None = None) -> Iterator[Offender]:
        """Offenders in numeric address order that pass every filter of ``where``."""
        query, checks = narrowed(select(offenders).order_by(offenders.c.sort_key), where or ALL)
        for row in self.conn.execution_options(yield_per=5000).execute(query):
            offender = offender_from_row(row)
            if all(check(offender) for check in checks):
                yield offender

    def bans_matching(
        self,
        *,
        origin: BanOrigin | None = None,
        active_at: int | None = None,
        expired_at: int | None = None,
        overlapping: IPNetwork | None = None,
    ) -> list[Ban]:
        """Bans in numeric order: of ``origin``; not expired at ``active_at``; expired at
        ``expired_at``; inside ``overlapping`` or containing it."""
        query = select(bans).order_by(bans.c.sort_key, bans.c.prefixlen)
        if origin is not None:
            query = query.where(bans.c.provenance == origin.value)
        if active_at is not None:
            query = query.where(or_(bans.c.expires.is_(None), bans.c.expires > active_at))
        if expired_at is not None:
            query = query.where(bans.c.expires.is_not(None), bans.c.expires <= expired_at)
        if overlapping is not None:
            n = overlapping
            containing = [str(n.supernet(new_prefix=p)) for p in range(n.prefixlen + 1)]
            inside = and_(
                bans.c.sort_key >= sort_key(n.network_address),
                bans.c.sort_key <= sort_key(n.broadcast_address),
                bans.c.prefixlen >= n.prefixlen,
            )
            query = query.where(or_(inside, bans.c.network.in_(containing)))
        return [_ban(r) for r in self.conn.execute(query)]

    def events_matching(
        self,
        *,
        actor: str | None = None,
        kinds: Sequence[EventKind] = (),
        since: int | None = None,
        about: IPNetwork | None = None,
        limit: int = 0,
    ) -> list[Event]:
        """The newest ``limit`` events (0: all) that pass every filter given, newest first:
        by ``actor``; of one of ``kinds``; at or after ``since``; whose subject lies inside
        ``about`` or contains it (a ban of a /24 is about each of its addresses)."""
        query = select(events).order_by(events.c.time.desc(), events.c.id.desc())
        if actor is not None:
            query = query.where(events.c.actor == actor)
        if kinds:
            query = query.where(events.c.kind.in_([k.value for k in kinds]))
        if since is not None:
            query = query.where(events.c.time >= since)
        exact = about is not None and about.num_addresses == 1
        if about is not None:
            if exact:  # every subject that can hold one address: the index on ip answers it
                query = query.where(events.c.ip.in_(_texts_containing(about)))
            else:
                query = query.where(events.c.ip.is_not(None))
        found: list[Event] = []
        result = self.conn.execution_options(yield_per=2000).execute(query)
        try:
            for r in result:
                if about is not None and not exact and not _overlaps(r.ip, about):
                    continue
                found.append(Event(r.time, EventKind(r.kind), r.ip, r.actor, r.detail))
                if limit and len(found) >= limit:
                    break
        finally:
            result.close()
        return found


def _overlaps(subject: str, network: IPNetwork) -> bool:
    try:
        target = ip_network(subject, strict=False)
    except ValueError:
        return False
    return target.version == network.version and target.overlaps(network)
