"""The ``banfeed`` command: thin shells over the core. Parse, make one core call, render.

Exit codes: 0 ok; 1 the command ran but something failed (a device, a missing offender);
2 usage or configuration error. Only this package turns errors into messages and exit codes.
"""

from . import control, loop, serve  # noqa: F401  (they register their commands on ``main``)
from .base import main

__all__ = ["main"]
