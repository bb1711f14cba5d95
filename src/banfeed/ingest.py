"""What a cycle's answers add to the store: the offenses not stored yet, and what they publish.

The collector polls and writes; this module decides which listed offenses are new (not stored,
not listed twice, not banfeed's own pushes echoed back) and keeps the offenders a cycle may
publish. An address seen for the first time with a single offense — nearly every entry of a
large first ingest — needs no merging: its offender follows from the offense alone
(:func:`first_offender`), so it is built only when a row is written or a push asks for it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from operator import itemgetter
from socket import inet_ntoa
from typing import overload

from .models import Offender, OffenderStatus, Offense, PollResult
from .net import IPAddress
from .policy import Retention
from .store import Tx

ECHO_SKEW = 300  # seconds of clock difference allowed between banfeed and a device

Reported = tuple[Offender, tuple[str, ...]]  # an offender and the devices that reported it


def new_offenses(tx: Tx, results: list[PollResult]) -> list[tuple[Offense, str]]:
    """Offenses listed now that the store does not hold yet, each with its address text."""
    new: list[tuple[Offense, str]] = []
    taken: dict[str, set[tuple[str, str, int]]] = {}  # per device: (vdom, ip, created) kept
    for result in results:
        if result.error is not None or result.unchanged:
            continue
        listed = [o for v in result.lists for o in v.offenses]
        if not listed:
            continue
        known = tx.known_offenses(
            result.device, {o.vdom for o in listed}, min(o.created for o in listed)
        )
        kept = taken.setdefault(result.device, set())
        fresh: list[tuple[Offense, str]] = []
        for offense in listed:
            ip = address_text(offense.ip)
            key = (offense.vdom, ip, offense.created)
            if key in known or key in kept:
                continue
            kept.add(key)
            fresh.append((offense, ip))
        new += _without_echoes(tx, result.device, fresh)
    return new


def address_text(ip: IPAddress) -> str:
    """``str(ip)``; an IPv4 address through the C library, three times faster (the same text:
    dotted decimal without leading zeros)."""
    return inet_ntoa(ip.packed) if ip.version == 4 else str(ip)


def _without_echoes(
    tx: Tx, device: str, fresh: list[tuple[Offense, str]]
) -> list[tuple[Offense, str]]:
    """Drop entries that are banfeed's own pushed quarantines listed back by the device: they
    are not offenses (counting them would escalate TTLs and push them on, round and round)."""
    if not fresh:
        return fresh
    pushed = tx.pushed_to(device, min(o.created for o, _ in fresh) - ECHO_SKEW)
    if not pushed:
        return fresh
    kept = []
    for offense, ip in fresh:
        push = pushed.get(ip)
        if push is not None and push[0] - ECHO_SKEW <= offense.created <= push[1] + ECHO_SKEW:
            continue
        kept.append((offense, ip))
    return kept


def sort_for_index(pairs: list[tuple[Offense, str]]) -> None:
    """Sort ``(offense, address text)`` pairs into uq_offenses' column order (device, vdom,
    created, ip): inserted so, they append to the B-trees instead of scattering pages (twice
    as fast at a million). One stable sort per column, last column first, so no key tuple is
    built per offense (80 MB at a million)."""
    pairs.sort(key=itemgetter(1))
    pairs.sort(key=lambda pair: pair[0].created)
    pairs.sort(key=lambda pair: pair[0].vdom)
    pairs.sort(key=lambda pair: pair[0].device)


def repeated(ips: Iterable[str]) -> set[str]:
    """The addresses that occur more than once in ``ips``."""
    seen: set[str] = set()
    twice: set[str] = set()
    for ip in ips:
        if ip in seen:
            twice.add(ip)
        else:
            seen.add(ip)
    return twice


def first_offender(offense: Offense, retention: Retention) -> Offender:
    """The offender of an address not stored before, with this one offense."""
    o = offense
    return Offender(
        o.ip,
        o.created,
        o.created,
        1,
        (o.source,),
        (o.device,),
        (f"{o.device}/{o.vdom}",),
        retention.active_until(o.created, 1, (o.source,)),
        OffenderStatus.LISTED,
    )


class Published(Sequence[Reported]):
    """The offenders that got a new offense this cycle and may be published, with the devices
    that reported them: what push sends to the other FortiGates.

    A first offender is kept as its offense and built when read: a million-entry first ingest
    holds no million Offender objects for a push that sends at most ``max_per_cycle``.
    """

    def __init__(self, retention: Retention | None = None) -> None:
        self._retention = retention
        self._items: list[Reported | Offense] = []

    def add(self, offender: Offender, reporters: tuple[str, ...]) -> None:
        self._items.append((offender, reporters))

    def add_first(self, offense: Offense) -> None:
        """An address new to the store with this one offense (see :func:`first_offender`)."""
        assert self._retention is not None, "first offenders need the retention rule"
        self._items.append(offense)

    def _built(self, item: Reported | Offense) -> Reported:
        if isinstance(item, Offense):
            assert self._retention is not None
            return first_offender(item, self._retention), (item.device,)
        return item

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Reported]:
        return map(self._built, self._items)

    @overload
    def __getitem__(self, index: int) -> Reported: ...

    @overload
    def __getitem__(self, index: slice) -> list[Reported]: ...

    def __getitem__(self, index: int | slice) -> Reported | list[Reported]:
        if isinstance(index, slice):
            return [self._built(item) for item in self._items[index]]
        return self._built(self._items[index])
