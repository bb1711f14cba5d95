"""Publication: the one place that turns the store's state into what the world sees.

build (lines with provenance) → decide (every guard) → record (versions). The server,
``export``, the push-feed sync, ``feeds``, ``show`` and the status page all read what was
published here.
"""

from .build import FeedBuild, FeedInputs, FeedPolicy, FeedSpec, Filter, build_feeds
from .explain import Verdict, Why, explain
from .publisher import History, Outcome, Publisher, Served, served

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
]
