"""The composition root: turns a Config into components, once. Only here, in ``checks``,
``cycles``, ``daemon`` and ``cli`` is the whole Config read; everything below receives plain
values (a ``DeviceTarget``, a ``Retention``, a ``FeedSpec``…). Secrets and relative paths are
resolved here.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config, FeedConfig, beside
from .errors import ConfigError
from .models import Family
from .policy import Allowlist, Escalation, PrefixGuard, Retention, build_allowlist
from .store import Store, open_store
from .timeutil import Clock, system_clock

# The device client (httpx), the collector, the HTTP server and the feed builds (numpy) are
# imported by the functions that build them: a command that only reads rows (`list`) never
# loads them.
if TYPE_CHECKING:
    from .collector import Collector
    from .fortios import DeviceTarget
    from .publish import FeedPolicy, FeedSpec, History, Publisher
    from .server import FeedAccess, FeedCache


def retention(config: Config) -> Retention:
    r = config.retention
    return Retention(r.base_ttl, r.factor, r.max_ttl, r.causes, r.decay_after)


def allowlist(config: Config) -> Allowlist:
    """The configured allowlist and protected ranges (the store's entries are added per use)."""
    return build_allowlist(config.allowlist.networks, config.safety.protect)


def feed_policy(config: Config) -> FeedPolicy:
    from .publish import FeedPolicy

    esc = config.escalation
    return FeedPolicy(
        allowlist=allowlist(config),
        guard=guard(config),
        escalation=Escalation(esc.min_offenders, esc.prefix_v4, esc.prefix_v6)
        if esc.enabled
        else None,
        max_drop=config.safety.max_drop,
    )


def guard(config: Config) -> PrefixGuard:
    return PrefixGuard(config.safety.max_prefix_v4, config.safety.max_prefix_v6)


def feed_spec(feed: FeedConfig) -> FeedSpec:
    from .publish import FeedSpec

    return FeedSpec(
        name=feed.name,
        family=Family(feed.family),
        causes=frozenset(c.lower() for c in feed.causes),
        devices=frozenset(feed.devices),
        vdoms=frozenset(feed.vdoms),
        min_offenses=feed.min_offenses,
        seen_within=feed.seen_within,
        max_entries=feed.limit,
        aggregate=feed.aggregate,
        shards=feed.shards,
    )


def targets(config: Config) -> list[DeviceTarget]:
    """One target per configured FortiGate. A token that cannot be read fails that device alone
    (its polls report the reason), so one missing secret never stops the fleet."""
    from .fortios import DeviceTarget

    built = []
    for fg in config.fortigates:
        token, problem = None, None
        try:
            token = fg.resolve_token(config.base_dir)
        except ConfigError as exc:
            problem = str(exc)
        ca_file = None if fg.ca_file is None else beside(fg.ca_file, config.base_dir)
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
    from .fortios.fortimanager import targets_from  # each FortiManager: a target of its own

    return built + targets_from(config.fortimanagers, config.base_dir)


def push_targets(config: Config) -> list[DeviceTarget]:
    """Devices that receive pushed quarantines (per device ``push_quarantine``, else [push])."""
    wanted = {
        fg.name
        for fg in config.fortigates
        if (fg.push_quarantine if fg.push_quarantine is not None else config.push.quarantine)
    }
    wanted |= {  # a FortiManager's: every device behind it
        m.name
        for m in config.fortimanagers
        if (m.push_quarantine if m.push_quarantine is not None else config.push.quarantine)
    }
    return [t for t in targets(config) if t.name in wanted]


def feed_push_targets(config: Config) -> list[tuple[DeviceTarget, str]]:
    """(device, name of its push-type threat feed) for devices with ``push_feed``."""
    resources = {fg.name: fg.push_feed for fg in config.fortigates if fg.push_feed}
    return [(t, resources[t.name]) for t in targets(config) if t.name in resources]


def make_collector(config: Config, store: Store, clock: Clock) -> Collector:
    from .blocklists import targets_from  # lists are polled (not pushed to, nor verified)
    from .collector import Collector

    lists = targets_from(config.blocklists, config.base_dir)
    return Collector(
        store,
        targets(config) + lists,
        retention(config),
        allowlist(config),
        clock=clock,
        concurrency=config.collect.concurrency,
    )


def history(config: Config) -> History:
    from .publish import History

    return History(versions=config.history.versions, bodies=config.history.bodies)


def publisher(config: Config, store: Store, clock: Clock) -> Publisher:
    from .publish import Publisher

    return Publisher(
        store, [feed_spec(f) for f in config.feeds], feed_policy(config), clock, history(config)
    )


def feed_cache(config: Config, store: Store, publisher: Publisher, clock: Clock) -> FeedCache:
    """What the feed server serves from: ``publisher``'s feeds, rendered as the config says."""
    from .server import FeedCache

    return FeedCache(store, publisher, clock, stix_identity=config.server.stix_identity)


def feed_access(config: Config) -> dict[str, FeedAccess]:
    """Per-feed credentials, resolved now: a feed whose secret is missing is a config error."""
    from .server.auth import access_from

    return {
        feed.name: access_from(
            feed.auth, feed.allow_from, f"feeds[{feed.name}].auth", config.base_dir, "consumers"
        )
        for feed in config.feeds
    }


def config_path_of(config: Config, path: Path | None) -> str | None:
    """A path from the config, relative to the config file's folder."""
    if path is None:
        return None
    return str(beside(path, config.base_dir))


@dataclass
class Runtime:
    """What every command needs, built once from the Config."""

    config: Config
    store: Store
    clock: Clock

    def collector(self) -> Collector:
        return make_collector(self.config, self.store, self.clock)

    def publisher(self) -> Publisher:
        return publisher(self.config, self.store, self.clock)

    def retention(self) -> Retention:
        return retention(self.config)

    def now(self) -> int:
        return int(self.clock())


@contextmanager
def runtime(
    config: Config,
    *,
    create_store: bool = False,
    clock: Clock = system_clock,
    read_only: bool = False,
) -> Iterator[Runtime]:
    """Open the store for one command; closed however the command ends."""
    store = open_store(config.store_url(), create=create_store, read_only=read_only)
    try:
        yield Runtime(config, store, clock)
    finally:
        store.close()
