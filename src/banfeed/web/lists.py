"""The allowlist, bans and events of the dashboard and ``/api/v1``: typed queries, the reads
(the ``reports`` functions and ``Tx`` methods `banfeed allow list`, `bans` and `events` use)
and the writes (``actions.act``; ``control.allow_remove`` for a removal). The pages are
``lists_pages``, their JSON twins ``lists_api``: both render what this module returns.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import Field

from .. import control, reports
from ..errors import InputError
from ..models import Ban, BanOrigin, Event, EventKind
from ..net import IPNetwork, parse_network
from ..policy import AllowKind
from ..timeutil import iso, parse_moment
from .actions import Action, ActionBody, act
from .context import Web
from .search import Query

ListAction = Literal["allow", "remove", "ban", "unban"]
LIST_ACTIONS: tuple[ListAction, ...] = ("allow", "remove", "ban", "unban")
PAGE_OF: dict[ListAction, str] = {
    "allow": "allowlist",
    "remove": "allowlist",
    "ban": "bans",
    "unban": "bans",
}
DONE_WORDS: dict[ListAction, str] = {
    "allow": "allowlisted",
    "remove": "removed from the allowlist:",
    "ban": "banned",
    "unban": "unbanned",
}

EVENT_WINDOW = 10_000  # newest matching events a page is cut from (see event_page)
MAX_BANS_OFFSET = 1_000_000


def list_action(text: str) -> ListAction | None:
    """``text`` as one of the actions, or None."""
    return next((a for a in LIST_ACTIONS if a == text), None)


def _network(text: str, name: str) -> IPNetwork | None:
    if not text:
        return None
    try:
        return parse_network(text)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None


# -- the allowlist ---------------------------------------------------------------------------


class AllowQuery(Query):
    q: str = Field(
        "",
        max_length=64,
        description="Text in the network, who or note; or an "
        "address or network: the entries overlapping it.",
    )


_ORIGINS = {
    AllowKind.CONFIG: "from banfeed.toml [allowlist]",
    AllowKind.PROTECTED: "from banfeed.toml [safety] protect",
    AllowKind.STORE: "added on the dashboard or with banfeed allow add",
}


@dataclass(frozen=True)
class AllowRow:
    network: IPNetwork
    source: AllowKind
    created: int | None = None
    expires: int | None = None
    actor: str | None = None
    note: str | None = None

    @property
    def origin(self) -> str:
        return _ORIGINS[self.source]

    @property
    def removable(self) -> bool:
        return self.source is AllowKind.STORE

    def matches(self, query: AllowQuery) -> bool:
        if not query.q:
            return True
        try:
            wanted = parse_network(query.q)
        except InputError:
            text = query.q.casefold()
            fields = (str(self.network), self.actor or "", self.note or "", self.origin)
            return any(text in f.casefold() for f in fields)
        return wanted.version == self.network.version and wanted.overlaps(self.network)

    def record(self) -> dict[str, Any]:
        return {
            "network": str(self.network),
            "source": self.source.value,
            "origin": self.origin,
            "created": iso(self.created),
            "expires": iso(self.expires),
            "actor": self.actor,
            "note": self.note,
            "removable": self.removable,
        }


def allow_rows(web: Web, query: AllowQuery) -> list[AllowRow]:
    """Every network never published besides never-block: the config's (read-only) and the
    store's unexpired entries, as `banfeed allow list` shows them."""
    rt = web.runtime()
    with rt.store.read() as tx:
        stored = tx.allow_entries(rt.now())
    config = rt.config
    rows = [AllowRow(n, AllowKind.CONFIG) for n in config.allowlist.networks]
    rows += [AllowRow(n, AllowKind.PROTECTED) for n in config.safety.protect]
    rows += [
        AllowRow(e.network, AllowKind.STORE, e.created, e.expires, e.actor, e.note) for e in stored
    ]
    return [r for r in rows if r.matches(query)]


# -- bans ------------------------------------------------------------------------------------


class BanQuery(Query):
    origin: Literal["any", "manual", "imported"] = Field("any", description="Whose bans.")
    state: Literal["active", "expired", "all"] = Field("active", description="Expired or not.")
    network: str = Field("", max_length=64, description="Bans inside it or containing it.")
    limit: int = Field(200, ge=1, le=1000, description="Rows per page.")
    offset: int = Field(0, ge=0, le=MAX_BANS_OFFSET, description="`next` of the previous page.")


@dataclass(frozen=True)
class BanPage:
    query: BanQuery
    bans: list[Ban]
    total: int
    now: int

    @property
    def next(self) -> int | None:
        following = self.query.offset + len(self.bans)
        return following if following < self.total else None

    def record(self) -> dict[str, Any]:
        return {
            "bans": [reports.ban_record(b, self.now) for b in self.bans],
            "total": self.total,
            "next": self.next,
            "limit": self.query.limit,
        }


def ban_page(web: Web, query: BanQuery) -> BanPage:
    """Manual and imported bans, numeric order, filtered like `banfeed bans`; one page."""
    rt = web.runtime()
    now = rt.now()
    overlapping = _network(query.network, "network")
    with rt.store.read() as tx:
        found = reports.list_bans(
            tx,
            now,
            origin=None if query.origin == "any" else BanOrigin(query.origin),
            which=query.state,
            overlapping=overlapping,
        )
    shown = found[query.offset : query.offset + query.limit]
    return BanPage(query, shown, len(found), now)


# -- events ----------------------------------------------------------------------------------


class EventQuery(Query):
    LISTS: ClassVar[tuple[str, ...]] = ("kind",)

    actor: str = Field("", max_length=64, description="Only events by this user.")
    kind: tuple[EventKind, ...] = Field((), description="Only these kinds.")
    address: str = Field("", max_length=64, description="About this address or network.")
    since: str = Field("", max_length=40, description='At or after: "1d" back, or a UTC time.')
    until: str = Field("", max_length=40, description='At or before: "1h" back, or a UTC time.')
    limit: int = Field(100, ge=1, le=500, description="Rows per page.")
    cursor: str = Field("", max_length=100, description="`next` of the previous page.")


def _event_cursor(time: int, skip: int) -> str:
    raw = json.dumps([time, skip]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _event_after(cursor: str) -> tuple[int, int] | None:
    if not cursor:
        return None
    try:
        time, skip = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(time, int) or not isinstance(skip, int) or skip < 0:
            raise ValueError(cursor)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise InputError("cursor: not a cursor of this list; start from the first page") from None
    return time, skip


@dataclass(frozen=True)
class EventPage:
    query: EventQuery
    events: list[Event]
    next: str | None
    window_full: bool  # the newest EVENT_WINDOW matches were read; older ones are not paged

    def record(self) -> dict[str, Any]:
        return {
            "events": [reports.event_record(e) for e in self.events],
            "next": self.next,
            "limit": self.query.limit,
            "window_full": self.window_full,
        }


def event_page(web: Web, query: EventQuery) -> EventPage:
    """One page of the audit log, newest first, filtered like `banfeed events` (actor, kinds,
    address, since in SQL) and ``until``.

    Paging is a keyset over (time, place among the events of that second): the cursor is the
    time of the last row shown and how many rows of that second were shown, so new events never
    shift a later page. The store answers ``reports.audit_events`` (the newest ``limit``
    matches, no upper time bound), so a page is cut from the newest ``EVENT_WINDOW`` matches:
    memory stays bounded; older events are `banfeed events --limit 0`'s (``window_full``)."""
    rt = web.runtime()
    now = rt.now()
    since = parse_moment(query.since, now, "since")
    until = parse_moment(query.until, now, "until")
    about = _network(query.address, "address")
    start = _event_after(query.cursor) or (None if until is None else (until, 0))
    with rt.store.read() as tx:
        window = reports.audit_events(
            tx,
            actor=query.actor or None,
            kinds=query.kind,
            since=since,
            about=about,
            limit=EVENT_WINDOW,
        )[::-1]
    rows: list[Event] = []
    skipped = 0  # rows of the cursor's second already shown on earlier pages
    for event in window:
        if start is not None:
            if event.time > start[0]:
                continue
            if event.time == start[0] and skipped < start[1]:
                skipped += 1
                continue
        rows.append(event)
        if len(rows) > query.limit:
            break
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    cursor = None
    if more:
        last = rows[-1].time
        same = sum(1 for e in rows if e.time == last)
        cursor = _event_cursor(last, same + (start[1] if start and start[0] == last else 0))
    return EventPage(query, rows, cursor, len(window) == EVENT_WINDOW and not more)


# -- writes ----------------------------------------------------------------------------------


def do(web: Web, action: ListAction, body: ActionBody, actor: str) -> dict[str, Any]:
    """Do ``action`` as ``actor``: allow, ban and unban are the offender page's actions (the
    functions `banfeed allow add`, `ban` and `unban` call); remove is `banfeed allow remove`."""
    if action != "remove":
        kept: Action = action
        return act(web, kept, body, actor)
    if body.note:  # refused rather than dropped: control.allow_remove records no note
        raise InputError("note: a removal records no note; send the target alone")
    rt = web.runtime()
    network = parse_network(body.target)
    control.allow_remove(rt.store, str(network), actor=actor, now=rt.now())
    return {
        "done": f"removed {network} from the allowlist",
        "actor": actor,
        "network": str(network),
    }
