"""The dashboard (``/dashboard/``) and the JSON API (``/api/v1/``), mounted beside the feeds
when ``[dashboard] enabled = true``. Feeds, ``/healthz`` and ``/readyz`` keep their own rules.

``dashboard_routes(host)`` is all the daemon calls; users are managed by ``accounts``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute

from . import api, feedapi, feedviews, lists_api, lists_pages, pages, sources
from .context import Host, Site, Web, signing_secret

__all__ = ["Host", "Site", "Web", "dashboard_routes"]


def dashboard_routes(host: Host) -> list[BaseRoute]:
    """The routes of the dashboard and the API, or none when it is not enabled. Reads (or
    first generates) the cookie signing secret: a ConfigError names a missing one."""
    if not host.config.dashboard.enabled:
        return []
    web = Web(host, signing_secret(host))
    return [
        *api.routes(web),
        *feedapi.routes(web),
        *lists_api.routes(web),
        *pages.routes(web),
        *feedviews.routes(web),
        *lists_pages.routes(web),
        *sources.routes(web),
    ]
