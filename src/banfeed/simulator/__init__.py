"""A FortiGate REST API simulator, for tests, benchmarks and trying banfeed without a FortiGate.

It shares no code with banfeed's client (tests/test_architecture.py checks): the two sides
agree only on the HTTP API, as a real FortiGate and banfeed would. ``device`` holds the
simulated state (quarantine lists; threat feeds in ``feeds``), ``constants`` what the modules
share, ``app`` the routing, ``answers`` what every endpoint shares, ``faults`` auth and the
faults that preempt or slow an endpoint, ``banned_endpoints``, ``feed_endpoints`` and
``cmdb_endpoints`` the endpoints, ``serve`` the servers (and the refresher that fetches threat
feeds on their schedule). See ``device``'s docstring for every endpoint and fault mode.
"""

from .app import SimFleet
from .device import DEFAULT_TTL, FAULTS, FEED_LIMIT, SOURCES, SimDevice, SimEntry
from .serve import RunningSimulator, serve_forever, start

__all__ = [
    "DEFAULT_TTL",
    "FAULTS",
    "FEED_LIMIT",
    "SOURCES",
    "RunningSimulator",
    "SimDevice",
    "SimEntry",
    "SimFleet",
    "serve_forever",
    "start",
]
