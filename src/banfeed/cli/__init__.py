"""The ``banfeed`` command: thin shells over the core. Parse, make one core call, render.

One module a noun: devices (check, collect), offenders (list, show, ban, unban, import,
prune), allow, feeds (feeds, history, diff, rollback, release, approve, export, verify),
setup (fortigate-config), store (init, db), daemon (run, serve), trying (demo, simulate),
users (user …), tokens (token …).

Exit codes: 0 ok; 1 the command ran but something failed (a device, a missing offender);
2 usage or configuration error. Only this package turns errors into messages and exit codes.
"""

from . import (  # noqa: F401
    abuseipdb,
    alerts,
    allow,
    audit,
    daemon,
    devices,
    docs,
    feeds,
    offenders,
    setup,
    store,
    tokens,
    trying,
    users,
)
from .base import main

__all__ = ["main"]
