"""Helpers shared by the query modules: row <-> record conversions, chunking, portable upserts.

Private to ``store/``: nothing outside this package sees a Connection or a Row.
"""

from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import Connection, Row, Table, and_, bindparam, or_, select, update

from ..models import Offender, OffenderStatus, Offense
from ..net import address_from_sort_key, sort_key
from .schema import offenders

CHUNK = 500  # bound parameters per IN (...) list: well inside SQLite's and PostgreSQL's limits
BIG_CHUNK = 5000  # values per expanded IN list: under SQLite's 32,766 and PostgreSQL's 65,535


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def update_or_insert(
    conn: Connection, table: Any, where: Any, values: dict[str, Any], defaults: dict[str, Any]
) -> None:
    """Update the row matching ``where``, or insert it (with ``defaults`` under ``values``).
    Portable: no dialect's upsert; concurrent first inserts surface as ConflictError."""
    if conn.execute(update(table).where(where).values(values)).rowcount == 0:
        conn.execute(table.insert().values({**defaults, **values}))


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
    "changed",
)


@functools.lru_cache(maxsize=4096)
def _json_list(items: tuple[str, ...]) -> str:
    # A fleet has few distinct (sources, devices, vdoms) combinations: encode each once.
    return json.dumps(items)


@functools.lru_cache(maxsize=8192)
def _json_tuple(text: str) -> tuple[str, ...]:
    # The same few lists ('["IPS"]', '["edge-1"]') repeat over a whole table: decode each once.
    return tuple(json.loads(text))


def offender_tuple(
    offender: Offender, updated: int, changed: int, ip_text: str | None = None
) -> tuple[Any, ...]:
    """The row of ``offender`` in OFFENDER_COLUMNS order (``changed``: the store version of the
    write)."""
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
        str(offender.status),
        offender.note,
        updated,
        changed,
    )


@functools.lru_cache(maxsize=4096)
def _first_lists(source: str, device: str, vdom: str) -> tuple[str, str, str]:
    # sources, devices and vdoms of a first offender: the same few texts for a whole ingest
    return _json_list((source,)), _json_list((device,)), _json_list((f"{device}/{vdom}",))


_LISTED = OffenderStatus.LISTED.value


def first_offender_tuple(
    offense: Offense, ip_text: str, active_until: int | None, updated: int, changed: int
) -> tuple[Any, ...]:
    """The row of the offender an address new to the store gets from its one ``offense``:
    ``offender_tuple`` of that offender (``ingest.first_offender``; a test checks they agree),
    without building it."""
    o = offense
    ip = o.ip
    sources, devices, vdoms = _first_lists(o.source, o.device, o.vdom)
    return (
        ip_text,
        sort_key(ip),
        ip.version,
        o.created,
        o.created,
        1,
        sources,
        devices,
        vdoms,
        active_until,
        _LISTED,
        None,
        updated,
        changed,
    )


_STATUS = {s.value: s for s in OffenderStatus}  # cheaper than OffenderStatus(text) per row


def offender_from_row(row: Row[Any]) -> Offender:
    return Offender(
        ip=address_from_sort_key(row.sort_key),
        first_offense=row.first_offense,
        last_offense=row.last_offense,
        offense_count=row.offense_count,
        sources=_json_tuple(row.sources),
        devices=_json_tuple(row.devices),
        vdoms=_json_tuple(row.vdoms),
        active_until=row.active_until,
        status=_STATUS[row.status],
        note=row.note,
    )


# One statement, compiled once, expanded per call: large lookups cost the database's time only.
BY_IP = select(offenders).where(offenders.c.ip.in_(bindparam("ips", expanding=True)))
BY_IP_LOCKED = BY_IP.with_for_update()


def active(now: int) -> Any:
    """Listed and not expired at ``now``: the one SQL form of the active predicate."""
    return and_(
        offenders.c.status == OffenderStatus.LISTED.value,
        or_(offenders.c.active_until.is_(None), offenders.c.active_until > now),
    )


ROWS_PER_EXECUTE = 20000  # rows built and sent per executemany: bounded memory, same speed


def bulk_insert(
    conn: Connection, table: Table, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]
) -> None:
    """Insert many rows of plain values through the driver's ``executemany``, a bounded
    number at a time (``rows`` may be a generator: a large ingest never holds all its rows).

    SQLAlchemy's executemany builds a parameter dict per row through the compiler, which costs
    more than the database's own work on a large first ingest. The statement is still compiled
    by SQLAlchemy for the connection's dialect, so this stays portable.
    """
    compiled = table.insert().compile(dialect=conn.dialect, column_keys=list(columns))
    order: list[int] | None = None
    if compiled.positional:
        order = [list(columns).index(name) for name in compiled.positiontup or ()]
        if order == list(range(len(columns))):
            order = None  # the rows are the parameters as they are
    statement = str(compiled)
    for batch in _batched(rows):
        params: list[Any]
        if not compiled.positional:
            params = [dict(zip(columns, row, strict=True)) for row in batch]
        elif order is None:
            params = batch
        else:
            params = [tuple(row[i] for i in order) for row in batch]
        conn.exec_driver_sql(statement, params)


def _batched(rows: Iterable[tuple[Any, ...]]) -> Iterator[list[tuple[Any, ...]]]:
    it = iter(rows)
    while batch := list(itertools.islice(it, ROWS_PER_EXECUTE)):
        yield batch


def driver_rows(conn: Connection, query: Any, size: int = 20000) -> Iterator[list[tuple[Any, ...]]]:
    """The rows of ``query`` as the driver's plain tuples, ``size`` at a time, in the current
    transaction: a million narrow rows without a SQLAlchemy Row each (3x faster on SQLite).
    PostgreSQL streams them through a server-side cursor, so memory stays bounded."""
    compiled = query.compile(dialect=conn.dialect)
    params: Any = compiled.params
    if compiled.positional:
        params = tuple(compiled.params[name] for name in compiled.positiontup or ())
    dbapi = conn.connection.driver_connection
    assert dbapi is not None
    if conn.dialect.name == "postgresql":
        cursor = dbapi.cursor(name="banfeed_rows")
    else:
        cursor = dbapi.cursor()
    try:
        cursor.execute(str(compiled), params)
        while chunk := cursor.fetchmany(size):
            yield chunk
    finally:
        cursor.close()
