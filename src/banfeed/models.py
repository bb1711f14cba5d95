"""Frozen values passed between layers. Times are integer epoch seconds (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .errors import DeviceError
from .net import IPAddress, IPNetwork


class Offense(NamedTuple):
    """One quarantine seen on one device: the immutable fact ``(device, vdom, ip, created)``.

    A FortiGate lists a quarantined address on every poll until it expires; the same ``created``
    seen again is the same offense, a new ``created`` is a new one. (A NamedTuple, not a frozen
    dataclass: a large poll creates a million of them, three times faster.)
    """

    device: str
    vdom: str
    ip: IPAddress
    created: int
    expires: int | None  # None: the device bans it with no expiry
    source: str  # the device's cause text, as given (IPS, DoS, AV, APP, DLP, Administrative…)


@dataclass(frozen=True, slots=True)
class Rejected:
    """An entry a device sent that is not a usable offense; counted and logged, never stored."""

    device: str
    vdom: str
    index: int
    reason: str


@dataclass(frozen=True, slots=True)
class VdomList:
    """What one VDOM of one device lists now."""

    vdom: str
    offenses: list[Offense]
    rejected: list[Rejected]


@dataclass(frozen=True, slots=True)
class Offender:
    """One row per address: the summary of its offenses and the operator's decisions."""

    ip: IPAddress
    first_offense: int
    last_offense: int
    offense_count: int
    sources: tuple[str, ...]
    devices: tuple[str, ...]
    vdoms: tuple[str, ...]  # "device/vdom"
    active_until: int | None  # None: forever
    status: str  # "listed" or "unbanned"
    note: str | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """An audit record. Offenses themselves are history too and are not repeated here."""

    time: int
    kind: str  # added, suppressed, banned, unbanned, allowlist_added, ...
    ip: str | None
    actor: str
    detail: str


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    device: str
    vdom: str  # the VDOM selector as configured ("root", "*", …)
    last_attempt: int | None = None
    last_success: int | None = None
    error_kind: str | None = None
    error_message: str | None = None
    entries: int = 0
    rejected: int = 0
    duration_ms: int = 0
    consecutive_failures: int = 0
    backoff_until: int | None = None
    fingerprint: str | None = None


@dataclass(slots=True)
class PollResult:
    """The outcome of polling one (device, VDOM selector): lists, or the error that stopped it."""

    device: str
    vdom: str
    started: float
    duration: float = 0.0
    lists: list[VdomList] = field(default_factory=list)
    error: DeviceError | None = None
    fingerprint: str | None = None
    unchanged: bool = False  # the answer is byte-identical to the last stored one

    entries: int = 0  # valid entries listed (kept after ``lists`` is released)
    rejected: int = 0

    def take(self, lists: list[VdomList]) -> None:
        self.lists = lists
        self.entries = sum(len(v.offenses) for v in lists)
        self.rejected = sum(len(v.rejected) for v in lists)


@dataclass(frozen=True, slots=True)
class Ban:
    """An operator's decision to publish an address or network, whatever devices report."""

    network: IPNetwork
    created: int
    expires: int | None  # None: until unbanned
    provenance: str  # manual | imported
    actor: str
    note: str | None = None


@dataclass(frozen=True, slots=True)
class AllowEntry:
    """A network never to publish, kept in the store (beside the config's allowlist)."""

    network: IPNetwork
    created: int
    expires: int | None
    actor: str
    note: str | None = None
