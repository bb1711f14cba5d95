"""What a FortiGate needs to work with banfeed: the FortiOS CLI (or FortiManager JSON) to paste.

Two roles: a FortiGate banfeed **polls** (a least-privilege REST API admin, and the profiles that
quarantine attackers) and a FortiGate that **consumes** the feeds (threat feeds, deny policies
for IPv4 and IPv6 moved above the accept policies, a local-in variant). Everything is built as a
tree (``tree``) from plain values (``kit``), then rendered as CLI or as FortiManager requests.
"""

from __future__ import annotations

from .consume import DENY_POLICY, consume_plan, resource_name, resource_names
from .fortimanager import fortimanager_json
from .kit import (
    RELEASES,
    ROLES,
    FeedTarget,
    Kit,
    Poller,
    Release,
    Role,
    default_expiry,
    expiry_text,
    feed_url,
    shard_url,
)
from .poll import poll_plan
from .tree import Plan, render

__all__ = [
    "DENY_POLICY",
    "RELEASES",
    "ROLES",
    "FeedTarget",
    "Kit",
    "Plan",
    "Poller",
    "Release",
    "Role",
    "build",
    "default_expiry",
    "expiry_text",
    "feed_url",
    "fortigate_config",
    "fortimanager_json",
    "render",
    "resource_name",
    "resource_names",
    "shard_url",
]


def build(kit: Kit) -> Plan:
    """Every section ``kit.role`` asks for, in the order they are applied."""
    plan = Plan()
    if kit.role in ("poll", "all"):
        poll_plan(kit, plan)
    if kit.role in ("consume", "all"):
        consume_plan(kit, plan)
    return plan


def fortigate_config(feed: str, base_url: str, username: str | None, refresh_minutes: int) -> str:
    """The CLI that makes a FortiGate pull one ``feed`` and deny it (what `banfeed demo` shows)."""
    target = FeedTarget(
        feed, feed_url(base_url, feed), auth="basic" if username else "none", username=username
    )
    return render(build(Kit(role="consume", feeds=(target,), refresh=refresh_minutes)).sections)
