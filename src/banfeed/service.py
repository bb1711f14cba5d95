"""The composition root: builds core objects from a Config. Only here and in ``cli`` is the
whole Config read; everything below receives plain values.

``banfeed run`` (the daemon) lives here too once the feed server exists.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass

from .collector import Collector
from .config import Config, FeedConfig
from .errors import ConfigError
from .feeds import FeedSpec
from .fortios import DeviceTarget
from .policy import Allowlist, Retention
from .store import Store, open_store
from .timeutil import Clock, system_clock


def retention(config: Config) -> Retention:
    r = config.retention
    return Retention(base_ttl=r.base_ttl, factor=r.factor, max_ttl=r.max_ttl)


def allowlist(config: Config) -> Allowlist:
    return Allowlist((network, "config [allowlist]") for network in config.allowlist.networks)


def feed_spec(feed: FeedConfig) -> FeedSpec:
    return FeedSpec(
        name=feed.name,
        family=feed.family,
        causes=frozenset(c.lower() for c in feed.causes),
        devices=frozenset(feed.devices),
        vdoms=frozenset(feed.vdoms),
        min_offenses=feed.min_offenses,
        seen_within=feed.seen_within,
        max_entries=feed.max_entries,
        aggregate=feed.aggregate,
    )


def targets(config: Config) -> list[DeviceTarget]:
    """One target per configured FortiGate. A token that cannot be read fails that device alone
    (its polls report the reason), so one missing secret never stops the fleet."""
    built = []
    for fg in config.fortigates:
        token, problem = None, None
        try:
            token = fg.resolve_token(config.base_dir)
        except ConfigError as exc:
            problem = str(exc)
        ca_file = fg.ca_file
        if ca_file is not None and not ca_file.is_absolute():
            ca_file = config.base_dir / ca_file
        built.append(
            DeviceTarget(
                name=fg.name,
                url=fg.url,
                token=token,
                vdoms=tuple(fg.vdoms),
                verify_tls=fg.verify_tls,
                ca_file=ca_file,
                timeout=float(fg.timeout),
                max_response=fg.max_response,
                token_problem=problem,
            )
        )
    return built


def warnings(config: Config) -> list[str]:
    """Things that work but that an operator should fix; shown by ``banfeed check``."""
    found = []
    for fg in config.fortigates:
        where = f"fortigates[{fg.name}]"
        if fg.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends the token in clear — use https")
        if fg.token is not None:
            found.append(f"{where}.token: a literal token in the config — prefer token_env")
        if not fg.verify_tls:
            found.append(f"{where}.verify_tls: false — set ca_file to the device's CA instead")
        if fg.token_file is not None:
            path = fg.token_file if fg.token_file.is_absolute() else config.base_dir / fg.token_file
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.token_file: {path} is readable by others — chmod 600")
            except OSError:
                pass  # resolve_token reports an unreadable file with its reason
    return found


@dataclass
class Runtime:
    """What every command needs, built once from the Config."""

    config: Config
    store: Store
    clock: Clock

    def collector(self) -> Collector:
        return Collector(
            self.store,
            targets(self.config),
            retention(self.config),
            allowlist(self.config),
            clock=self.clock,
            concurrency=self.config.collect.concurrency,
        )

    def close(self) -> None:
        self.store.close()


def runtime(config: Config, *, create_store: bool = False, clock: Clock = system_clock) -> Runtime:
    return Runtime(config, open_store(config.store_url(), create=create_store), clock)
