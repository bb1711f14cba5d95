"""The HTTP server: ``create_app()`` over a :class:`FeedCache`."""

from .app import ServerState, create_app
from .auth import FeedAccess
from .cache import FeedCache
from .connections import ConnectionLimits, GuardedServer, connection_limits

__all__ = [
    "ConnectionLimits",
    "FeedAccess",
    "FeedCache",
    "GuardedServer",
    "ServerState",
    "connection_limits",
    "create_app",
]
