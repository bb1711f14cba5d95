"""Field types and helpers of the configuration: durations, sizes, networks, names, secrets."""

from __future__ import annotations

import os
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, SecretStr

from ..errors import ConfigError, InputError
from ..net import IPNetwork, parse_network
from ..timeutil import parse_duration

DEFAULT_CONFIG = "banfeed.toml"
CONFIG_ENV = "BANFEED_CONFIG"
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


def _duration(value: object) -> int | None:
    if not isinstance(value, str):
        raise ValueError('write a duration as a string, like "30m", "30d" or "forever"')
    try:
        return parse_duration(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


def _finite_duration(value: object) -> int:
    seconds = _duration(value)
    if seconds is None:
        raise ValueError("'forever' is not allowed here; give a duration like \"10s\"")
    return seconds


def _network(value: object) -> IPNetwork:
    try:
        return parse_network(value)
    except InputError as exc:
        raise ValueError(str(exc)) from None


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024}
_SIZE_UNITS |= {"mib": 1024**2, "gib": 1024**3}


def _size(value: object) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    if isinstance(value, str):
        text = value.strip().lower()
        digits = text.rstrip("abcdefghijklmnopqrstuvwxyz")
        unit = text[len(digits) :]
        well_formed = digits.isascii() and digits.isdigit() and len(digits) <= 15
        if well_formed and unit in _SIZE_UNITS and int(digits) > 0:
            return int(digits) * _SIZE_UNITS[unit]
    raise ValueError('write a size like "64MiB", "500MB" or a number of bytes')


Duration = Annotated[int | None, BeforeValidator(_duration)]
FiniteDuration = Annotated[int, BeforeValidator(_finite_duration)]
Network = Annotated[IPNetwork, BeforeValidator(_network)]
Size = Annotated[int, BeforeValidator(_size)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


def beside(path: Path, base_dir: Path) -> Path:
    """A path from the config: as written when absolute, else in the config file's folder."""
    return path if path.is_absolute() else base_dir / path


def read_secret(
    where: str,
    literal: SecretStr | None,
    env: str | None,
    file: Path | None,
    base_dir: Path,
    *,
    what: str,
) -> SecretStr:
    """A secret from the config (``literal``), the environment or a file; never echoed."""
    if literal is not None:
        secret = literal.get_secret_value()
    elif env is not None:
        secret = os.environ.get(env, "")
        if not secret.strip():
            raise ConfigError(
                f"{where}_env: ${env} is not set — export {env}=<{what}> or use {where}_file"
            )
    elif file is not None:
        path = beside(file, base_dir)
        try:
            secret = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"{where}_file: cannot read {path}: {exc.strerror} — "
                "create it with the secret on one line, readable by banfeed only"
            ) from None
    else:
        raise ConfigError(f"{where}: not set — set {where}_env or {where}_file")
    secret = secret.strip()
    if not secret or any(c.isspace() for c in secret) or not secret.isprintable():
        raise ConfigError(f"{where}: the secret is empty or has spaces or control characters")
    return SecretStr(secret)


def split_listen(value: str) -> tuple[str, int]:
    """``"127.0.0.1:8080"`` or ``"[::1]:8080"`` → (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    usage = 'write listen as "address:port", like "127.0.0.1:8080" or "[::1]:8080"'
    if not sep or not (port.isascii() and port.isdigit()) or not 0 <= int(port) < 65536:
        raise ValueError(usage)
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip_address(host)  # an address, not a name: nothing is resolved
    except ValueError:
        raise ValueError(f"{usage}; the host must be an IP address") from None
    if (":" in host) != value.startswith("["):
        raise ValueError(f"{usage}; brackets go around IPv6 addresses only")
    return host, int(port)


def _is_name(value: str) -> bool:
    return bool(value) and len(value) <= 64 and all(c.isalnum() or c in "_.-" for c in value)
