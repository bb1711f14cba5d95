"""``[retention.causes]``: a base TTL per cause, and the one check of TTLs against ``max_ttl``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated

from pydantic import AfterValidator

from .fields import Duration


def _cause_names(causes: dict[str, int | None]) -> dict[str, int | None]:
    """Any cause name is accepted (a FortiGate's causes are IPS, DoS, AV, APP…, but others
    appear), compared case-insensitively, so two keys differing in case are one cause twice."""
    seen: dict[str, str] = {}
    for cause in causes:
        if not cause.strip():
            raise ValueError(
                'a cause name is empty; write the cause as the device reports it, like "DoS"'
            )
        other = seen.setdefault(cause.casefold(), cause)
        if other != cause:
            raise ValueError(
                f"{other!r} and {cause!r} are the same cause (names are case-insensitive); keep one"
            )
    return causes


CauseTTLs = Annotated[dict[str, Duration], AfterValidator(_cause_names)]


def check_caps(max_ttl: int | None, base_ttl: int | None, causes: Mapping[str, int | None]) -> None:
    """No finite base TTL (``base_ttl``, or a cause's) longer than ``max_ttl``, which would cut
    it short. A base of forever stays forever: ``max_ttl`` caps escalations of finite ones."""
    if max_ttl is None:
        return
    for key, ttl in [("base_ttl", base_ttl), *((f"causes.{c}", t) for c, t in causes.items())]:
        if ttl is not None and max_ttl < ttl:
            raise ValueError(f"max_ttl is shorter than {key}; raise max_ttl or lower {key}")
