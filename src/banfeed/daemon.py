"""`banfeed run` (collect and serve) and `banfeed serve` (serve only): one supervised event loop.

Every background loop is supervised: a ``BanfeedError`` (the store down, a device failing) is
logged at ERROR, naming what failed, and the loop goes on; anything unexpected is logged with its
traceback and stops the daemon with a non-zero exit, so a service manager restarts it. No task
dies unobserved.

``run`` also prunes every ``[retention] prune_every`` (what ``banfeed prune`` does). SIGHUP reloads
the config file: read, validated and swapped whole (feeds, devices, retention, push, log), or
refused whole — a file that does not load, a secret that cannot be read, or a change of
``[store]``, ``[server]`` or ``collect.shared``, which take a restart — and logged either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import uvicorn

from . import alerts, checks, control, logsetup, reload
from .collector import Collector, CycleReport
from .compose import config_path_of, feed_access, feed_cache, make_collector, publisher
from .config import Config, split_listen
from .cycles import push_after_cycle
from .errors import BanfeedError, ConfigError
from .push import Backoff, FeedSync
from .server import FeedCache, GuardedServer, ServerState, connection_limits, create_app
from .server.auth import status_access
from .store import open_store
from .store.leases import Leases
from .store.lock import WriterLock, acquire_writer_lock
from .timeutil import Clock, system_clock
from .web import dashboard_routes

log = logging.getLogger("banfeed")

REFRESH_SECONDS = 1.0  # how often feeds check the store version: changes are served within it
FLUSH_SECONDS = 5.0  # how often consumer fetch records are written to the store
PRUNE_CHECK_SECONDS = 60  # how often `run` asks whether a prune is due (prune_every)
PRUNE_ACTOR = "banfeed run"  # who the audit log says recorded a scheduled prune's expiries


class _Server(GuardedServer):
    """uvicorn, minus its own signal handling: the daemon decides how to stop (and never
    re-raises the signal after shutdown, which would kill the process mid-cleanup)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    """``banfeed run`` (collect + serve) and ``banfeed serve`` (serve only), in one event loop."""

    def __init__(
        self,
        config: Config,
        *,
        collect: bool = True,
        clock: Clock = system_clock,
        config_file: Path | None = None,
    ):
        self.config = config
        self.collect = collect
        self.clock = clock
        self.config_file = config_file  # what SIGHUP reloads
        self.access = feed_access(config)  # before anything starts: fail fast on secrets
        self.limits = connection_limits(config.server, polls=config.collect.concurrency * collect)
        for key in ("cert_file", "key_file"):
            path = config_path_of(config, getattr(config.server, key))
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"server.{key}: {path} is not a readable file")
        logsetup.configure_access(reload.access_log(config), config.log.format)
        self.store = open_store(config.store_url())
        self._lock: WriterLock | None = None
        if collect and self.store.path is not None:
            try:  # one collecting daemon per SQLite store; PostgreSQL replicas use leases
                self._lock = acquire_writer_lock(self.store.path)
            except BanfeedError:
                self.store.close()
                raise
        self.publisher = publisher(config, self.store, clock)
        self.cache = feed_cache(config, self.store, self.publisher, clock)
        self.state = ServerState(
            cache=self.cache,
            access=self.access,
            clock=clock,
            interval=config.collect.interval,
            collecting=collect,
            trusted_proxies=tuple(config.server.trusted_proxies),
            status=status_access(config.server, config.base_dir),  # secrets read: fail fast
        )
        self._stop = asyncio.Event()
        self._woken = asyncio.Event()  # a reload: the collection loop polls the new fleet now
        self._refreshing = asyncio.Lock()  # one feed cache refreshes at a time, old or new
        self._reloading = asyncio.Lock()
        self._reloads: set[asyncio.Task[None]] = set()
        self.reloads = 0  # reloads applied
        self.prunes = 0  # scheduled prunes done
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
        self.crashed: BaseException | None = None  # what stopped a loop unexpectedly

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

    def reload_threadsafe(self) -> None:
        """SIGHUP, from another thread (tests, embedding)."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.request_reload)

    def request_reload(self) -> None:
        """Reload the config file (SIGHUP); reloads run one after the other."""
        task = self._supervise("reload", self._reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def run(self, *, sock: socket.socket | None = None, signals: bool = True) -> None:
        """Serve (and collect) until asked to stop, or until a loop fails unexpectedly
        (then ``crashed`` holds the error, already logged with its traceback)."""
        loop = self._loop = asyncio.get_running_loop()
        if signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        server_cfg = self.config.server
        sock = sock or self._sock or self.bind()
        uv_config = uvicorn.Config(
            create_app(self.state, dashboard_routes(self)),
            log_config=None,
            access_log=True,  # whether requests are logged is logsetup.configure_access's call
            lifespan="off",
            server_header=False,
            timeout_graceful_shutdown=5,
            **self.limits.uvicorn_options(),  # TCP_NODELAY, head size and time, the cap
            ssl_certfile=config_path_of(self.config, server_cfg.cert_file),
            ssl_keyfile=config_path_of(self.config, server_cfg.key_file),
        )
        self._server = _Server(uv_config)
        await asyncio.to_thread(self.cache.refresh)
        tasks = [
            self._supervise("feed refresh", self._every(REFRESH_SECONDS, self._refresh_step)),
            self._supervise("fetch records", self._every(FLUSH_SECONDS, self._flush_step)),
        ]
        if self.collect:
            for warning in checks.unverified_tls(self.config):
                log.warning("%s", warning)
            tasks.append(self._supervise("collection", self._collect_loop()))
            tasks.append(self._supervise("scheduled prune", self._prune_loop()))
        try:
            await self._server.serve(sockets=[sock])
        finally:
            self._stop.set()
            tasks += self._reloads
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self._flush)
            if self.leases is not None:
                with contextlib.suppress(BanfeedError):
                    await asyncio.to_thread(self.leases.leave)
            self.store.close()
            if self._lock is not None:
                self._lock.release()
            if signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)
            logsetup.configure_access(False, self.config.log.format)  # closes an access log file
            log.info("stopped")

    # -- supervision --------------------------------------------------------------------------

    def _supervise(self, what: str, job: Awaitable[None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(job)

        def done(finished: asyncio.Task[None]) -> None:
            if finished.cancelled():
                return
            error = finished.exception()
            if error is not None:
                log.critical("%s stopped unexpectedly; stopping banfeed", what, exc_info=error)
                self.crashed = error
                self.request_stop()

        task.add_done_callback(done)
        return task

    async def _every(self, seconds: float, step: Callable[[], Awaitable[None]]) -> None:
        while not self._stop.is_set():
            await self._sleep(seconds)
            if not self._stop.is_set():
                await step()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=seconds)

    async def _nap(self, seconds: float) -> None:
        """Sleep until stopped, reloaded or ``seconds`` have passed."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self._stop, self._woken)]
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for wait in waits:
            wait.cancel()
        self._woken.clear()

    async def _refresh(self) -> None:
        async with self._refreshing:
            await asyncio.to_thread(self.cache.refresh)

    # -- reload (SIGHUP) ----------------------------------------------------------------------

    async def _reload(self) -> None:
        async with self._reloading:
            path = self.config_file
            if path is None:
                log.warning("SIGHUP: no config file to reload; restart banfeed to change it")
                return
            try:
                new, access = await asyncio.to_thread(reload.check, self.config, path)
            except BanfeedError as exc:
                log.error("reload of %s refused; the running configuration is kept: %s", path, exc)
                return
            old = self.config
            cache = feed_cache(new, self.store, publisher(new, self.store, self.clock), self.clock)
            async with self._refreshing:
                await asyncio.to_thread(cache.refresh)  # the new feeds published, then served
                self.config, self.access = new, access
                self.publisher, self.cache = cache.publisher, cache
                self.state.cache, self.state.access = cache, access
                self.state.interval = new.collect.interval
            logsetup.reconfigure(new.log.level, new.log.format)
            # Checked by reload.check a moment ago: a failure now is a race, and stops banfeed.
            logsetup.configure_access(reload.access_log(new), new.log.format)
            cert = config_path_of(new, new.server.cert_file)
            live = self._server.config.ssl if self._server is not None else None
            if cert is not None and live is not None:  # a renewed certificate, same paths
                key = config_path_of(new, new.server.key_file)
                await asyncio.to_thread(live.load_cert_chain, cert, key)
            self.reloads += 1
            self._woken.set()
            log.info("reloaded %s: %s", path, reload.describe_changes(old, new))

    # -- the loops ----------------------------------------------------------------------------

    async def _collect_loop(self) -> None:
        config = self.config
        collector = make_collector(config, self.store, self.clock)
        while not self._stop.is_set():
            if config is not self.config:  # reloaded: the new fleet, from this cycle on
                config = self.config
                collector = make_collector(config, self.store, self.clock)
            try:
                await self._cycle(collector)
            except BanfeedError as exc:  # the store is down: say so, try again next interval
                log.error("cycle failed: %s", exc)
            interval, jitter = config.collect.interval, config.collect.jitter
            await self._nap(interval * random.uniform(1 - jitter, 1 + jitter))

    async def _prune_loop(self) -> None:
        """What `banfeed prune` does, every [retention] prune_every, by whichever replica finds
        it due first (the store's ``last_prune`` says when it last ran, whoever ran it)."""
        while not self._stop.is_set():
            every = self.config.retention.prune_every
            if every is not None:
                try:
                    await asyncio.to_thread(self._prune_if_due, every)
                except BanfeedError as exc:  # the store is down: try again at the next check
                    log.error("scheduled prune failed: %s", exc)
            await self._sleep(min(every or PRUNE_CHECK_SECONDS, PRUNE_CHECK_SECONDS))

    def _prune_if_due(self, every: int) -> None:
        now = int(self.clock())
        with self.store.read() as tx:
            last = int(tx.get_meta("last_prune") or 0)
        if now - last < every:
            return
        keep = self.config.retention.keep_history
        report = control.prune(self.store, keep_history=keep, actor=PRUNE_ACTOR, now=now)
        self.prunes += 1
        done = report.expired_events or report.offenses or report.events or report.offenders
        log.log(
            logging.INFO if done else logging.DEBUG,
            "prune: %d offenders expired (events recorded); deleted %d offenses, %d events and "
            "%d long-expired offenders",
            report.expired_events,
            report.offenses,
            report.events,
            report.offenders,
        )

    async def _cycle(self, collector: Collector) -> None:
        only = None
        if self.leases is not None:
            only = await asyncio.to_thread(self.leases.assign, collector.keys())
        report = await collector.cycle(only)
        self.cycles += 1
        await self._refresh()
        level = logging.WARNING if report.failed else logging.INFO
        log.log(level, "%s", cycle_line(report, self.cache))
        alerts.after_cycle(self, report, collector.targets, checks.verify_feed)  # never waits
        try:
            await push_after_cycle(
                self.config,
                self.store,
                report,
                self._feed_lines(),
                now=int(self.clock()),
                backoff=self._push_backoff,
                sync=self._feed_sync,
            )
        except BanfeedError as exc:
            log.error("push after the cycle failed: %s", exc)

    def _feed_lines(self) -> list[str] | None:
        """The lines of the feed pushed to push-type threat feeds, as served now."""
        name = self.config.push.feed
        entry = self.cache.entries.get(name) if name else None
        return None if entry is None else entry.text.body.decode("ascii").splitlines()

    async def _refresh_step(self) -> None:
        await self._refresh()  # the cache logs and reports its own store errors
        if self.leases is not None:
            try:
                await asyncio.to_thread(self.leases.heartbeat)
            except BanfeedError as exc:  # the store is down: the cache says so already
                log.debug("heartbeat failed: %s", exc)

    async def _flush_step(self) -> None:
        await asyncio.to_thread(self._flush)

    def _flush(self) -> None:
        fetches = self.state.fetches.take()
        if not fetches:
            return
        try:
            with self.store.write() as tx:
                self.state.fetches.write(tx, fetches, int(self.clock()))  # bounded
        except BanfeedError as exc:
            log.warning("could not record %d feed fetches: %s", len(fetches), exc)


def cycle_line(report: CycleReport, cache: FeedCache) -> str:
    """One log line per cycle; failed polls are named with their kind."""
    failed = ", ".join(f"{r.device}/{r.vdom} {r.error.kind}" for r in report.failed if r.error)
    sizes = ", ".join(f"{n}={e.served.version.entries}" for n, e in sorted(cache.entries.items()))
    return (
        f"cycle: {len(report.results) - len(report.failed)}/{len(report.results)} polls ok"
        + (f" (failed: {failed})" if failed else "")
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
