"""The composition root: builds core objects from a Config. Only here and in ``cli`` is the
whole Config read; everything below receives plain values.

``banfeed run`` and ``banfeed serve`` (the :class:`Daemon`) live here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn

from .collector import Collector, CycleReport
from .config import Config, FeedConfig, read_secret, split_listen
from .errors import BanfeedError, ConfigError, InputError
from .feeds import FeedPolicy, FeedSpec, build_feed
from .fortios import DeviceTarget
from .net import NetworkSet, never_block_reason, parse_address
from .policy import Allowlist, Escalation, PrefixGuard, Retention, build_allowlist
from .push import Backoff, FeedSync, PushResult, push_quarantine
from .server import FeedAccess, FeedCache, ServerState, create_app
from .store import Store, open_store
from .store import queries as q
from .store.leases import Leases
from .timeutil import Clock, system_clock

log = logging.getLogger("banfeed")


def retention(config: Config) -> Retention:
    r = config.retention
    return Retention(base_ttl=r.base_ttl, factor=r.factor, max_ttl=r.max_ttl)


def allowlist(config: Config) -> Allowlist:
    """The configured allowlist and protected ranges (the store's entries are added per use)."""
    return build_allowlist(config.allowlist.networks, config.safety.protect)


def feed_policy(config: Config) -> FeedPolicy:
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
    protect = NetworkSet((n, True) for n in config.safety.protect)
    for fg in config.fortigates:
        where = f"fortigates[{fg.name}]"
        if fg.url.startswith("http://"):
            found.append(f"{where}.url: plain http sends the token in clear — use https")
        if fg.token is not None:
            found.append(f"{where}.token: a literal token in the config — prefer token_env")
        if not fg.verify_tls:
            found.append(f"{where}.verify_tls: false — set ca_file to the device's CA instead")
        host = urlsplit(fg.url).hostname or ""
        try:
            address = parse_address(host)
        except InputError:
            found.append(
                f"{where}.url: {host} is a name; banfeed resolves nothing, so it cannot check "
                "that this device's address is in [safety] protect"
            )
        else:
            if protect.match(address) is None and never_block_reason(address) is None:
                found.append(
                    f"{where}.url: {address} is not in [safety] protect — add your FortiGates' "
                    "and your own public ranges so they can never be published"
                )
        if fg.token_file is not None:
            path = fg.token_file if fg.token_file.is_absolute() else config.base_dir / fg.token_file
            try:
                if path.stat().st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                    found.append(f"{where}.token_file: {path} is readable by others — chmod 600")
            except OSError:
                pass  # resolve_token reports an unreadable file with its reason
    return found


def push_targets(config: Config) -> list[DeviceTarget]:
    """Devices that receive pushed quarantines (per device ``push_quarantine``, else [push])."""
    wanted = {
        fg.name
        for fg in config.fortigates
        if (fg.push_quarantine if fg.push_quarantine is not None else config.push.quarantine)
    }
    return [t for t in targets(config) if t.name in wanted]


def feed_push_targets(config: Config) -> list[tuple[DeviceTarget, str]]:
    """(device, name of its push-type threat feed) for devices with ``push_feed``."""
    resources = {fg.name: fg.push_feed for fg in config.fortigates if fg.push_feed}
    return [(t, resources[t.name]) for t in targets(config) if t.name in resources]


async def push_after_cycle(
    config: Config,
    store: Store,
    report: CycleReport,
    feed_lines: list[str] | None,
    *,
    now: int,
    backoff: Backoff,
    sync: FeedSync,
) -> list[PushResult]:
    """Push what a cycle found to the FortiGates that want it; log each device's outcome."""
    results: list[PushResult] = []
    receivers = push_targets(config)
    if receivers and report.published:
        results += await push_quarantine(
            receivers,
            report.published,
            now=now,
            max_per_cycle=config.push.max_per_cycle,
            max_expiry=config.push.max_expiry,
            backoff=backoff,
            store=store,
        )
    feed_targets = feed_push_targets(config)
    if feed_targets and feed_lines is not None:
        results += await sync.sync(feed_targets, feed_lines, now=now, backoff=backoff)
    for result in results:
        if result.error is not None:
            log.warning("push %s to %s failed: %s", result.action, result.device, result.error)
        elif result.count or result.skipped:
            log.info(
                "push %s to %s: %d sent, %d skipped",
                result.action,
                result.device,
                result.count,
                result.skipped,
            )
    return results


def make_collector(config: Config, store: Store, clock: Clock) -> Collector:
    return Collector(
        store,
        targets(config),
        retention(config),
        allowlist(config),
        clock=clock,
        concurrency=config.collect.concurrency,
    )


@dataclass
class Runtime:
    """What every command needs, built once from the Config."""

    config: Config
    store: Store
    clock: Clock

    def collector(self) -> Collector:
        return make_collector(self.config, self.store, self.clock)

    def close(self) -> None:
        self.store.close()


async def collect_once(rt: Runtime) -> tuple[CycleReport, list[PushResult]]:
    """One cycle and what it pushes (``banfeed collect``): no memory between runs, so a
    push-type feed gets a snapshot each time."""
    report = await rt.collector().cycle()
    lines = None
    if rt.config.push.feed and feed_push_targets(rt.config):
        feed = rt.config.feed(rt.config.push.feed)
        with rt.store.read() as conn:
            build = build_feed(conn, feed_spec(feed), feed_policy(rt.config), int(rt.clock()))
            state = q.feed_states(conn).get(feed.name)
        lines = [str(e) for e in build.entries]
        served = int(state["entries"]) if state else 0
        if served and len(lines) < (1 - rt.config.safety.max_drop) * served:
            # The mass-drop guard of the one-shot path: no server holds a last good version
            # here, so rather than snapshot a feed that lost most of its lines, do not sync.
            log.error(
                "push feed %s: %d lines where %d were last served; not syncing (check the "
                "store; a running server would hold this feed)",
                feed.name,
                len(lines),
                served,
            )
            lines = None
    pushes = await push_after_cycle(
        rt.config, rt.store, report, lines, now=int(rt.clock()), backoff=Backoff(), sync=FeedSync()
    )
    return report, pushes


def runtime(config: Config, *, create_store: bool = False, clock: Clock = system_clock) -> Runtime:
    return Runtime(config, open_store(config.store_url(), create=create_store), clock)


# -- the daemon ------------------------------------------------------------------------------

REFRESH_SECONDS = 1.0  # how often feeds check the store version: changes are served within it
FLUSH_SECONDS = 5.0  # how often consumer fetch records are written to the store


def feed_access(config: Config) -> dict[str, FeedAccess]:
    """Per-feed credentials, resolved now: a feed whose secret is missing is a config error."""
    access = {}
    for feed in config.feeds:
        auth = feed.auth
        where = f"feeds[{feed.name}].auth"
        secret = None
        if auth.type == "basic":
            secret = read_secret(
                f"{where}.password",
                auth.password,
                auth.password_env,
                auth.password_file,
                config.base_dir,
                what="password consumers send",
            )
        elif auth.type == "bearer":
            secret = read_secret(
                f"{where}.token",
                auth.token,
                auth.token_env,
                auth.token_file,
                config.base_dir,
                what="token consumers send",
            )
        access[feed.name] = FeedAccess(
            kind=auth.type,
            username=auth.username,
            secret=secret,
            allow_from=tuple(feed.allow_from),
        )
    return access


class _Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: the daemon decides how to stop (and never
    re-raises the signal after shutdown, which would kill the process mid-cleanup)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    """``banfeed run`` (collect + serve) and ``banfeed serve`` (serve only), in one event loop."""

    def __init__(self, config: Config, *, collect: bool = True, clock: Clock = system_clock):
        self.config = config
        self.collect = collect
        self.clock = clock
        self.access = feed_access(config)  # before anything starts: fail fast on secrets
        for key in ("cert_file", "key_file"):
            path = _path(config, getattr(config.server, key))
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"server.{key}: {path} is not a readable file")
        self.store = open_store(config.store_url())
        self.cache = FeedCache(
            self.store, [feed_spec(f) for f in config.feeds], feed_policy(config), clock
        )
        self.state = ServerState(
            cache=self.cache,
            access=self.access,
            clock=clock,
            interval=config.collect.interval,
            collecting=collect,
        )
        self._stop = asyncio.Event()
        self._refresh_now = asyncio.Event()
        self._server: _Server | None = None
        self.url: str | None = None
        self._sock: socket.socket | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        shared = config.collect.shared
        if shared is None:
            shared = self.store.dialect == "postgresql"
        self.leases = Leases(self.store, clock) if collect and shared else None
        self._push_backoff = Backoff()
        self._feed_sync = FeedSync()
        self.cycles = 0

    def bind(self) -> socket.socket:
        """Open the listening socket now (so the URL is known before serving)."""
        if self._sock is None:
            server_cfg = self.config.server
            self._sock = _bind(*split_listen(server_cfg.listen))
            host, port = self._sock.getsockname()[:2]
            scheme = "https" if server_cfg.cert_file else "http"
            self.url = f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"
        return self._sock

    def stop_threadsafe(self) -> None:
        """Ask a daemon running in another thread to stop (tests, embedding)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_stop)

    def request_stop(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True

    async def run(self, *, sock: socket.socket | None = None, signals: bool = True) -> None:
        loop = self._loop = asyncio.get_running_loop()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
        server_cfg = self.config.server
        sock = sock or self._sock or self.bind()
        uv_config = uvicorn.Config(
            create_app(self.state),
            log_config=None,
            access_log=False,
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            ssl_certfile=_path(self.config, server_cfg.cert_file),
            ssl_keyfile=_path(self.config, server_cfg.key_file),
        )
        self._server = _Server(uv_config)
        await asyncio.to_thread(self.cache.refresh)
        tasks = [
            asyncio.create_task(self._refresh_loop()),
            asyncio.create_task(self._flush_loop()),
        ]
        if self.collect:
            tasks.append(asyncio.create_task(self._collect_loop()))
        try:
            await self._server.serve(sockets=[sock])
        finally:
            self._stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self._flush)
            if self.leases is not None:
                with contextlib.suppress(BanfeedError):
                    await asyncio.to_thread(self.leases.leave)
            self.store.close()
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
            log.info("stopped")

    async def _collect_loop(self) -> None:
        collector = make_collector(self.config, self.store, self.clock)
        interval, jitter = self.config.collect.interval, self.config.collect.jitter
        while not self._stop.is_set():
            try:
                only = None
                if self.leases is not None:
                    only = await asyncio.to_thread(self.leases.assign, collector.keys())
                report = await collector.cycle(only)
            except BanfeedError as exc:  # the store is down: say so, try again next interval
                log.error("cycle failed: %s", exc)
            else:
                self.cycles += 1
                await asyncio.to_thread(self.cache.refresh)
                log.info("%s", cycle_line(report, self.cache))
                await push_after_cycle(
                    self.config,
                    self.store,
                    report,
                    self._feed_lines(),
                    now=int(self.clock()),
                    backoff=self._push_backoff,
                    sync=self._feed_sync,
                )
            delay = interval * random.uniform(1 - jitter, 1 + jitter)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=delay)

    def _feed_lines(self) -> list[str] | None:
        """The lines of the feed pushed to push-type threat feeds, as served now."""
        name = self.config.push.feed
        entry = self.cache.entries.get(name) if name else None
        return None if entry is None else [str(e) for e in entry.build.entries]

    async def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(REFRESH_SECONDS)
            await asyncio.to_thread(self.cache.refresh)
            if self.leases is not None:
                try:
                    await asyncio.to_thread(self.leases.heartbeat)
                except BanfeedError as exc:  # the store is down: the cache says so already
                    log.debug("heartbeat failed: %s", exc)

    async def _flush_loop(self) -> None:
        while not self._stop.is_set():
            await asyncio.sleep(FLUSH_SECONDS)
            await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        fetches = self.state.fetches.take()
        if not fetches:
            return
        try:
            with self.store.write() as conn:
                q.record_fetches(conn, fetches)
        except BanfeedError as exc:
            log.warning("could not record %d feed fetches: %s", len(fetches), exc)


def cycle_line(report: CycleReport, cache: FeedCache) -> str:
    failed = ", ".join(f"{r.device}/{r.vdom} {r.error.kind}" for r in report.failed if r.error)
    sizes = ", ".join(f"{n}={len(e.build.entries)}" for n, e in sorted(cache.entries.items()))
    return (
        f"cycle: {len(report.results) - len(report.failed)}/{len(report.results)} polls ok"
        + (f" ({failed})" if failed else "")
        + f", {report.new_offenses} new offenses, {report.new_offenders} new offenders, "
        f"{report.rejected} rejected; feeds {sizes or 'none'}; {report.duration:.2f}s"
    )


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"server.listen: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def _path(config: Config, path: Path | None) -> str | None:
    if path is None:
        return None
    return str(path if path.is_absolute() else config.base_dir / path)
