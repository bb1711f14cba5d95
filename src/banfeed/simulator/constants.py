"""What the simulator's modules share: fault names, FortiOS defaults, API paths."""

from __future__ import annotations

FAULTS = (
    "none", "500", "timeout", "html", "truncated", "invalid", "shape", "huge",
    "401", "403", "404", "424", "429", "reset",
    "drip", "drip-headers", "slow-chunked", "nested", "bad-time",
    "503", "echo", "echo-redirect", "gzip-bomb",
)  # fmt: skip
SOURCES = ("IPS", "DoS", "AV", "APP", "DLP")
DEFAULT_TTL = 300  # FortiOS default quarantine-expiry is 5 minutes
BUILD = 1517
FEED_LIMIT = 131_072  # entries per feed before FortiOS 7.4.4
_API = "/api/v2/monitor"
_PATH = _API + "/user/banned"
_FEEDS = _API + "/system/external-resource"
_CMDB_FEEDS = "/api/v2/cmdb/system/external-resource"
_RAW_SEND = "banfeed.simulator.raw_send"
_BODY_FAULTS = ("none", "truncated", "invalid", "shape", "huge", "bad-time")  # banned list only
_SLOW_FAULTS = ("drip", "drip-headers", "slow-chunked")  # every endpoint
_CALLS_KEPT = 100_000  # SimDevice.calls drops its oldest half when it grows past this
