"""Async FortiOS REST client: the banned (quarantine) list of one device, typed and validated.

``client`` talks to the device (``DeviceTarget``, ``FortiOSClient``, the TLS contexts, HTTP
status and transport failures, the total deadline); ``parse`` checks every byte it answers
(``parse_banned``, ``parse_entry_list``, the window of times a device may send); ``stream``
parses a banned list as it reads it, a batch of entries at a time, never as one tree of JSON
objects; ``scrub`` removes the device's token from everything the device sends before anything
shows it. Failures raise a :class:`DeviceError` subclass naming the device and what to do.
"""

from .client import (
    BANNED_PATH,
    DYNAMIC_PATH,
    ENTRY_LIST_PATH,
    BannedAnswer,
    DeviceTarget,
    FortiOSClient,
)
from .diff import Keys
from .parse import (
    EARLIEST,
    EXPIRES_AHEAD,
    FUTURE_SKEW,
    MAX_SOURCE_TEXT,
    FeedStatus,
    gc_paused,
    parse_banned,
    parse_entry_list,
)
from .parse import _fast_ipv4 as _fast_ipv4  # tests check it against ipaddress

__all__ = [
    "BANNED_PATH",
    "DYNAMIC_PATH",
    "EARLIEST",
    "ENTRY_LIST_PATH",
    "EXPIRES_AHEAD",
    "FUTURE_SKEW",
    "MAX_SOURCE_TEXT",
    "BannedAnswer",
    "DeviceTarget",
    "FeedStatus",
    "Keys",
    "FortiOSClient",
    "gc_paused",
    "parse_banned",
    "parse_entry_list",
]
