"""SIGHUP: what a reload of the config file checks before the daemon swaps it in, and the line
it logs. A reload is all or nothing: a file that does not load, a feed secret that cannot be read,
an access log that cannot be opened, a TLS certificate that does not load, or a change of what a
running daemon cannot swap (the store it holds, the socket it listens on, replica sharing) refuses
it whole, and the daemon keeps running as it was."""

from __future__ import annotations

import ssl
from pathlib import Path

from .compose import config_path_of, feed_access
from .config import Config, load
from .errors import ConfigError
from .server import FeedAccess

# What a reload cannot swap in a running daemon: the store it holds, the socket it listens on.
RESTART_ONLY = ("store", "server")


def check(running: Config, path: Path) -> tuple[Config, dict[str, FeedAccess]]:
    """The new config, validated as at start; ConfigError says why it is refused."""
    new = load(path)
    fixed = [f"[{name}]" for name in RESTART_ONLY if getattr(new, name) != getattr(running, name)]
    if new.collect.shared != running.collect.shared:
        fixed.append("collect.shared")
    if fixed:
        raise ConfigError(
            f"{' and '.join(fixed)} changed, which takes a restart (systemctl restart banfeed)"
        )
    access = feed_access(new)
    target = access_log(new)
    if isinstance(target, Path):
        try:
            target.open("a", encoding="utf-8").close()
        except OSError as exc:
            raise ConfigError(f"log.access_log: cannot open {target}: {exc.strerror}") from None
    cert = config_path_of(new, new.server.cert_file)
    if cert is not None:
        key = config_path_of(new, new.server.key_file)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"server.cert_file: cannot load {cert} with its key: {exc}") from None
    return new, access


def describe_changes(old: Config, new: Config) -> str:
    """What a reload changed: devices and feeds by name, other sections by name."""
    parts = []
    for section in ("fortigates", "feeds"):
        before = {item.name: item for item in getattr(old, section)}
        after = {item.name: item for item in getattr(new, section)}
        for verb, names in (
            ("added", after.keys() - before.keys()),
            ("removed", before.keys() - after.keys()),
            ("changed", {n for n in before.keys() & after.keys() if before[n] != after[n]}),
        ):
            if names:
                parts.append(f"{section} {verb}: {', '.join(sorted(names))}")
    others = [
        f"[{name}]"
        for name in type(new).model_fields
        if name not in ("fortigates", "feeds", "base_dir")
        and getattr(old, name) != getattr(new, name)
    ]
    if others:
        parts.append(f"changed {', '.join(others)}")
    return "; ".join(parts) or "nothing changed"


def access_log(config: Config) -> bool | Path:
    target = config.log.access_log
    if isinstance(target, bool):
        return target
    return Path(config_path_of(config, target) or target)
