"""Reads and writes of the store, in portable SQLAlchemy Core (no dialect-specific SQL here).

Functions take a ``Connection`` inside a transaction opened by :class:`~banfeed.store.Store`;
the caller decides what belongs in one transaction.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import ip_network
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)

from ..models import AllowEntry, Ban, DeviceStatus, Event, Offender, Offense
from ..net import IPNetwork, address_from_sort_key, parse_address, sort_key
from .engine import bulk_insert
from .schema import allow_entries as allow_entries_table
from .schema import (
    bans,
    device_status,
    events,
    feed_consumers,
    feed_state,
    meta,
    offenders,
    offenses,
    pushes,
)

CHUNK = 500  # bound parameters per IN (...) list: well inside SQLite's and PostgreSQL's limits


def _chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _update_or_insert(
    conn: Connection, table: Any, where: Any, values: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """Update the row matching ``where``, or insert it (with ``defaults`` under ``values``).
    Portable: no dialect's upsert; concurrent first inserts surface as ConflictError."""
    if conn.execute(update(table).where(where).values(values)).rowcount == 0:
        conn.execute(table.insert().values({**defaults, **values}))


# -- meta ------------------------------------------------------------------------------------


def store_version(conn: Connection) -> int:
    """A counter bumped by every change that can change a feed (the ETag source)."""
    value = conn.execute(select(meta.c.value).where(meta.c.key == "version")).scalar_one()
    return int(value)


def get_meta(conn: Connection, key: str) -> str | None:
    return conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()


def set_meta(conn: Connection, key: str, value: str) -> None:
    _update_or_insert(conn, meta, meta.c.key == key, {"value": value}, {"key": key})


def bump_version(conn: Connection) -> int:
    """Increment the version in SQL, so concurrent writers (replicas) never lose a bump: the
    UPDATE takes the row lock and reads the committed value."""
    bumped = cast(cast(meta.c.value, BigInteger) + 1, Text)
    conn.execute(update(meta).where(meta.c.key == "version").values(value=bumped))
    return store_version(conn)


# -- offenders -------------------------------------------------------------------------------


OFFENDER_COLUMNS = (
    "ip",
    "sort_key",
    "family",
    "first_offense",
    "last_offense",
    "offense_count",
    "sources",
    "devices",
    "vdoms",
    "active_until",
    "status",
    "note",
    "updated",
)


@functools.lru_cache(maxsize=4096)
def _json_list(items: tuple[str, ...]) -> str:
    # A fleet has few distinct (sources, devices, vdoms) combinations: encode each once.
    return json.dumps(items)


@functools.lru_cache(maxsize=8192)
def _json_tuple(text: str) -> tuple[str, ...]:
    # The same few lists ('["IPS"]', '["edge-1"]') repeat over a whole table: decode each once.
    return tuple(json.loads(text))


def offender_tuple(offender: Offender, updated: int, ip_text: str | None = None) -> tuple[Any, ...]:
    """The row of ``offender`` in OFFENDER_COLUMNS order."""
    return (
        ip_text or str(offender.ip),
        sort_key(offender.ip),
        offender.ip.version,
        offender.first_offense,
        offender.last_offense,
        offender.offense_count,
        _json_list(offender.sources),
        _json_list(offender.devices),
        _json_list(offender.vdoms),
        offender.active_until,
        offender.status,
        offender.note,
        updated,
    )


def offender_values(offender: Offender, updated: int) -> dict[str, Any]:
    return dict(zip(OFFENDER_COLUMNS, offender_tuple(offender, updated), strict=True))


def _offender(row: Row[Any]) -> Offender:
    return Offender(
        ip=address_from_sort_key(row.sort_key),
        first_offense=row.first_offense,
        last_offense=row.last_offense,
        offense_count=row.offense_count,
        sources=_json_tuple(row.sources),
        devices=_json_tuple(row.devices),
        vdoms=_json_tuple(row.vdoms),
        active_until=row.active_until,
        status=row.status,
        note=row.note,
    )


# One statement, compiled once, expanded per call: large lookups cost the database's time only.
_BY_IP = select(offenders).where(offenders.c.ip.in_(bindparam("ips", expanding=True)))
_BY_IP_LOCKED = _BY_IP.with_for_update()
BIG_CHUNK = 5000  # values per expanded IN list: under SQLite's 32,766 and PostgreSQL's 65,535


def load_offenders(
    conn: Connection, ips: Iterable[str], *, lock: bool = False
) -> dict[str, Offender]:
    """Offenders by address; with ``lock``, row-locked until the transaction ends (PostgreSQL:
    two replicas updating one offender serialise instead of losing an offense count)."""
    found: dict[str, Offender] = {}
    query = _BY_IP_LOCKED if lock else _BY_IP
    # Sorted: replicas lock rows in one order, so they cannot deadlock each other.
    for chunk in _chunks(sorted(set(ips)), BIG_CHUNK):
        for row in conn.execute(query, {"ips": chunk}):
            found[row.ip] = _offender(row)
    return found


def has_offenders(conn: Connection) -> bool:
    return conn.execute(select(offenders.c.ip).limit(1)).first() is not None


def get_offender(conn: Connection, ip: str) -> Offender | None:
    row = conn.execute(select(offenders).where(offenders.c.ip == ip)).first()
    return None if row is None else _offender(row)


def insert_offenders(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """Insert rows made by :func:`offender_tuple`."""
    bulk_insert(conn, offenders, OFFENDER_COLUMNS, rows)


def update_offenders(conn: Connection, rows: list[dict[str, Any]]) -> None:
    if not rows:
        return
    columns = [c for c in rows[0] if c not in ("ip", "sort_key", "family")]
    statement = (
        update(offenders)
        .where(offenders.c.ip == bindparam("_ip"))
        .values({c: bindparam(c) for c in columns})
    )
    conn.execute(statement, [{**{c: r[c] for c in columns}, "_ip": r["ip"]} for r in rows])


def iter_offenders(
    conn: Connection, *, active_at: int | None = None, family: int | None = None
) -> Iterator[Offender]:
    """Offenders in numeric address order; with ``active_at``, only those listed and active."""
    query = select(offenders).order_by(offenders.c.sort_key)
    if active_at is not None:
        query = query.where(
            offenders.c.status == "listed",
            or_(offenders.c.active_until.is_(None), offenders.c.active_until > active_at),
        )
    if family is not None:
        query = query.where(offenders.c.family == family)
    for row in conn.execution_options(yield_per=5000).execute(query):
        yield _offender(row)


def count_offenders(conn: Connection, *, active_at: int | None = None) -> int:
    query = select(func.count()).select_from(offenders)
    if active_at is not None:
        query = query.where(
            offenders.c.status == "listed",
            or_(offenders.c.active_until.is_(None), offenders.c.active_until > active_at),
        )
    return int(conn.execute(query).scalar_one())


# -- offenses --------------------------------------------------------------------------------


def known_offenses(
    conn: Connection, device: str, vdoms: Iterable[str], min_created: int
) -> set[tuple[str, str, int]]:
    """``(vdom, ip, created)`` of the device's offenses since ``min_created``.

    Bounded by what the device lists now (its oldest listed entry), not by the whole history;
    the unique index ``(device, vdom, created, ip)`` answers it.
    """
    query = select(offenses.c.vdom, offenses.c.ip, offenses.c.created).where(
        offenses.c.device == device,
        offenses.c.vdom.in_(sorted(set(vdoms))),
        offenses.c.created >= min_created,
    )
    return {(r.vdom, r.ip, r.created) for r in conn.execute(query)}


OFFENSE_COLUMNS = ("device", "vdom", "ip", "created", "expires", "source", "seen")


def insert_offenses(conn: Connection, items: Sequence[tuple[Offense, str]], seen: int) -> None:
    """Insert offenses, each given with its address text (computed once by the caller)."""
    rows = [(o.device, o.vdom, ip, o.created, o.expires, o.source, seen) for o, ip in items]
    bulk_insert(conn, offenses, OFFENSE_COLUMNS, rows)


def offenses_of(conn: Connection, ip: str) -> list[Offense]:
    query = select(offenses).where(offenses.c.ip == ip).order_by(offenses.c.created, offenses.c.id)
    return [
        Offense(r.device, r.vdom, parse_address(r.ip), r.created, r.expires, r.source)
        for r in conn.execute(query)
    ]


def count_offenses(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(offenses)).scalar_one())


# -- events ----------------------------------------------------------------------------------


def insert_events(conn: Connection, items: Sequence[Event]) -> None:
    if items:
        conn.execute(
            events.insert(),
            [
                {"time": e.time, "kind": e.kind, "ip": e.ip, "actor": e.actor, "detail": e.detail}
                for e in items
            ],
        )


def events_of(conn: Connection, ip: str) -> list[Event]:
    query = select(events).where(events.c.ip == ip).order_by(events.c.time, events.c.id)
    return [Event(r.time, r.kind, r.ip, r.actor, r.detail) for r in conn.execute(query)]


# -- device status ---------------------------------------------------------------------------


def device_statuses(conn: Connection) -> dict[tuple[str, str], DeviceStatus]:
    rows = conn.execute(select(device_status).order_by(device_status.c.device))
    return {(r.device, r.vdom): DeviceStatus(**r._asdict()) for r in rows}


def save_device_status(conn: Connection, status: DeviceStatus) -> None:
    """Update the row, or insert it the first time (portable upsert: one writer at a time)."""
    values = {k: getattr(status, k) for k in DeviceStatus.__dataclass_fields__}
    key = and_(device_status.c.device == status.device, device_status.c.vdom == status.vdom)
    _update_or_insert(conn, device_status, key, values, {})


# -- feeds -----------------------------------------------------------------------------------


def feed_states(conn: Connection) -> dict[str, dict[str, Any]]:
    return {r.feed: r._asdict() for r in conn.execute(select(feed_state))}


def save_feed_state(conn: Connection, values: dict[str, Any]) -> None:
    """Update the given columns of a feed's state (insert it if it has none yet)."""
    defaults = {"etag": "", "entries": 0, "matched": 0, "overflow": 0, "changed": 0}
    _update_or_insert(conn, feed_state, feed_state.c.feed == values["feed"], values, defaults)


def feed_consumer_rows(conn: Connection) -> list[dict[str, Any]]:
    query = select(feed_consumers).order_by(feed_consumers.c.feed, feed_consumers.c.last_fetch)
    return [r._asdict() for r in conn.execute(query)]


def record_fetches(conn: Connection, fetches: Iterable[dict[str, Any]]) -> None:
    """Merge in-memory fetch records (one per feed, address, user agent) into the store."""
    for fetch in fetches:
        key = and_(
            feed_consumers.c.feed == fetch["feed"],
            feed_consumers.c.address == fetch["address"],
            feed_consumers.c.user_agent == fetch["user_agent"],
        )
        changed = conn.execute(
            update(feed_consumers)
            .where(key)
            .values(
                last_fetch=fetch["last_fetch"],
                etag=fetch["etag"],
                status=fetch["status"],
                requests=feed_consumers.c.requests + fetch["requests"],
            )
        ).rowcount
        if changed == 0:
            conn.execute(feed_consumers.insert().values(fetch))


# -- bans and allowlist entries ----------------------------------------------------------------


def _network_values(network: IPNetwork) -> dict[str, Any]:
    return {
        "network": str(network),
        "sort_key": sort_key(network.network_address),
        "prefixlen": network.prefixlen,
    }


def active_bans(conn: Connection, now: int) -> list[Ban]:
    query = (
        select(bans)
        .where(or_(bans.c.expires.is_(None), bans.c.expires > now))
        .order_by(bans.c.sort_key, bans.c.prefixlen)
    )
    return [
        Ban(ip_network(r.network), r.created, r.expires, r.provenance, r.actor, r.note)
        for r in conn.execute(query)
    ]


def save_ban(conn: Connection, ban: Ban) -> None:
    values = {
        **_network_values(ban.network),
        "created": ban.created,
        "expires": ban.expires,
        "provenance": ban.provenance,
        "actor": ban.actor,
        "note": ban.note,
    }
    _update_or_insert(conn, bans, bans.c.network == values["network"], values, {})


def delete_bans_within(conn: Connection, network: IPNetwork) -> list[str]:
    """Remove the bans equal to or inside ``network``; returns what was removed."""
    rows = conn.execute(select(bans.c.network)).scalars().all()
    inside = [n for n in rows if _within(ip_network(n), network)]
    for chunk in _chunks(inside):
        conn.execute(delete(bans).where(bans.c.network.in_(chunk)))
    return inside


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


def allow_entries(conn: Connection, now: int) -> list[AllowEntry]:
    query = (
        select(allow_entries_table)
        .where(or_(allow_entries_table.c.expires.is_(None), allow_entries_table.c.expires > now))
        .order_by(allow_entries_table.c.sort_key, allow_entries_table.c.prefixlen)
    )
    return [
        AllowEntry(ip_network(r.network), r.created, r.expires, r.actor, r.note)
        for r in conn.execute(query)
    ]


def save_allow_entry(conn: Connection, entry: AllowEntry) -> None:
    values = {
        **_network_values(entry.network),
        "created": entry.created,
        "expires": entry.expires,
        "actor": entry.actor,
        "note": entry.note,
    }
    key = allow_entries_table.c.network == values["network"]
    _update_or_insert(conn, allow_entries_table, key, values, {})


def delete_allow_entry(conn: Connection, network: str) -> bool:
    query = delete(allow_entries_table).where(allow_entries_table.c.network == network)
    return conn.execute(query).rowcount > 0


def set_offender_status(conn: Connection, ip: str, status: str, now: int) -> bool:
    query = update(offenders).where(offenders.c.ip == ip).values(status=status, updated=now)
    return conn.execute(query).rowcount > 0


def events_since(conn: Connection, since: int, kinds: Sequence[str]) -> list[Event]:
    query = (
        select(events)
        .where(events.c.time > since, events.c.kind.in_(list(kinds)))
        .order_by(events.c.time, events.c.id)
    )
    return [Event(r.time, r.kind, r.ip, r.actor, r.detail) for r in conn.execute(query)]


def offenders_expired_between(conn: Connection, start: int, end: int) -> list[tuple[str, int]]:
    """(ip, active_until) of listed offenders whose active_until falls in (start, end]."""
    query = (
        select(offenders.c.ip, offenders.c.active_until)
        .where(offenders.c.active_until > start, offenders.c.active_until <= end)
        .order_by(offenders.c.active_until)
    )
    return [(r.ip, r.active_until) for r in conn.execute(query)]


def count_expired_between(conn: Connection, start: int, end: int) -> int:
    query = (
        select(func.count())
        .select_from(offenders)
        .where(offenders.c.active_until > start, offenders.c.active_until <= end)
    )
    return int(conn.execute(query).scalar_one())


# -- pruning ---------------------------------------------------------------------------------


def prune_history(conn: Connection, before: int) -> tuple[int, int]:
    """Delete offenses and events older than ``before``; returns (offenses, events) deleted.

    Offender rows keep their summary (first/last offense, count), so history can be trimmed
    without changing what is published or how repeat offenders escalate.
    """
    # An offense a device may still list (no expiry, or not expired yet) is kept: deleting it
    # would make the next poll count it as new.
    old_offenses = delete(offenses).where(
        offenses.c.created < before,
        offenses.c.expires.is_not(None),
        offenses.c.expires < before,
    )
    gone_offenses = conn.execute(old_offenses).rowcount
    gone_events = conn.execute(delete(events).where(events.c.time < before)).rowcount
    return gone_offenses, gone_events


def delete_expired_offenders(conn: Connection, before: int) -> list[str]:
    """Remove offenders whose active_until passed before ``before`` and have no offense left."""
    candidates = (
        conn.execute(
            select(offenders.c.ip).where(
                offenders.c.active_until.is_not(None), offenders.c.active_until < before
            )
        )
        .scalars()
        .all()
    )
    removable = []
    for chunk in _chunks(list(candidates)):
        still = set(conn.execute(select(offenses.c.ip).where(offenses.c.ip.in_(chunk))).scalars())
        removable += [ip for ip in chunk if ip not in still]
    for chunk in _chunks(removable):
        conn.execute(delete(offenders).where(offenders.c.ip.in_(chunk)))
    return removable


def _active(now: int) -> Any:
    return and_(
        offenders.c.status == "listed",
        or_(offenders.c.active_until.is_(None), offenders.c.active_until > now),
    )


def count_active_between(conn: Connection, low: bytes, high: bytes, now: int) -> int:
    """Active offenders whose sort key lies in [low, high] (one prefix's addresses)."""
    query = (
        select(func.count())
        .select_from(offenders)
        .where(_active(now), offenders.c.sort_key >= low, offenders.c.sort_key <= high)
    )
    return int(conn.execute(query).scalar_one())


def count_ranked_above(conn: Connection, last_offense: int, offense_count: int, now: int) -> int:
    """Active offenders a capped feed keeps before this one (more recent, then more repeated)."""
    query = (
        select(func.count())
        .select_from(offenders)
        .where(
            _active(now),
            or_(
                offenders.c.last_offense > last_offense,
                and_(
                    offenders.c.last_offense == last_offense,
                    offenders.c.offense_count > offense_count,
                ),
            ),
        )
    )
    return int(conn.execute(query).scalar_one())


# -- pushes ----------------------------------------------------------------------------------


def record_pushes(
    conn: Connection, device: str, ips: Sequence[str], now: int, expires: int
) -> None:
    """Remember quarantines banfeed placed on ``device`` (replacing older records)."""
    for chunk in _chunks(list(ips)):
        conn.execute(delete(pushes).where(pushes.c.device == device, pushes.c.ip.in_(chunk)))
    bulk_insert(
        conn,
        pushes,
        ("device", "ip", "pushed", "expires"),
        [(device, ip, now, expires) for ip in ips],
    )
    conn.execute(delete(pushes).where(pushes.c.expires < now))


def pushed_to(conn: Connection, device: str, since: int) -> dict[str, tuple[int, int]]:
    """``ip -> (pushed, expires)`` for quarantines banfeed placed on ``device`` that were still
    running at ``since``: bounded by what was pushed, not by what the device lists."""
    query = select(pushes).where(pushes.c.device == device, pushes.c.expires >= since)
    return {r.ip: (r.pushed, r.expires) for r in conn.execute(query)}
