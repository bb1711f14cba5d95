"""Commands of the daemon: run, serve."""

from __future__ import annotations

import asyncio
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import Config
from .base import EXIT_FAILED, Context, err, fail, handle_errors, main, pass_ctx


def _daemon(config: Config, path: Path, *, collect: bool) -> None:
    from .. import logsetup
    from ..daemon import Daemon

    # A SIGHUP before the event loop handles it would kill the process: ignore it until then.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    # [log] sets the level; -v / -vv (the root level the group set) can only ask for more.
    asked = logging.getLogger().level
    log = config.log
    logsetup.configure(log.level, log.format, floor=asked if asked < logging.WARNING else None)
    daemon = Daemon(config, collect=collect, config_file=path.resolve())
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
    _daemon(ctx.config, ctx.path, collect=True)


@main.command()
@pass_ctx
@handle_errors
def serve(ctx: Context) -> None:
    """Serve the feeds without collecting (a replica, or beside a cron `collect`)."""
    _daemon(ctx.config, ctx.path, collect=False)
