"""STIX 2.1 rendering of a published feed (``/feeds/NAME.stix.json``, docs/sharing.md).

A bundle: one ``identity`` (this banfeed, ``[server] stix_identity``), then one ``indicator``
per published line, in the feed's order. Each line's facts are those of the active offenders it
covers (:meth:`Publisher.covered_written`, what CSV and JSON list) and of the bans it
overlaps: ``valid_from`` the earliest first offense or ban, ``valid_until`` the latest
``active_until`` or ban expiry (none when one of them is forever), ``labels`` the causes;
``modified`` the publication of the served version, or later when one of those offenders' rows
was written or one of those bans made since (the content moved: a new version of the object).

Ids are uuid5 over the feed's name and the line, so a consumer sees the same indicator in every
version and in the shard that carries it. The indicators are written as JSON directly, in the
shape and property order of the ``stix2`` library: a ``stix2`` object per line costs 0.9 ms
(90 s for 100,000 lines), this 3 s, half of it reading the offenders as JSON does. The library
builds the identity, which also makes it the check that the ``banfeed[stix]`` extra is there.
tests/test_stix.py reads every document back with ``stix2.parse`` and the official
``stix2-validator``. A line no active offender or ban explains any more (a pinned or held
version) is valid from the version's publication, with no end.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from .. import spans
from ..errors import BanfeedError
from ..models import Ban, Written
from ..net import IPNetwork
from ..timeutil import iso
from .lines import Family, Lines
from .publisher import Served

STIX_FORMAT = "stix.json"  # /feeds/NAME.stix.json
STIX_MEDIA_TYPE = "application/stix+json;version=2.1"
DEFAULT_IDENTITY = "banfeed"
# Every id banfeed gives a STIX object is uuid5 in this namespace (fixed forever: changing it
# changes every indicator's id for every consumer).
NAMESPACE = uuid.UUID("6b1c2f0e-3d4a-5b8c-9e7f-1a2b3c4d5e6f")
# The identity's created and modified: it never changes (another name is another identity).
IDENTITY_TIME = "1970-01-01T00:00:00.000Z"
INSTALL_HINT = "STIX needs the banfeed[stix] extra: pip install 'banfeed[stix]'"


class StixUnavailable(BanfeedError):
    """The ``stix2`` library (the ``banfeed[stix]`` extra) is not installed."""


@dataclass
class _Facts:
    """One family's lines' facts, index for index with its lines."""

    first: list[int | None]
    until: list[int | None]
    forever: list[bool]
    causes: list[set[str]] = field(default_factory=list)
    # When what is behind the line last changed (an offender's row written, a ban made): what
    # moves its ``modified``.
    latest: list[int] = field(default_factory=list)

    @classmethod
    def empty(cls, n: int) -> _Facts:
        return cls([None] * n, [None] * n, [False] * n, [set() for _ in range(n)], [0] * n)

    def add(self, at: int, first: int, until: int | None, causes: Iterable[str], made: int) -> None:
        if made > self.latest[at]:
            self.latest[at] = made
        known = self.first[at]
        self.first[at] = first if known is None else min(known, first)
        if until is None:
            self.forever[at] = True
        else:
            known_until = self.until[at]
            self.until[at] = until if known_until is None else max(known_until, until)
        self.causes[at].update(c.strip().lower() for c in causes if c.strip())


def stamp(epoch: int) -> str:
    """A STIX timestamp: UTC, milliseconds, clamped like every time banfeed shows."""
    text = iso(epoch)
    assert text is not None
    return text[:-1] + ".000Z"


TAXII_API_ROOT = "/taxii2/feeds/"  # the one API root of the TAXII server (server/taxii.py)


@lru_cache(maxsize=1024)  # asked for each listed name on every collection request
def collection_id(name: str) -> str:
    """A TAXII collection's id: uuid5 of its feed's (or shard's) name, the same on every
    replica and after a restart."""
    return str(uuid.uuid5(NAMESPACE, "collection\n" + name))


def collection_path(name: str) -> str:
    """Where the feed's (or shard's) TAXII collection is served."""
    return f"{TAXII_API_ROOT}collections/{collection_id(name)}/"


def indicator_id(feed: str, line: str) -> str:
    """The same for a line of a feed in every version and shard."""
    return "indicator--" + str(uuid.uuid5(NAMESPACE, feed + "\n" + line))


def _stix2() -> Any:
    try:
        return importlib.import_module("stix2")
    except ImportError:
        raise StixUnavailable(INSTALL_HINT) from None


@lru_cache(maxsize=8)
def identity(name: str) -> str:
    """The identity object, serialized by ``stix2`` (raises StixUnavailable without it)."""
    made = _stix2().v21.Identity(
        id="identity--" + str(uuid.uuid5(NAMESPACE, "identity\n" + name)),
        name=name,
        identity_class="system",
        created=IDENTITY_TIME,
        modified=IDENTITY_TIME,
    )
    text: str = made.serialize()
    return text


def line_facts(
    lines: Lines, offenders: Iterable[Written], bans: Sequence[Ban]
) -> tuple[_Facts, _Facts]:
    """Per line (IPv4, IPv6): the facts of the offenders it covers and the bans it overlaps."""
    families = lines.families
    facts = tuple(_Facts.empty(len(fam)) for fam in families)
    ends = tuple(fam.ends() for fam in families)
    for offender, written in offenders:
        k = 0 if offender.ip.version == 4 else 1
        value = int(offender.ip)
        at = int(np.searchsorted(families[k].start, value, side="right")) - 1
        if at >= 0 and value <= ends[k][at]:
            facts[k].add(
                at,
                offender.first_offense,
                offender.active_until,
                offender.sources,
                written,
            )
    for ban in bans:
        k = 0 if ban.network.version == 4 else 1
        for at in _overlapping(families[k], ends[k], ban.network):
            facts[k].add(
                at, ban.created, ban.expires, (f"{ban.provenance.value}-ban",), ban.created
            )
    return facts[0], facts[1]


def _overlapping(fam: Family, ends: spans.Array, network: IPNetwork) -> range:
    low, high = int(network.network_address), int(network.broadcast_address)
    first = int(np.searchsorted(fam.start, low, side="right")) - 1
    if first < 0 or ends[first] < low:
        first += 1
    return range(first, int(np.searchsorted(fam.start, high, side="right")))


def stix_pieces(
    shown: Served, offenders: Iterable[Written], bans: Sequence[Ban], identity_name: str
) -> Iterator[bytes]:
    """The bundle of the served version as UTF-8 pieces (about a thousand indicators each)."""
    ident = identity(identity_name)  # first: without stix2, fail before reading anything
    created_by = json.loads(ident)["id"]
    version = shown.version
    feed = version.feed.partition("#")[0]  # a shard's lines keep the feed's ids
    lines = shown.lines()
    facts = line_facts(lines, offenders, bans)
    bundle = uuid.uuid5(NAMESPACE, f"bundle\n{version.feed}\n{version.number}\n{version.etag}")
    yield f'{{"type":"bundle","id":"bundle--{bundle}","objects":[\n{ident}'.encode()
    stamps: dict[int, str] = {}  # many lines share a time: format each once
    description = f"Published by banfeed in feed {feed}"  # feed names need no JSON escape
    labels_of: dict[frozenset[str], str] = {}
    pieces: list[str] = []
    for fam, fam_facts in zip(lines.families, facts, strict=True):
        kind = f"ipv{fam.version}-addr"
        for at, line in enumerate(_texts(fam)):
            first = fam_facts.first[at]
            valid_from = first if first is not None else version.created
            until = None if fam_facts.forever[at] else fam_facts.until[at]
            if until is not None and until <= valid_from:  # STIX: strictly after valid_from
                until = valid_from + 1
            # An indicator's content (valid_until, labels) follows the store between versions:
            # an offender behind the line written again, or a ban made, is a new version of the
            # object, never the same id and modified with other content.
            changed = max(version.created, fam_facts.latest[at])
            modified = stamps.get(changed)
            if modified is None:
                modified = stamps[changed] = stamp(changed)
            causes = frozenset(fam_facts.causes[at])
            labels = labels_of.get(causes)
            if labels is None:
                labels = labels_of[causes] = (
                    f',"labels":{json.dumps(sorted(causes))}' if causes else ""
                )
            pieces.append(
                f',\n{{"type":"indicator","spec_version":"2.1",'
                f'"id":"{indicator_id(feed, line)}","created_by_ref":"{created_by}",'
                f'"created":"{stamp(min(valid_from, version.created))}",'
                f'"modified":"{modified}","name":"{line}","description":"{description}",'
                f'"indicator_types":["malicious-activity"],'
                f'"pattern":"[{kind}:value = \'{line}\']","pattern_type":"stix",'
                f'"pattern_version":"2.1","valid_from":"{stamp(valid_from)}"'
                + (f',"valid_until":"{stamp(until)}"' if until is not None else "")
                + labels
                + "}"
            )
            if len(pieces) == 1000:
                yield "".join(pieces).encode()
                pieces = []
    yield ("".join(pieces) + "\n]}\n").encode()


def _texts(fam: Family) -> Iterator[str]:
    """Each line as the plain feed writes it (an address, or a CIDR)."""
    return (line.decode("ascii") for line in fam.text().splitlines())


def stix_body(
    shown: Served, offenders: Iterable[Written], bans: Sequence[Ban], identity_name: str
) -> bytes:
    return b"".join(stix_pieces(shown, offenders, bans, identity_name))
