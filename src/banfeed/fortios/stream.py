"""A ``user/banned`` answer parsed as it is read, never held as one tree of JSON objects.

``json.loads`` of a large answer builds every entry's dict before the first becomes an
:class:`Offense`: 370 bytes of objects per 100-byte entry, on top of the text, so a 200 MB
answer peaked at 5× its size in the client (bench/device_memory.py). Here the document's
envelope is walked by hand and each list of entries is decoded :data:`BATCH` entries at a
time (``JSONDecoder.raw_decode`` for each value, the same decoder ``json.loads`` uses), each
batch parsed and let go before the next: the text and the offenses, never the tree as well.

The result is exactly :func:`.parse.diffed_lists` of ``json.loads(text)`` (a property test
holds them equal) but in two cases, both refused either way: an object holding ``results``
twice (``json.loads`` keeps the last; this refuses it), and a text that is not JSON past a
first error of shape (``json.loads`` names the bad JSON; this names what it met first, the
rest unread, without decoding the whole text a second time).

FortiOS writes ``vdom`` after ``results``: the entries are parsed as the VDOM that was asked
for, and in the rare answer that names another (or with ``vdom="*"``), read again once the
object's ``vdom`` is known.
"""

from __future__ import annotations

import json
import re
from typing import Any

from ..errors import DeviceBadResponse
from ..models import VdomList
from .diff import Keys, remembered
from .parse import EntryBatch, _kind, checked_vdom, gc_paused, undecodable

BATCH = 4096  # entries decoded before they are parsed: a few hundred kB of dicts at a time
_SPACE = re.compile(r"[ \t\n\r]*")
_BLANK = frozenset(" \t\n\r")  # "" (the end of the text) is no blank
_DECODER = json.JSONDecoder()


def streamed_lists(
    device: str, vdom: str, text: str, *, now: int, known: Keys | None
) -> tuple[list[VdomList], Keys]:
    """:func:`.parse.diffed_lists` of ``text`` (a ``user/banned`` answer), parsed as read."""
    try:
        with gc_paused():
            return _Walk(device, vdom, text, now, known).document()
    except (RecursionError, MemoryError, ValueError, OverflowError, TypeError) as exc:
        reason = undecodable(exc, len(text))
    raise DeviceBadResponse(device, f"answer is {reason}")


class _Walk:
    def __init__(self, device: str, vdom: str, text: str, now: int, known: Keys | None) -> None:
        self.device, self.requested, self.text = device, vdom, text
        self.now, self.known = now, known
        self.at = 0

    def document(self) -> tuple[list[VdomList], Keys]:
        keys: list[Keys] = []
        lists: list[VdomList] = []
        self._space()
        if self._peek() == "[":  # one response object per VDOM
            self.at += 1
            for _index in self._items("]"):
                if self._peek() != "{":
                    raise self._not_object()
                lists.append(self._object(keys))
        elif self._peek() == "{":
            lists.append(self._object(keys))
        else:
            raise self._not_object()
        self._space()
        if self.at != len(self.text):
            raise self._invalid("Extra data")
        return lists, remembered(keys)

    def _not_object(self) -> DeviceBadResponse:
        value = self._value()  # decoded only to be named, as the document path names it
        return DeviceBadResponse(
            self.device, f"wrong JSON shape: expected an object, got {_kind(value)}"
        )

    # -- one response object ---------------------------------------------------------------

    def _object(self, keys: list[Keys]) -> VdomList:
        self.at += 1  # the "{"
        fields: dict[str, Any] = {}
        batch: EntryBatch | None = None
        results_at: int | None = None
        for _index in self._items("}"):
            key = self._value()
            if not isinstance(key, str):
                raise self._invalid("Expecting property name enclosed in double quotes")
            self._space()
            if self._peek() != ":":
                raise self._invalid("Expecting ':' delimiter")
            self.at += 1
            self._space()
            if key != "results":
                fields[key] = self._value()
            elif "results" in fields or results_at is not None:
                raise DeviceBadResponse(self.device, "wrong JSON shape: 'results' given twice")
            elif self._peek() == "[":
                results_at = self.at
                batch = self._entries(self.requested)
            else:
                fields["results"] = self._value()
        results = [] if results_at is not None else fields.get("results")
        vdom = checked_vdom(self.device, self.requested, fields, results)
        assert batch is not None and results_at is not None  # checked_vdom: results a list
        if vdom != batch.vdom:  # parsed as the VDOM asked for, and the answer names another
            end, self.at = self.at, results_at
            batch = self._entries(vdom)
            self.at = end
        keys.append(batch.keys())
        return batch.result()

    def _entries(self, vdom: str) -> EntryBatch:
        """The array of entries at ``self.at``, decoded and parsed a batch at a time."""
        batch = EntryBatch(self.device, vdom, self.now, self.known)
        text, decode, space = self.text, _DECODER.raw_decode, _SPACE.match
        self.at += 1  # the "["
        self._space()
        pending: list[Any] = []
        offset = 0
        if self._peek() != "]":
            at = self.at
            # The grammar of _items inline: a million entries make its per-item cost count.
            while True:
                value, at = decode(text, at)
                pending.append(value)
                if len(pending) == BATCH:
                    batch.parse(pending, offset)
                    offset += BATCH
                char = text[at : at + 1]
                if char in _BLANK:
                    at = space(text, at).end()  # type: ignore[union-attr]
                    char = text[at : at + 1]
                if char == ",":
                    at += 1
                    if text[at : at + 1] in _BLANK:
                        at = space(text, at).end()  # type: ignore[union-attr]
                    continue
                self.at = at
                if char != "]":
                    raise self._invalid("Expecting ',' delimiter")
                break
        self.at += 1  # the "]"
        batch.parse(pending, offset)
        return batch

    # -- the JSON grammar of arrays and objects, values by json's own decoder ----------------

    def _items(self, close: str) -> Any:
        """Yield once per item of the array or object just opened; ``self.at`` is at each
        item's start when yielded, and after ``close`` at the end."""
        self._space()
        if self._peek() == close:
            self.at += 1
            return
        index = 0
        while True:
            yield index
            index += 1
            self._space()
            char = self._peek()
            if char == close:
                self.at += 1
                return
            if char != ",":
                raise self._invalid("Expecting ',' delimiter")
            self.at += 1
            self._space()

    def _value(self) -> Any:
        value, self.at = _DECODER.raw_decode(self.text, self.at)
        return value

    def _space(self) -> None:
        match = _SPACE.match(self.text, self.at)
        assert match is not None  # `*` always matches
        self.at = match.end()

    def _peek(self) -> str:
        return self.text[self.at : self.at + 1]

    def _invalid(self, what: str) -> json.JSONDecodeError:
        return json.JSONDecodeError(what, self.text, self.at)
