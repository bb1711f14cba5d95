"""Feed limits: how many entries a consumer loads from one threat feed, as named presets.

FortiOS limits differ by release and by model (docs/fortigate.md has the sources), so
``feeds.max_entries`` takes a number or one of these names, never one constant for everyone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import BeforeValidator

MAX_ENTRIES_LIMIT = 10_000_000  # the most lines banfeed publishes in one feed, whatever asked
DEFAULT_MAX_ENTRIES = 131072  # what every FortiOS release takes in one feed


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
