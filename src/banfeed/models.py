"""Frozen values passed between layers. Times are integer epoch seconds (UTC)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NamedTuple

from .errors import DeviceError
from .net import IPAddress, IPNetwork


class OffenderStatus(StrEnum):
    """The operator's decision stored on an offender (everything else is derived)."""

    LISTED = "listed"
    UNBANNED = "unbanned"


class OffenderState(StrEnum):
    """What an offender is at a moment: derived from status, retention and the allowlist."""

    ACTIVE = "active"
    EXPIRED = "expired"
    SUPPRESSED = "suppressed"
    UNBANNED = "unbanned"


class EventKind(StrEnum):
    SUPPRESSED = "suppressed"
    RELISTED = "relisted"
    BANNED = "banned"
    UNBANNED = "unbanned"
    ALLOWLIST_ADDED = "allowlist_added"
    ALLOWLIST_REMOVED = "allowlist_removed"
    IMPORTED = "imported"
    EXPIRED = "expired"
    FEED_APPROVED = "feed_approved"
    FEED_PINNED = "feed_pinned"
    FEED_RELEASED = "feed_released"


class Family(StrEnum):
    IPV4 = "ipv4"
    IPV6 = "ipv6"
    ANY = "any"

    def admits(self, version: int) -> bool:
        return self is Family.ANY or self.value == f"ipv{version}"


class BanOrigin(StrEnum):
    MANUAL = "manual"
    IMPORTED = "imported"


class AuthKind(StrEnum):
    NONE = "none"
    BASIC = "basic"
    BEARER = "bearer"


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
    offenses: list[Offense]  # the entries validated now (all, unless the answer was diffed)
    rejected: list[Rejected]
    unchanged: int = 0  # entries of the last stored answer, not validated again

    @property
    def entries(self) -> int:
        """Valid entries listed, validated now or unchanged."""
        return len(self.offenses) + self.unchanged


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
    status: OffenderStatus
    note: str | None = None


# An offender with when its row was last written (the store's ``updated``): a plain tuple, as
# a STIX rendering makes one per active offender.
Written = tuple[Offender, int]


@dataclass(frozen=True, slots=True)
class Event:
    """An audit record. Offenses themselves are history too and are not repeated here."""

    time: int
    kind: EventKind
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
    backoff_token: str | None = None  # the token a 401 refused (None: any token, e.g. 429)
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
    keys: Any = None  # its accepted entries' keys (fortios.diff), remembered once stored

    entries: int = 0  # valid entries listed (kept after ``lists`` is released)
    validated: int = 0  # of them, validated by this poll (the rest: unchanged, see diff)
    rejected: int = 0

    def take(self, lists: list[VdomList]) -> None:
        self.lists = lists
        self.entries = sum(v.entries for v in lists)
        self.validated = sum(len(v.offenses) for v in lists)
        self.rejected = sum(len(v.rejected) for v in lists)


@dataclass(frozen=True, slots=True)
class Ban:
    """An operator's decision to publish an address or network, whatever devices report."""

    network: IPNetwork
    created: int
    expires: int | None  # None: until unbanned
    provenance: BanOrigin
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


@dataclass(frozen=True, slots=True)
class FeedState:
    """What a feed's guard and operators decided: a hold, an approval, a pin."""

    feed: str
    held_since: int | None = None  # mass-drop guard: serving the last good version since
    hold_reason: str | None = None
    approved: int | None = None  # an operator released the hold then
    approved_by: str | None = None
    pinned: int | None = None  # the version number served until released (a rollback)
    pinned_by: str | None = None

    @property
    def hold_approved(self) -> bool:
        """Held, and an operator released this hold (the next build publishes)."""
        return (
            self.held_since is not None
            and self.approved is not None
            and self.approved >= self.held_since
        )


@dataclass(frozen=True, slots=True)
class FeedVersion:
    """One published version of a feed: what consumers were (or are) served."""

    feed: str
    number: int  # 1, 2, 3 … per feed
    created: int  # when it was first published: the Last-Modified every replica agrees on
    etag: str
    entries: int
    added: int
    removed: int
    matched: int
    overflow: int
    reason: str  # why this version was published
    approver: str | None  # who approved it, when a guard held it
    store_version: int
    body: bytes | None  # the plain feed; None once retention dropped the body


@dataclass(frozen=True, slots=True)
class Consumer:
    """One consumer of one feed (address and user agent) and its last fetch."""

    feed: str
    address: str
    user_agent: str
    first_fetch: int
    last_fetch: int
    etag: str | None
    status: int
    requests: int


class Role(StrEnum):
    """What a dashboard user may do: ``viewer`` reads, ``admin`` also acts."""

    VIEWER = "viewer"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class User:
    """A dashboard user. ``session_epoch`` grows on logout and password change: every session
    cookie issued before is void."""

    name: str
    role: Role
    password_hash: str = field(repr=False)
    created: int
    created_by: str
    session_epoch: int = 0


@dataclass(frozen=True, slots=True)
class ApiToken:
    """An API token of ``/api/v1`` (``banfeed token add``): the store keeps its SHA-256, never
    the token. ``expires`` and ``last_used`` are None for never."""

    name: str
    role: Role
    token_hash: str = field(repr=False)
    created: int
    created_by: str
    expires: int | None = None
    last_used: int | None = None
    note: str | None = None

    def expired(self, now: int) -> bool:
        return self.expires is not None and now >= self.expires
