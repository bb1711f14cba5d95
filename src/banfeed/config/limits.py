"""Feed limits: how many entries a consumer loads from one threat feed, as named presets.

FortiOS limits differ by release and by model (docs/fortigate.md has the sources), so
``feeds.limit`` (formerly ``max_entries``, still accepted) takes a number or one of these names,
never one constant for everyone. A feed bigger than one consumer's limit is split into
``feeds.shards`` of at most ``limit`` entries each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Protocol

from pydantic import BeforeValidator

MAX_ENTRIES_LIMIT = 10_000_000  # the most lines banfeed publishes in one feed, whatever asked
DEFAULT_MAX_ENTRIES = 131072  # what every FortiOS release takes in one feed
MAX_SHARDS = 64  # the most shards one feed is split into (``feeds.shards``)


@dataclass(frozen=True)
class LimitPreset:
    name: str
    entries: int
    consumer: str  # who it is for, as docs and error messages say it
    shared: bool  # the limit is for all IP feeds of the device together, not per feed


PRESETS: dict[str, LimitPreset] = {
    p.name: p
    for p in (
        LimitPreset("fortios-7.0", 131072, "FortiOS 6.x and 7.0 (per feed, 10 MB)", False),
        LimitPreset("fortios-7.2", 131072, "FortiOS 7.2 and 7.4.0-7.4.3 (per feed, 10 MB)", False),
        LimitPreset("fortios-7.4", 300000, "FortiOS 7.4.4+ (all IP feeds of a device)", True),
        LimitPreset("fortios-vm02", 168928, "FortiGate-VM02 on 7.4.4+ (per feed)", False),
        LimitPreset("fortios-7.6-entry", 300000, "FortiOS 7.6, models 90G and below", True),
        LimitPreset("fortios-7.6-mid", 1000000, "FortiOS 7.6, models 100F to 900G", True),
        LimitPreset("fortios-7.6-high", 5000000, "FortiOS 7.6, models 1000F and up", True),
    )
}


def preset_list() -> str:
    """The presets as an error message lists them: ``fortios-7.0 (131072), …``."""
    return ", ".join(f"{p.name} ({p.entries})" for p in PRESETS.values())


def preset_for(entries: int) -> LimitPreset | None:
    """The first preset with exactly this number of entries (for messages), if any."""
    return next((p for p in PRESETS.values() if p.entries == entries), None)


def _max_entries(value: object) -> object:
    """A preset name becomes its number; numbers go on to the range check."""
    if isinstance(value, str) and not value.strip().isdigit():  # "50000" stays a number
        preset = PRESETS.get(value.strip().lower())
        if preset is None:
            raise ValueError(
                f"{value!r} is not a known limit preset; use one of {preset_list()}, "
                f"or a number from 1 to {MAX_ENTRIES_LIMIT}"
            )
        return preset.entries
    if isinstance(value, bool):  # true is not 1 entry
        raise ValueError(f"give a number of entries or a preset: {preset_list()}")
    return value


MaxEntries = Annotated[int, BeforeValidator(_max_entries)]


def renamed_limit(data: object) -> object:
    """A ``[[feeds]]`` table with ``max_entries``, ``limit``'s old name, read as ``limit``;
    both at once is an error (which one would win is not for banfeed to guess)."""
    if isinstance(data, dict) and "max_entries" in data:
        if "limit" in data:
            raise ValueError(
                "limit and max_entries are one setting (max_entries is its old name): "
                "keep limit only"
            )
        return {("limit" if k == "max_entries" else k): v for k, v in data.items()}
    return data


def shard_name(feed: str, shard: int) -> str:
    """Shard ``shard`` (1-based) of ``feed``, as consumers fetch it: ``/feeds/feed-2.txt``."""
    return f"{feed}-{shard}"


def shard_names(feed: str, shards: int) -> list[str]:
    """``feed-1`` … ``feed-N`` of a sharded feed, ``[feed]`` for one shard."""
    if shards == 1:
        return [feed]
    return [shard_name(feed, k) for k in range(1, shards + 1)]


def check_shard_names(feed: str, shards: int) -> None:
    """Every shard's name must be a name (64 characters at most: the store's columns)."""
    last = shard_names(feed, shards)[-1]
    if len(last) > 64:
        raise ValueError(
            f"name: {feed!r} is too long for {shards} shards: {last!r} must be 64 characters "
            "at most"
        )


class _Sharded(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def shards(self) -> int: ...


def shard_clashes(feeds: Sequence[_Sharded]) -> str | None:
    """A feed named like another feed's shard (``x-2`` beside ``x`` with shards = 2), or None."""
    names = {feed.name for feed in feeds}
    for feed in feeds:
        for number, shard in enumerate(shard_names(feed.name, feed.shards), 1):
            if feed.shards > 1 and shard in names:
                return (
                    f"feeds: feed {shard!r} has the name of shard {number} of feed "
                    f"{feed.name!r} (shards = {feed.shards}, served as /feeds/{shard}.txt); "
                    "rename one of them"
                )
    return None
