"""What `banfeed check` warns about (things that work but that an operator should fix), and
what `banfeed verify` concludes about the feed each FortiGate loaded."""

from __future__ import annotations

import stat
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from . import alerts, push
from .blocklists import BlocklistTarget  # a list is polled, but loads no feed
from .config import Config, beside, blocklists
from .config import fortimanager as fortimanagers
from .errors import DeviceError, DeviceNotFoundError, InputError
from .fortios import DeviceTarget, FeedStatus
from .models import FeedVersion
from .net import NetworkSet, never_block_reason, parse_address
from .publish import served, served_shards, shards
from .store import Store
from .timeutil import iso


def unverified_tls(config: Config, name: str | None = None) -> list[str]:
    """A warning per FortiGate (or for ``name`` alone) whose certificate is not verified:
    shown by ``banfeed check`` and logged whenever ``banfeed run`` starts."""
    return [
        f"fortigates[{fg.name}].verify_tls: false — its certificate is not checked, so anyone "
        "on the path can read its token; set ca_file to the device's CA instead"
        for fg in config.fortigates
        if not fg.verify_tls and name in (None, fg.name)
    ]


def warnings(config: Config) -> list[str]:
    """Things that work but that an operator should fix; shown by ``banfeed check``."""
    found = []
    protect = NetworkSet((n, True) for n in config.safety.protect)
    for fg in config.fortigates:
        where = f"fortigates[{fg.name}]"
        if fg.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends the token in clear — use https")
        if fg.token is not None:
            found.append(f"{where}.token: a literal token in the config — prefer token_env")
        found += unverified_tls(config, fg.name)
        host = urlsplit(fg.url).hostname or ""
        try:
            address = parse_address(host)
        except InputError:
            found.append(
                f"{where}.url: {host} is a name; banfeed resolves nothing, so it cannot check "
                "that this device's address is in [safety] protect"
            )
        else:
            if protect.match(address) is None and never_block_reason(address) is None:
                found.append(
                    f"{where}.url: {address} is not in [safety] protect — add your FortiGates' "
                    "and your own public ranges so they can never be published"
                )
        if fg.token_file is not None:
            path = beside(fg.token_file, config.base_dir)
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.token_file: {path} is readable by others — chmod 600")
            except OSError:
                pass  # resolve_token reports an unreadable file with its reason
    found += fortimanagers.warnings(config.fortimanagers, config.base_dir)  # `check` polls them too
    found += blocklists.warnings(config.blocklists, config.base_dir)  # polled as well
    found += config.abuseipdb.warnings(config.base_dir)  # raises when enabled without a key
    status = config.server.status
    if config.dashboard.enabled and status.auth.type == "none" and not status.allow_from:
        found.append(
            "server.status: /metrics and the status page / are open to anyone who reaches "
            "server.listen, while the dashboard needs a sign-in — set server.status.allow_from "
            "to your Prometheus, or server.status.auth"
        )
    found += alerts.problems(config)  # targets complete and reachable; nothing is sent
    return found


# -- verify: what each FortiGate loaded from a feed, against the version served --------------

# A device that fetched within this many seconds of a publication may have been given the
# version before it (servers follow the store within about a second; device clocks drift).
FETCH_SLACK = 5


class Verdict(StrEnum):
    IN_SYNC = "in_sync"  # as many valid entries as the served version has lines
    BEHIND = "behind"  # an older version, not fetched since the served one: within the grace
    STALE = "stale"  # the same, for longer than the grace
    FETCH_FAILED = "fetch_failed"  # its last fetch failed: it keeps an older list
    OVERFLOW = "overflow"  # it dropped entries over its limit
    INVALID = "invalid"  # it refused lines
    DIFFERS = "differs"  # another count, for no reason the device tells
    MISSING = "missing"  # no external resource of that name
    ERROR = "error"  # it could not be asked

    @property
    def ok(self) -> bool:
        return self in (Verdict.IN_SYNC, Verdict.BEHIND)


@dataclass(frozen=True, slots=True)
class DeviceFeed:
    """One device's view of the feed, and the verdict on it."""

    device: str
    verdict: Verdict
    detail: str
    status: FeedStatus | None = None
    holds: int | None = None  # the version whose lines it holds, when that can be told
    error: DeviceError | None = None

    def record(self) -> dict[str, Any]:
        """One element of `verify --format json`'s ``devices`` (documented in docs/cli.md)."""
        s = self.status
        return {
            "device": self.device,
            "verdict": self.verdict.value,
            "ok": self.verdict.ok,
            "detail": self.detail,
            "valid": s.valid if s else None,
            "invalid": s.invalid if s else None,
            "overflow": s.overflow if s else None,
            "last_http": (s.http_status or None) if s else None,
            "content_time": iso(s.content_time) if s and s.content_time else None,
            "last_attempt": iso(s.attempt_time) if s else None,
            "holds_version": self.holds,
            "error": None if self.error is None else error_record(self.error),
        }


@dataclass(frozen=True, slots=True)
class FeedVerification:
    feed: str
    resource: str
    served: FeedVersion | None
    held: bool
    pinned: bool
    devices: list[DeviceFeed]

    @property
    def ok(self) -> bool:
        return all(d.verdict.ok for d in self.devices)

    @property
    def entries(self) -> int:
        return self.served.entries if self.served else 0

    def record(self) -> dict[str, Any]:
        """The stable JSON shape of `banfeed verify` (documented in docs/cli.md)."""
        v = self.served
        return {
            "feed": self.feed,
            "resource": self.resource,
            "served": {
                "version": v.number if v else None,
                "entries": self.entries,
                "published": iso(v.created) if v else None,
                "held": self.held,
                "pinned": self.pinned,
            },
            "ok": self.ok,
            "devices": [d.record() for d in self.devices],
        }


def error_record(error: DeviceError) -> dict[str, str]:
    return {"kind": error.kind, "detail": error.detail}


def judge(
    status: FeedStatus,
    version: FeedVersion | None,
    versions: list[FeedVersion],
    now: int,
    grace: int,
) -> tuple[Verdict, str, int | None]:
    """The verdict on what a device loaded, its explanation, and the version it holds."""
    count = version.entries if version else 0
    holds = _version_held(status, versions)
    if status.overflow:
        return Verdict.OVERFLOW, "the device dropped entries over its limit", holds
    if status.invalid:
        return Verdict.INVALID, f"{status.invalid} lines refused", holds
    if version is not None and status.valid == count:
        return Verdict.IN_SYNC, f"{status.valid} loaded", version.number
    if version is None and status.valid == 0:
        return Verdict.IN_SYNC, "0 loaded, nothing published yet", None
    fetched = status.attempt_time
    failed = fetched is not None and status.http_status not in (200, 304)
    if failed:
        got = f"HTTP {status.http_status}" if status.http_status else "no answer"
        return (
            Verdict.FETCH_FAILED,
            f"its last fetch ({iso(fetched)}) got {got}, so it keeps {status.valid} entries — "
            "check the resource URL, its username and password, and feeds.allow_from",
            holds,
        )
    if version is not None and holds is not None and holds < version.number:
        if fetched is None or fetched < version.created + FETCH_SLACK:
            age = max(0, now - version.created)
            where = (
                f"holds version {holds} ({status.valid} entries); version {version.number} "
                f"({count}) was published {_ago(age)}, after its last fetch"
            )
            if age <= grace:
                return Verdict.BEHIND, f"{where}: it takes it at its next refresh", holds
            return (
                Verdict.STALE,
                f"{where}: more than the grace {_ago(grace, ago=False)} — check its "
                "refresh-rate and that it reaches the feed URL",
                holds,
            )
    return Verdict.DIFFERS, f"{status.valid} loaded, {count} served now", holds


def _version_held(status: FeedStatus, versions: list[FeedVersion]) -> int | None:
    """The newest version published before the device's content changed whose size is what the
    device holds (``versions`` newest first); None when none matches."""
    if status.content_time is None or status.invalid or status.overflow:
        return None
    for version in versions:
        if version.created <= status.content_time + FETCH_SLACK and version.entries == status.valid:
            return version.number
    return None


def _ago(seconds: int, *, ago: bool = True) -> str:
    text = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m"
    return f"{text} ago" if ago else text


async def verify_feed(
    store: Store,
    targets: Sequence[DeviceTarget],
    feed: str,
    resource: str,
    *,
    now: int,
    grace: int,
    shard: int | None = None,
) -> FeedVerification:
    """Ask every device what it loaded from threat feed ``resource`` and judge it against the
    version of ``feed`` served now (``banfeed verify``); with ``shard``, against that shard of
    the served version (each shard is a resource of its own on the FortiGates)."""
    with store.read() as tx:
        shown = served(tx, feed)
        if shard is None:
            versions = tx.feed_versions(feed, 50)
        else:
            shown = served_shards(tx, shown, shard)[shard - 1] if shown else None
            versions = tx.feed_versions(shards.key(feed, shard), 50)
    version = shown.version if shown else None
    devices = []
    targets = [t for t in targets if not isinstance(t, BlocklistTarget)]  # (alerting's fleet)
    for name, status in await push.verify(targets, resource):
        if isinstance(status, DeviceNotFoundError):
            detail = (
                f'no external resource "{resource}" on this device (or not in the VDOM the API '
                f"admin reaches) — create it with the FortiOS CLI that "
                f"`banfeed fortigate-config --feed {feed}` prints"
            )
            devices.append(DeviceFeed(name, Verdict.MISSING, detail, error=status))
        elif isinstance(status, DeviceError):
            devices.append(DeviceFeed(name, Verdict.ERROR, status.detail, error=status))
        else:
            verdict, detail, holds = judge(status, version, versions, now, grace)
            devices.append(DeviceFeed(name, verdict, detail, status, holds))
    held = bool(shown and shown.held)
    pinned = bool(shown and shown.pinned)
    name = feed if shard is None else shards.name(feed, shard)
    return FeedVerification(name, resource, version, held, pinned, devices)
