"""The HTTP server: ``create_app()`` over a :class:`FeedCache`."""

from .app import ServerState, create_app
from .auth import FeedAccess
from .cache import FeedCache

__all__ = ["FeedAccess", "FeedCache", "ServerState", "create_app"]
