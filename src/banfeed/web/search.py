"""The offenders search of the dashboard and ``GET /api/v1/offenders``: parameters parsed once
into a typed query, the store read in keyset pages, each row's state decided exactly.

Filters mean what they mean for `banfeed list` (``reports.OffenderFilter``); an address or a
network (``q``) selects the addresses inside it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar, Literal, Self, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.responses import StreamingResponse

from .. import reports
from ..errors import InputError
from ..models import Offender, OffenderState
from ..net import IPNetwork, parse_network, sort_key
from ..policy import Allowlist, state
from ..publish.render import CSV_COLUMNS, csv_cell, csv_writer, offender_record
from ..timeutil import iso, parse_moment
from .context import Web

SORTS = (
    "ip",
    "-ip",
    "last_offense",
    "-last_offense",
    "first_offense",
    "-first_offense",
    "offense_count",
    "-offense_count",
)
STATES = ("active", "expired", "suppressed", "unbanned", "any")
MAX_LIMIT = 500
MAX_OFFSET = 10_000  # deeper pages: follow the cursor


class Query(BaseModel):
    """Parameters of a dashboard page and its API twin, parsed once from the query string.
    ``LISTS`` name the fields that take several values (repeated, or comma-separated)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)
    LISTS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def parse(cls, params: Mapping[str, Sequence[str]]) -> Self:
        """From query parameters (repeated ones for the lists); empty values are left out."""
        data: dict[str, Any] = {}
        for key, values in params.items():
            if key in cls.LISTS:  # repeated, or comma-separated in the page's one field
                values = [part for v in values for part in v.split(",")]
            kept = [v.strip() for v in values if v.strip()]
            if kept:
                data[key] = tuple(kept) if key in cls.LISTS else kept[-1]
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "query"
            raise InputError(f"{where}: {first['msg']}") from None

    def params(self, **changes: Any) -> list[tuple[str, str]]:
        """This query as URL parameters (for links to other pages and sorts)."""
        values = self.model_dump() | changes
        pairs: list[tuple[str, str]] = []
        for key, value in values.items():
            items = value if isinstance(value, tuple) else (value,)
            default = type(self).model_fields[key].default
            pairs += [(key, str(v)) for v in items if v != default and v not in ("", ())]
        return pairs

    @classmethod
    def parameters(cls) -> list[dict[str, Any]]:
        """The fields as OpenAPI query parameters (for ``openapi``)."""
        found = []
        for name, field in cls.model_fields.items():
            schema: dict[str, Any] = {"type": "string"}
            choices = get_args(field.annotation)
            if field.annotation is int:
                schema = {"type": "integer", "default": field.default}
            elif name in cls.LISTS:
                item = choices[0] if choices else str
                schema = {"type": "array", "items": {"type": "string"}}
                if isinstance(item, type) and issubclass(item, StrEnum):
                    schema["items"]["enum"] = [str(v) for v in item]
            elif get_origin(field.annotation) is Literal:
                schema = {"type": "string", "enum": list(choices), "default": field.default}
            found.append(
                {
                    "name": name,
                    "in": "query",
                    "required": False,
                    "description": field.description or name,
                    "schema": schema,
                    **({"explode": True} if name in cls.LISTS else {}),
                }
            )
        return found


class OffenderQuery(Query):
    """The parameters of a search, as the page's form and the API take them."""

    LISTS: ClassVar[tuple[str, ...]] = ("cause", "device", "vdom")

    q: str = Field("", max_length=64, description="An address, or a network to search inside.")
    cause: tuple[str, ...] = Field((), description="Any of these causes (case-insensitive).")
    device: tuple[str, ...] = Field((), description="Reported by any of these devices.")
    vdom: tuple[str, ...] = Field((), description='Any of these VDOMs ("dmz" or "edge-1/dmz").')
    state: Literal["active", "expired", "suppressed", "unbanned", "any"] = "active"
    min_offenses: int = Field(1, ge=1, le=1_000_000)
    first_since: str = Field(
        "", max_length=40, description='First seen at or after: "7d" back, or a UTC time.'
    )
    first_until: str = Field("", max_length=40, description="First seen at or before.")
    last_since: str = Field(
        "", max_length=40, description='Last seen at or after: "1h" back, or a UTC time.'
    )
    last_until: str = Field("", max_length=40, description="Last seen at or before.")
    sort: Literal[SORTS] = "ip"  # type: ignore[valid-type]
    limit: int = Field(50, ge=1, le=MAX_LIMIT)
    offset: int = Field(0, ge=0, le=MAX_OFFSET)
    cursor: str = Field("", max_length=200, description="`next` of the previous page.")

    def network(self) -> IPNetwork | None:
        return parse_network(self.q) if self.q else None


@dataclass(frozen=True)
class Row:
    offender: Offender
    state: OffenderState

    def record(self, now: int, allowlist: Allowlist) -> dict[str, Any]:
        return offender_record(self.offender, now, allowlist)


@dataclass(frozen=True)
class Page:
    query: OffenderQuery
    rows: list[Row]
    next: str | None  # the cursor of the next page, if there is one
    now: int
    allowlist: Allowlist

    def record(self) -> dict[str, Any]:
        """The JSON shape of ``GET /api/v1/offenders`` (docs/dashboard.md)."""
        return {
            "offenders": [r.record(self.now, self.allowlist) for r in self.rows],
            "next": self.next,
            "limit": self.query.limit,
            "sort": self.query.sort,
        }


def _cursor(offender: Offender, sort: str) -> str:
    column = sort.lstrip("-")
    value = 0 if column == "ip" else int(getattr(offender, column))
    raw = json.dumps([value, sort, sort_key(offender.ip).hex()]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _after(cursor: str, sort: str) -> tuple[int, bytes] | None:
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, made_for, key = json.loads(raw)
        if made_for != sort or not isinstance(value, int):
            raise ValueError(made_for)
        return value, bytes.fromhex(key)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InputError("cursor: not a cursor of this search; start from the first page") from None


def search(web: Web, query: OffenderQuery) -> Page:
    """One page of offenders matching ``query``, in its order."""
    rt = web.runtime()
    now = rt.now()
    chosen = frozenset() if query.state == "any" else frozenset({OffenderState(query.state)})
    where = reports.OffenderFilter(
        states=chosen,
        within=query.network(),
        causes=query.cause,
        devices=query.device,
        vdoms=query.vdom,
        since=parse_moment(query.last_since, now, "last_since"),
        last_until=parse_moment(query.last_until, now, "last_until"),
        first_since=parse_moment(query.first_since, now, "first_since"),
        first_until=parse_moment(query.first_until, now, "first_until"),
    )
    after = _after(query.cursor, query.sort)
    rows: list[Row] = []
    with rt.store.read() as tx:
        allow = reports.effective_allowlist(rt, tx)
        skipped = 0
        for offender in tx.iter_offenders_sorted(
            sort=query.sort.lstrip("-"),
            descending=query.sort.startswith("-"),
            after=after,
            min_offenses=query.min_offenses,
            where=where.store_filters(now, allow),
        ):
            found = state(offender, now, allow)
            if chosen and found not in chosen:
                continue
            if skipped < query.offset:
                skipped += 1
                continue
            rows.append(Row(offender, found))
            if len(rows) > query.limit:
                break
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = _cursor(rows[-1].offender, query.sort) if more and rows else None
    return Page(query, rows, cursor, now, allow)


# -- CSV export of a search ------------------------------------------------------------------

# `banfeed list --format csv`'s columns first, then what the search page shows besides.
EXPORT_COLUMNS = (*CSV_COLUMNS, "vdoms", "state", "suppressed_by", "note")


def export_query(query: OffenderQuery, size: int = MAX_LIMIT) -> OffenderQuery:
    """The first page of an export: every match of ``query``, whichever page was shown."""
    return query.model_copy(update={"limit": size, "cursor": "", "offset": 0})


def csv_rows(page: Page, *, header: bool) -> str:
    """``page`` as CSV (RFC 4180: CRLF, fields quoted when they hold a comma, quote or line
    break), each cell a spreadsheet would run as a formula prefixed with ``'``."""
    out = io.StringIO()
    writer = csv_writer(out)
    if header:
        writer.writerow(EXPORT_COLUMNS)
    for row in page.rows:
        record = row.record(page.now, page.allowlist)
        writer.writerow([csv_cell(record[c]) for c in EXPORT_COLUMNS])
    return out.getvalue()


async def csv_stream(web: Web, first: Page) -> AsyncIterator[bytes]:
    """The CSV of every match, from ``first`` (a page of :func:`export_query`) on: page after
    page through the keyset cursor, one read transaction each, so memory stays one page
    whatever the result holds. A store error on a later page ends the body early (the
    transfer is then incomplete, never silently short)."""
    page = first
    yield csv_rows(page, header=True).encode("utf-8")
    while page.next is not None:
        following = page.query.model_copy(update={"cursor": page.next})
        page = await asyncio.to_thread(search, web, following)
        yield csv_rows(page, header=False).encode("utf-8")


def csv_response(first: Page, web: Web) -> StreamingResponse:
    """The download of an export whose first page is ``first`` (read before answering, so a
    refused query or a failing store is a plain error status, not a broken file)."""
    day = (iso(first.now) or "")[:10]
    return StreamingResponse(
        csv_stream(web, first),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="banfeed-offenders-{day}.csv"'},
    )
