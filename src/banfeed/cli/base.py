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
from rich.console import Console, ConsoleDimensions
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

# Piped or redirected, a table is as wide as its text (no 80 columns, no cut notes): a script
# or `| grep` gets every character. $COLUMNS still wins when set.
PIPE_WIDTH = 10_000


class _Console(Console):
    @property
    def size(self) -> ConsoleDimensions:
        natural = super().size
        if self.is_terminal or self._width is not None or "COLUMNS" in self._environ:
            return natural
        return ConsoleDimensions(PIPE_WIDTH, natural.height)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        self._width, self._height = new_size


# markup=False: addresses, names and messages print literally ("[allowlist]" is not a style).
out = _Console(highlight=False, soft_wrap=True, markup=False)
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
    def __init__(self, config_option: str | None = None, verbose: int = 0) -> None:
        self.option = config_option
        self.verbose = verbose
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
        however the command ends. The commands of READ_ONLY_COMMANDS open it read-only."""
        from .. import compose

        read_only = not create_store and _command_name() in READ_ONLY_COMMANDS
        return compose.runtime(self.config, create_store=create_store, read_only=read_only)


# Commands that only read the store open it read-only (SQLite: `mode=ro`), so a user who may
# read the store but not write it (an analyst) can run them. docs/cli.md lists them; a test
# runs them as such a user. A new command that only reads belongs here.
READ_ONLY_COMMANDS = frozenset(
    {
        "list",
        "show",
        "bans",
        "events",
        "check",
        "verify",
        "feeds",
        "feeds history",
        "feeds diff",
        "allow list",
        "user list",
        "token list",
        "abuseipdb status",
    }
)


def _command_name() -> str:
    """The running command's name without the program's: ``"feeds history"``."""
    names = []
    ctx: click.Context | None = click.get_current_context(silent=True)
    while ctx is not None and ctx.parent is not None:
        names.append(ctx.info_name or "")
        ctx = ctx.parent
    return " ".join(reversed(names))


pass_ctx = click.make_pass_decorator(Context)

CONFIG_HELP = "Config file (default: $BANFEED_CONFIG, else ./banfeed.toml)."
VERBOSE_HELP = "More log output (-vv for debug)."


def _configure_logging(verbose: int) -> None:
    level = [logging.WARNING, logging.INFO, logging.DEBUG][min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", force=True)


def _late_config(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:  # after the command name: wins over one given before it
        ctx.ensure_object(Context).option = value


def _late_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:  # `-v list -v` is -vv
        obj = ctx.ensure_object(Context)
        obj.verbose += value
        _configure_logging(obj.verbose)


# The group's --config and -v, accepted after the command name too (`banfeed list --config x`):
# every command and subgroup shows them in its --help. They set the shared Context, so they
# are not passed to the command functions.
_LATE_OPTIONS: tuple[click.Option, ...] = (
    click.Option(
        ["--config", "late_config"],
        metavar="PATH",
        expose_value=False,
        callback=_late_config,
        help=CONFIG_HELP,
    ),
    click.Option(
        ["-v", "--verbose", "late_verbose"],
        count=True,
        expose_value=False,
        callback=_late_verbose,
        help=VERBOSE_HELP,
    ),
)


def _with_late_options(command: click.Command, ctx: click.Context) -> list[click.Parameter]:
    params = [*command.params, *_LATE_OPTIONS]
    help_option = command.get_help_option(ctx)
    return [*params, help_option] if help_option is not None else params


class _Command(click.Command):
    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _with_late_options(self, ctx)


class _Group(click.Group):
    command_class = _Command
    group_class = type  # subgroups of a subgroup: this class again

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        return _with_late_options(self, ctx)


class _Root(click.Group):
    command_class = _Command
    group_class = _Group


@click.group(cls=_Root, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_option", metavar="PATH", help=CONFIG_HELP)
@click.option("-v", "--verbose", count=True, help=VERBOSE_HELP)
@click.version_option(__version__, prog_name="banfeed")
@click.pass_context
def main(ctx: click.Context, config_option: str | None, verbose: int) -> None:
    """Collect FortiGate quarantined IPs into a durable store and publish safe threat feeds.

    --config and -v may also follow the command name."""
    _configure_logging(verbose)
    ctx.obj = Context(config_option, verbose)
