"""Commands of the daemon: run, serve."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
from .base import EXIT_FAILED, Context, err, fail, handle_errors, main, pass_ctx


def _daemon(config: Config, *, collect: bool) -> None:
    # A daemon logs one line per cycle: INFO at least, more with -v.
    from ..daemon import Daemon

    logging.getLogger("banfeed").setLevel(min(logging.INFO, logging.getLogger().level))
    daemon = Daemon(config, collect=collect)
    daemon.bind()
    err.print(f"banfeed {'run' if collect else 'serve'}: serving {daemon.url}/feeds/")
    asyncio.run(daemon.run())
    if daemon.crashed is not None:  # logged with its traceback already
        fail(f"stopped: {type(daemon.crashed).__name__}: {daemon.crashed}", EXIT_FAILED)


@main.command()
@pass_ctx
@handle_errors
def run(ctx: Context) -> None:
    """Collect every [collect] interval and serve the feeds, in one process (the daemon)."""
    _daemon(ctx.config, collect=True)


@main.command()
@pass_ctx
@handle_errors
def serve(ctx: Context) -> None:
    """Serve the feeds without collecting (a replica, or beside a cron `collect`)."""
    _daemon(ctx.config, collect=False)
