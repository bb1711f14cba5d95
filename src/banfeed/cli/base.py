"""Shared pieces of the ``banfeed`` command: the group, the context, consoles, error handling.

Exit codes: 0 ok; 1 the command ran but something failed (a device, a missing offender);
2 usage or configuration error. Only this package turns errors into messages and exit codes.
"""

from __future__ import annotations

import functools
import getpass
import logging
import os
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, ParamSpec, TypeVar

import click
from rich.console import Console
from rich.text import Text

from .. import __version__
from ..errors import BanfeedError, ConfigError, InputError
from ..timeutil import iso

if TYPE_CHECKING:  # commands import the core where they use it: `--help` stays fast
    from .. import compose
    from ..config import Config

P = ParamSpec("P")
R = TypeVar("R")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
FORMATS = ("table", "json", "csv")
FEED_FORMATS = ("txt", "csv", "json")  # publish.render.FORMATS (tests/test_cli.py checks)

# markup=False: addresses, names and messages print literally ("[allowlist]" is not a style).
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


def ok(text: str = "ok") -> Text:
    return Text(text, style="green")


def bad(kind: str, detail: str) -> Text:
    return Text.assemble((kind, "red"), f": {detail}")


def warn(message: str) -> None:
    out.print(Text.assemble(("warning: ", "yellow"), message))


def operator() -> str:
    """Who acts, for the audit log: $BANFEED_ACTOR, else the login name."""
    return os.environ.get("BANFEED_ACTOR") or getpass.getuser()


def short_time(epoch: int | None) -> str:
    """Minutes are enough in a table; JSON and CSV carry full ISO-8601 times."""
    return (iso(epoch) or "")[:16].replace("T", " ")


def fail(message: str, code: int) -> NoReturn:
    err.print(Text.assemble(("error: ", "bold red"), message))
    raise SystemExit(code)


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn banfeed's errors into a message on stderr and the documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except (ConfigError, InputError) as exc:
            fail(str(exc), EXIT_USAGE)
        except BanfeedError as exc:
            fail(str(exc), EXIT_FAILED)

    return wrapper


class Context:
    def __init__(self, config_option: str | None) -> None:
        self.option = config_option
        self._config: Config | None = None

    @property
    def path(self) -> Path:
        from ..config import config_path

        return config_path(self.option)

    @property
    def config(self) -> Config:
        if self._config is None:
            from ..config import load

            self._config = load(self.path)
        return self._config

    def runtime(self, *, create_store: bool = False) -> AbstractContextManager[compose.Runtime]:
        """The store and clock for one command: ``with ctx.runtime() as rt:`` closes the store
        however the command ends."""
        from .. import compose

        return compose.runtime(self.config, create_store=create_store)


pass_ctx = click.make_pass_decorator(Context)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="Config file (default: $BANFEED_CONFIG, else ./banfeed.toml).",
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.version_option(__version__, prog_name="banfeed")
@click.pass_context
def main(ctx: click.Context, config_option: str | None, verbose: int) -> None:
    """Collect FortiGate quarantined IPs into a durable store and publish safe threat feeds."""
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)
    ctx.obj = Context(config_option)
