"""What the setup kit is asked for, as plain values: the feeds served, the devices polled, the
FortiOS release, the role of the FortiGate being configured."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from ..net import IPNetwork

Role = Literal["poll", "consume", "all"]
Release = Literal["7.0", "7.2", "7.4", "7.6"]
ROLES: tuple[Role, ...] = ("poll", "consume", "all")
RELEASES: tuple[Release, ...] = ("7.0", "7.2", "7.4", "7.6")

MIN_EXPIRY = 60  # FortiOS quarantine-expiry: 1m to 364d23h59m
MAX_EXPIRY = 364 * 86400 + 23 * 3600 + 59 * 60


@dataclass(frozen=True)
class FeedTarget:
    """One feed as a FortiGate pulls it."""

    name: str
    url: str
    family: Literal["ipv4", "ipv6", "any"] = "any"
    auth: Literal["none", "basic", "bearer"] = "none"
    username: str | None = None
    max_entries: int = 131072  # the feed's ``limit``: what one resource may hold
    allow_from: tuple[IPNetwork, ...] = ()
    shards: int = 1  # over 1: one external resource per shard (``parts``)
    shard: int | None = None  # this target is shard N of feed ``name``

    def parts(self) -> list[FeedTarget]:
        """What FortiGates pull: the feed itself, or each shard (``NAME-1.txt`` …)."""
        if self.shards == 1:
            return [self]
        return [
            dataclasses.replace(self, url=shard_url(self.url, k), shards=1, shard=k)
            for k in range(1, self.shards + 1)
        ]

    @property
    def served_as(self) -> str:
        """The name it is served by: ``NAME`` or ``NAME-k``."""
        return self.name if self.shard is None else f"{self.name}-{self.shard}"

    @property
    def ipv4(self) -> bool:
        return self.family != "ipv6"

    @property
    def ipv6(self) -> bool:
        return self.family != "ipv4"

    @property
    def https(self) -> bool:
        return self.url.startswith("https://")


@dataclass(frozen=True)
class Poller:
    """One FortiGate banfeed polls, with what it needs to be allowed."""

    name: str
    vdoms: tuple[str, ...] = ("root",)
    receives_pushes: bool = False  # [push] quarantine reaches it: add_users
    push_feed: str | None = None  # a push-type threat feed banfeed keeps in sync
    token_source: str | None = None  # where banfeed reads its token: "$BANFEED_X" or a path


@dataclass(frozen=True)
class Kit:
    role: Role = "all"
    release: Release = "7.4"
    feeds: tuple[FeedTarget, ...] = ()
    pollers: tuple[Poller, ...] = ()
    unban_everywhere: bool = False  # `banfeed unban --everywhere` will be used: clear_users
    trusthosts: tuple[IPNetwork, ...] = ()  # banfeed's own addresses, as the FortiGates see them
    interfaces: tuple[str, ...] = ()  # where attackers come in; () = "any" for deny policies
    policy_id: int | None = None  # ID of the deny policy (None: edit 0, the next free one)
    before: int | None = None  # ID of the first policy it must sit above
    ca_pem: str | None = None  # the CA certificate that signed banfeed's HTTPS certificate
    quarantine_expiry: int = 3600
    refresh: int = 5
    api_user: str = "banfeed"

    @property
    def ipv6(self) -> bool:
        return any(feed.ipv6 for feed in self.feeds) or not self.feeds


def feed_url(base_url: str, feed: str) -> str:
    """The URL of ``feed`` under banfeed's base URL (a URL ending in ``.txt`` is kept)."""
    if base_url.endswith(".txt"):
        return base_url
    return f"{base_url.rstrip('/')}/feeds/{feed}.txt"


def shard_url(feed_url: str, shard: int) -> str:
    """The URL of shard ``shard`` beside the feed's: ``…/NAME.txt`` → ``…/NAME-2.txt``."""
    return f"{feed_url.removesuffix('.txt')}-{shard}.txt"


def default_expiry(collect_interval: int) -> int:
    """A quarantine long enough to be seen: three collection intervals, at least an hour."""
    return min(MAX_EXPIRY, max(3600, 3 * collect_interval))


def expiry_text(seconds: int) -> str:
    """FortiOS's ``###d##h##m`` (minutes rounded up, 1m to 364d23h59m)."""
    clamped = min(MAX_EXPIRY, max(MIN_EXPIRY, seconds))
    minutes = -(-clamped // 60)  # rounded up: never shorter than asked
    days, rest = divmod(minutes, 1440)
    return f"{days}d{rest // 60}h{rest % 60}m"
