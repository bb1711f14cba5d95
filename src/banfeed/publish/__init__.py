"""Publication: the one place that turns the store's state into what the world sees.

build (lines with provenance) → decide (every guard) → record (versions). The server,
``export``, the push-feed sync, ``feeds``, ``show`` and the status page all read what was
published here.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .build import FeedBuild, FeedInputs, FeedPolicy, FeedSpec, Filter, build_feeds
    from .explain import Verdict, Why, explain
    from .publisher import History, Outcome, Publisher, Served, served, served_shards

# Loaded on first use: builds need numpy, and commands that only read rows (`list`) do not.
_WHERE = {
    **dict.fromkeys(
        ("FeedBuild", "FeedInputs", "FeedPolicy", "FeedSpec", "Filter", "build_feeds"), ".build"
    ),
    **dict.fromkeys(("Verdict", "Why", "explain"), ".explain"),
    **dict.fromkeys(
        ("History", "Outcome", "Publisher", "Served", "served", "served_shards"), ".publisher"
    ),
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    where = _WHERE[name]
    module = importlib.import_module(where, __name__)
    # Every name of that module becomes the package's attribute now: importing the submodule
    # `explain` set that name to the module, and the function must win, as it did eagerly.
    for other, place in _WHERE.items():
        if place == where:
            globals()[other] = getattr(module, other)
    return globals()[name]


__all__ = [
    "FeedBuild",
    "FeedInputs",
    "FeedPolicy",
    "FeedSpec",
    "Filter",
    "History",
    "Outcome",
    "Publisher",
    "Served",
    "Verdict",
    "Why",
    "build_feeds",
    "explain",
    "served",
    "served_shards",
]
