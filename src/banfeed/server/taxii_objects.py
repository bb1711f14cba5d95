"""The objects of a feed's TAXII 2.1 collection (docs/sharing.md, "TAXII 2.1").

A collection is the served STIX bundle of its feed (or shard): its identity and one indicator
per line, each in the one version the bundle carries. An object's ``date_added`` is its
``modified``: the served version's publication, or later when what is behind its line changed
since (``publish/stix.py``), so ``added_after`` returns exactly the object versions that came
after it; the identity is dated by the publication. :func:`index_of` cuts the cached bundle into
objects once per rendering (byte ranges into the same bytes, nothing copied); a page is a join
of those ranges, so a 100,000-line feed pages without rendering anything again.

``next`` names the feed version and an offset: the lines and their order are those of the
version, so the offset stays right while the store moves (a page then carries the refreshed
facts of the same lines); a ``next`` of another version is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..errors import InputError
from ..publish.stix import STIX_MEDIA_TYPE, stamp

DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000


class TaxiiQueryError(InputError):
    """A TAXII query parameter cannot be used (answered 400)."""


@dataclass(frozen=True, slots=True)
class StixObject:
    id: str
    type: str
    version: str  # its modified: the one version the collection holds
    added: int  # its date_added: its modified, and never before the served version
    spec_version: str
    start: int  # byte range in the bundle
    end: int


@dataclass(frozen=True, slots=True)
class CollectionIndex:
    body: bytes  # the cached bundle (the same bytes object the feed cache keeps)
    objects: tuple[StixObject, ...]
    by_id: Mapping[str, int]
    number: int  # the feed version, for next
    etag: str


def index_of(body: bytes, added: int, number: int, etag: str) -> CollectionIndex:
    """The bundle's objects and where each lies in ``body`` (parsed once, in a worker thread);
    ``added``: when the served version was published, the earliest ``date_added``."""
    text = body.decode("utf-8")
    ascii_only = len(text) == len(body)  # then character and byte offsets are the same
    decoder = json.JSONDecoder()
    pos = text.index("[", text.index('"objects"')) + 1
    objects: list[StixObject] = []
    char_at, byte_at = 0, 0
    moments: dict[str, int] = {}  # many objects share a modified: parse each once
    while True:
        pos = _skip(text, pos)
        if text[pos] == "]":
            break
        found, end = decoder.raw_decode(text, pos)
        if ascii_only:
            start_byte, end_byte = pos, end
        else:
            start_byte = byte_at + len(text[char_at:pos].encode())
            end_byte = start_byte + len(text[pos:end].encode())
            char_at, byte_at = end, end_byte
        version = found.get("modified", found.get("created", ""))
        moment = moments.get(version)
        if moment is None:
            stamped = int(_timestamp(version, "modified")) if version else added
            moment = moments[version] = max(stamped, added)
        objects.append(
            StixObject(
                found["id"],
                found["type"],
                version,
                moment,
                found.get("spec_version", "2.1"),
                start_byte,
                end_byte,
            )
        )
        pos = _skip(text, end)
        if text[pos] == ",":
            pos += 1
    by_id = {o.id: at for at, o in enumerate(objects)}
    return CollectionIndex(body, tuple(objects), by_id, number, etag)


def _skip(text: str, pos: int) -> int:
    """Past JSON whitespace."""
    while text[pos] in " \t\n\r":
        pos += 1
    return pos


@dataclass(frozen=True, slots=True)
class Query:
    """The filters and page of one request, parsed at the edge."""

    limit: int = DEFAULT_LIMIT
    next: tuple[int, int] | None = None  # (feed version, offset)
    added_after: float | None = None
    ids: frozenset[str] | None = None
    types: frozenset[str] | None = None
    versions: tuple[str, ...] = ("last",)  # first, last, all or timestamps
    spec_versions: frozenset[str] | None = None


def parse_query(params: Mapping[str, str], object_id: str | None = None) -> Query:
    """The query of ``params``; ``object_id``: the one object of an object's endpoint."""
    limit = DEFAULT_LIMIT
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            raise TaxiiQueryError(f"limit: not an integer: {params['limit']!r}") from None
        if limit < 1:
            raise TaxiiQueryError(f"limit: must be at least 1, not {limit}")
    after = params.get("added_after")
    versions = tuple(_values(params, "match[version]") or ("last",))
    for version in versions:
        if version not in ("first", "last", "all"):
            _timestamp(version, "match[version]")
    ids = frozenset(_values(params, "match[id]")) or None
    if object_id is not None:
        ids = frozenset({object_id})
    return Query(
        limit=min(limit, MAX_LIMIT),
        next=_cursor(params["next"]) if params.get("next") else None,
        added_after=_timestamp(after, "added_after") if after else None,
        ids=ids,
        types=frozenset(_values(params, "match[type]")) or None,
        versions=versions,
        spec_versions=frozenset(_values(params, "match[spec_version]")) or None,
    )


def _values(params: Mapping[str, str], key: str) -> list[str]:
    return [v.strip() for v in params.get(key, "").split(",") if v.strip()]


def _timestamp(text: str, what: str) -> float:
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z"))
    except ValueError:
        raise TaxiiQueryError(f"{what}: not a timestamp: {text!r}") from None
    if moment.tzinfo is None:
        raise TaxiiQueryError(f"{what}: a timestamp needs its zone (…Z): {text!r}")
    return moment.timestamp()


def _cursor(text: str) -> tuple[int, int]:
    number, _, offset = text.partition("-")
    try:
        return int(number.removeprefix("v")), int(offset)
    except ValueError:
        raise TaxiiQueryError(f"next: not a value this server gave: {text!r}") from None


def selected(index: CollectionIndex, query: Query) -> Sequence[int]:
    """The positions of the objects the query's filters keep, in the bundle's order."""
    if query.ids is not None:
        positions: Sequence[int] = sorted(index.by_id[i] for i in query.ids if i in index.by_id)
    else:
        positions = range(len(index.objects))
    after = query.added_after
    if after is not None:
        positions = [at for at in positions if index.objects[at].added > after]
    if query.types is None and query.spec_versions is None and _any_version(query):
        return positions
    times: dict[str, float] = {}
    wanted = [_timestamp(v, "match[version]") for v in query.versions if v[0].isdigit()]
    kept = []
    for at in positions:
        found = index.objects[at]
        if query.types is not None and found.type not in query.types:
            continue
        if query.spec_versions is not None and found.spec_version not in query.spec_versions:
            continue
        if not _any_version(query):
            moment = times.get(found.version)
            if moment is None:
                moment = times[found.version] = _timestamp(found.version, "modified")
            if moment not in wanted:
                continue
        kept.append(at)
    return kept


def _any_version(query: Query) -> bool:
    """first, last and all name the one version each object has."""
    return any(v in ("first", "last", "all") for v in query.versions)


@dataclass(frozen=True, slots=True)
class Page:
    positions: Sequence[int]
    next: str | None  # None: the last page


def page_of(index: CollectionIndex, query: Query) -> Page:
    """The page ``query`` asks for; a ``next`` of another feed version raises."""
    offset = 0
    if query.next is not None:
        number, offset = query.next
        if number != index.number:
            raise TaxiiQueryError(
                f"next: the collection changed since that page (feed version {number}, now "
                f"{index.number}): start again without next, with added_after"
            )
    positions = selected(index, query)
    if offset > len(positions):
        raise TaxiiQueryError(f"next: past the end of the collection ({len(positions)} objects)")
    end = offset + query.limit
    more = end < len(positions)
    return Page(positions[offset:end], f"v{index.number}-{end}" if more else None)


def envelope(index: CollectionIndex, page: Page) -> bytes:
    """The TAXII envelope of a page: the objects' own bytes, joined."""
    head = b'{"more":' + (b"true" if page.next else b"false")
    if page.next:
        head += b',"next":' + json.dumps(page.next).encode()
    if not page.positions:
        return head + b"}"
    body, objects = index.body, index.objects
    parts = b",".join(body[objects[at].start : objects[at].end] for at in page.positions)
    return head + b',"objects":[' + parts + b"]}"


def manifest(index: CollectionIndex, page: Page) -> bytes:
    records = [
        {
            "id": index.objects[at].id,
            "date_added": stamp(index.objects[at].added),
            "version": index.objects[at].version,
            "media_type": STIX_MEDIA_TYPE,
        }
        for at in page.positions
    ]
    document: dict[str, object] = {"more": page.next is not None}
    if page.next:
        document["next"] = page.next
    if records:
        document["objects"] = records
    return json.dumps(document).encode()


def added_range(index: CollectionIndex, positions: Sequence[int]) -> tuple[str, str] | None:
    """The earliest and latest ``date_added`` of the objects at ``positions`` (the
    X-TAXII-Date-Added-First/Last headers); None for none."""
    if not positions:
        return None
    moments = [index.objects[at].added for at in positions]
    return stamp(min(moments)), stamp(max(moments))


def versions(index: CollectionIndex, query: Query) -> tuple[bytes, Sequence[int]]:
    """The versions document of the object asked, and the positions it names."""
    kept = selected(
        index,
        Query(
            ids=query.ids,
            added_after=query.added_after,
            spec_versions=query.spec_versions,
            versions=("all",),
        ),
    )
    document: dict[str, object] = {"more": False}
    if kept:
        document["versions"] = [index.objects[at].version for at in kept]
    return json.dumps(document).encode(), kept
