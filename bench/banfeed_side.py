#!/usr/bin/env python3
"""banfeed's side of the benchmarks, in a process of its own (so its peak RSS is its own).

Driven by ``bench/run.py`` over stdin/stdout, one JSON object a line each way. Every command
answers ``{"ok": true, ...}`` with ``seconds`` (the measured work only) and ``peak_kib`` (this
process's ru_maxrss so far), or ``{"ok": false, "error": ...}``.

- ``open``: config for ``devices`` [[name, url], ...] with ``token`` and ``concurrency``, a
  fresh SQLite store at ``db`` (``config.parse`` → ``compose.Runtime``, as bench/collect_100k.py).
- ``cycle``: one real collect cycle, by one collector for every cycle as `banfeed run` keeps it
  (it remembers the answers it stored: answer diffing); offense/offender/event rows written,
  counted in the store before and after.
- ``export``: the plain feed as ``banfeed export --output`` does it: ``Publisher.publish``,
  then the served version's body (``publish.served``) + ``write_atomically`` to ``out``.
- ``fetch``: the anchor: httpx GET + ``json.loads`` of every device's answer, with the same
  concurrency bound as banfeed (an asyncio semaphore of ``concurrency``), one shared client.
- ``fill``: offenders inserted straight into the store from a file of addresses (not measured
  against anything: it only prepares the aggregation benchmark).
- ``aggfeed``: ``build_feeds`` of ``FeedSpec(aggregate=True)`` + ``FeedBuild.text``, written to
  ``out`` with a plain write (iprange's side writes with a plain shell redirect).
- ``fingerprints``: the answer fingerprints the store keeps per device.
- ``quit``.

``"profile": true`` on cycle/export/aggfeed runs the command under pyinstrument and adds a
summary (top functions by self time and by inclusive time, and by package). For the profile,
``asyncio.to_thread`` is made to run inline, so the collector's write phase (a worker thread
in production) is seen by pyinstrument, which samples one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

_STARTED = time.perf_counter()

import httpx  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from banfeed import compose, config, publish  # noqa: E402
from banfeed.collector import Collector  # noqa: E402
from banfeed.models import Family, Offender, OffenderStatus  # noqa: E402
from banfeed.publish import FeedSpec, build_feeds  # noqa: E402
from banfeed.publish.inputs import read_inputs  # noqa: E402
from banfeed.publish.render import write_atomically  # noqa: E402
from banfeed.store import open_store  # noqa: E402
from banfeed.store._offenders import OffenderQueries  # noqa: E402
from banfeed.store.schema import events, offenders, offenses  # noqa: E402
from banfeed.timeutil import system_clock  # noqa: E402

IMPORT_SECONDS = time.perf_counter() - _STARTED
BANNED_PATH = "/api/v2/monitor/user/banned"
MAX_ENTRIES = 10_000_000  # the config's ceiling: every offender is published, like the old way
T = TypeVar("T")


def peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


# -- profiling -------------------------------------------------------------------------------


def _component(path: str) -> str:
    """The package a frame belongs to, from its file path."""
    for marker in ("site-packages/", "dist-packages/"):
        if marker in path:
            return path.split(marker, 1)[1].split("/", 1)[0].removesuffix(".py")
    if "/banfeed/" in path:
        return "banfeed"
    if "/lib/python" in path:
        return "stdlib"
    if path.startswith("<"):
        return "builtin"
    return Path(path).stem


def short_path(path: str) -> str:
    """``banfeed/collector.py``, ``sqlalchemy/...``, ``json/decoder.py``: where a frame is."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    if "/banfeed/" in path:
        return "banfeed/" + path.rsplit("/banfeed/", 1)[1]
    if "/lib/python3" in path:
        return path.split("/lib/python3", 1)[1].split("/", 1)[-1]
    return path


def _label(frame: Any) -> str:
    path = str(frame.file_path or "")
    short = short_path(path)
    return f"{frame.function} ({short}:{frame.line_no})"


def summarize(session: Any, top: int = 15) -> dict[str, Any]:
    """Self and inclusive time per function (recursion counted once) and self time by package."""
    root = session.root_frame()
    total = root.time if root is not None else 0.0
    self_time: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_component: Counter[str] = Counter()

    def walk(frame: Any, active: frozenset[str], caller: str) -> None:
        label = _label(frame)
        real = [c for c in frame.children if not c.is_synthetic]
        own = frame.time - sum(c.time for c in real)
        self_time[label] += own
        component = _component(str(frame.file_path or ""))
        if component == "builtin":  # C functions count for the package that called them
            component = caller
        by_component[component] += own
        if label not in active:
            inclusive[label] += frame.time
        for child in real:
            walk(child, active | {label}, component)

    if root is not None:
        walk(root, frozenset(), "builtin")

    def shares(counter: Counter[str], n: int) -> list[tuple[str, float]]:
        return [(k, round(100 * v / total, 1)) for k, v in counter.most_common(n)] if total else []

    banfeed_inclusive = Counter({k: v for k, v in inclusive.items() if "banfeed/" in k})
    return {
        "seconds": round(total, 3),
        "self": shares(self_time, top),
        "inclusive_banfeed": shares(banfeed_inclusive, top),
        "by_package": shares(by_component, 10),
    }


@contextlib.contextmanager
def inline_to_thread() -> Iterator[None]:
    real = asyncio.to_thread

    async def inline(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
        return func(*args, **kwargs)

    asyncio.to_thread = inline
    try:
        yield
    finally:
        asyncio.to_thread = real


def measured(profile: bool, work: Callable[[], T]) -> tuple[T, float, dict[str, Any] | None]:
    if not profile:
        t = time.perf_counter()
        result = work()
        return result, time.perf_counter() - t, None
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.001, async_mode="disabled")
    with inline_to_thread():
        profiler.start()
        t = time.perf_counter()
        result = work()
        elapsed = time.perf_counter() - t
        session = profiler.stop()
    return result, elapsed, summarize(session)


# -- the commands ----------------------------------------------------------------------------


class Side:
    def __init__(self) -> None:
        self.rt: compose.Runtime | None = None
        self.collector: Collector | None = None  # one for every cycle, as `banfeed run` keeps
        self.devices: list[tuple[str, str]] = []
        self.token = ""
        self.concurrency = 16

    @property
    def runtime(self) -> compose.Runtime:
        assert self.rt is not None, "open first"
        return self.rt

    def counts(self) -> dict[str, int]:
        with self.runtime.store.read() as tx:
            return {
                t.name: tx.conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
                for t in (offenses, offenders, events)
            }

    def open(
        self, db: str, devices: list[list[str]], token: str, concurrency: int
    ) -> dict[str, Any]:
        self.devices = [(name, url) for name, url in devices]
        self.token, self.concurrency = token, concurrency
        folder = Path(db).parent
        cfg = config.parse(
            {
                "store": {"url": f"sqlite:///{db}"},
                "fortigates": [
                    {"name": name, "url": url, "token": token, "timeout": "10m"}
                    for name, url in self.devices
                ],
                "feeds": [{"name": "quarantine", "max_entries": MAX_ENTRIES}],
                "collect": {"concurrency": concurrency},
            },
            base_dir=folder,
        )
        t = time.perf_counter()
        self.rt = compose.Runtime(cfg, open_store(cfg.store_url(), create=True), system_clock)
        self.collector = self.rt.collector()
        return {"seconds": time.perf_counter() - t, "import_seconds": IMPORT_SECONDS}

    def cycle(self, profile: bool = False, repr_cost: bool = False) -> dict[str, Any]:
        """One collect cycle. The coroutine given to ``asyncio.run`` returns a small summary,
        not the CycleReport: on exit CPython 3.11's ``asyncio.Runner`` formats a repr of its
        SIGINT handler, ``partial(main_task=task)``, so a large task result would be repr'd
        in full twice (``signal.getsignal`` and ``signal.signal`` each build a ValueError
        message). ``repr_cost`` measures what that costs when the report is the result, as
        with ``banfeed collect`` (``asyncio.run(cycles.collect_once(rt))``)."""
        before = self.counts()
        collector = self.collector
        assert collector is not None, "open first"

        async def run() -> dict[str, Any]:
            report = await collector.cycle()
            extra: dict[str, Any] = {}
            if repr_cost:
                t = time.perf_counter()
                extra["repr_seconds"] = 2 * (len(repr(report)) and time.perf_counter() - t)
            return {
                "new_offenses": report.new_offenses,
                "unchanged": sum(r.unchanged for r in report.results),
                "results": len(report.results),
                "entries": sum(r.entries for r in report.results),
                "failed": [f"{r.device}: {r.error}" for r in report.failed],
                **extra,
            }

        result, elapsed, summary = measured(profile, lambda: asyncio.run(run()))
        after = self.counts()
        written = {k: after[k] - before[k] for k in after}
        return {"seconds": elapsed, "written": written, **result, "profile": summary}

    def export(self, out: str, profile: bool = False) -> dict[str, Any]:
        rt = self.runtime

        def work() -> int:
            publisher = rt.publisher()
            publisher.publish()
            with rt.store.read() as tx:
                shown = publish.served(tx, "quarantine")
            assert shown is not None, "nothing published"
            write_atomically(Path(out), shown.body())
            return shown.version.entries

        lines, elapsed, summary = measured(profile, work)
        return {"seconds": elapsed, "lines": lines, "profile": summary}

    def fetch(self) -> dict[str, Any]:
        """The anchor: one shared httpx client (created inside the timing), GET every device
        with at most ``concurrency`` in flight, ``json.loads`` each answer. Nothing else."""
        headers = {"Authorization": f"Bearer {self.token}"}

        async def one(client: httpx.AsyncClient, url: str, gate: asyncio.Semaphore) -> int:
            async with gate:
                resp = await client.get(url + BANNED_PATH, params={"vdom": "root"}, headers=headers)
                resp.raise_for_status()
                return len(json.loads(resp.content)["results"])

        async def every() -> list[int]:
            gate = asyncio.Semaphore(self.concurrency)
            limits = httpx.Limits(max_connections=self.concurrency)
            async with httpx.AsyncClient(timeout=600, trust_env=False, limits=limits) as client:
                return await asyncio.gather(*(one(client, url, gate) for _n, url in self.devices))

        t = time.perf_counter()
        counts = asyncio.run(every())
        return {"seconds": time.perf_counter() - t, "entries": sum(counts)}

    def fill(self, ips: str) -> dict[str, Any]:
        rt = self.runtime
        now = int(rt.clock())
        t = time.perf_counter()
        rows = []
        with open(ips, encoding="ascii") as handle:
            for line in handle:
                ip = IPv4Address(line.strip())
                offender = Offender(
                    ip, now, now, 1, ("IPS",), ("fw",), ("fw/root",), None, OffenderStatus.LISTED
                )
                rows.append(offender)
        with rt.store.write() as tx:
            tx.insert_offenders(rows, now)
            tx.bump_version()
        return {"seconds": time.perf_counter() - t, "offenders": len(rows)}

    def aggfeed(self, out: str, profile: bool = False) -> dict[str, Any]:
        rt = self.runtime
        policy = compose.feed_policy(rt.config)
        spec = FeedSpec("aggregated", family=Family.IPV4, aggregate=True, max_entries=MAX_ENTRIES)

        def work() -> int:
            now = int(rt.clock())
            with rt.store.read() as tx:
                build = build_feeds([spec], policy, read_inputs(tx, now))[spec.name]
            with open(out, "wb") as handle:
                handle.write(build.text())
            return len(build.entries)

        lines, elapsed, summary = measured(profile, work)
        return {"seconds": elapsed, "lines": lines, "profile": summary}

    def memprofile(self, top: int = 12) -> dict[str, Any]:
        """Where the first cycle's memory goes (tracemalloc: Python allocations only).

        The poll and the write phase run one after the other as ``cycle()`` runs them; live
        allocations are snapshotted when the poll is done (the parsed answers the write
        needs) and when the write starts inserting offenses (its working set at its largest).
        """
        import tracemalloc

        rt = self.runtime
        collector = rt.collector()
        now = int(rt.clock())
        with rt.store.read() as tx:
            statuses = tx.device_statuses()
        snaps: dict[str, Any] = {}

        def tops(snapshot: Any) -> list[tuple[str, float]]:
            stats = snapshot.statistics("lineno")[:top]
            return [
                (
                    f"{short_path(st.traceback[0].filename)}:{st.traceback[0].lineno}",
                    round(st.size / 2**20, 1),
                )
                for st in stats
            ]

        real_insert = OffenderQueries.insert_offenses

        def insert_offenses(self: OffenderQueries, items: Any, seen: int) -> None:
            snaps["write"] = tracemalloc.take_snapshot()
            real_insert(self, items, seen)

        tracemalloc.start()
        results = asyncio.run(collector.poll(statuses, now))
        poll_peak = tracemalloc.get_traced_memory()[1]
        snaps["poll"] = tracemalloc.take_snapshot()
        rss_poll = peak_kib()
        tracemalloc.reset_peak()
        OffenderQueries.insert_offenses = insert_offenses  # type: ignore[method-assign]
        try:
            collector._write(results, statuses, now)
        finally:
            OffenderQueries.insert_offenses = real_insert  # type: ignore[method-assign]
        write_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return {
            "entries": sum(r.entries for r in results),
            "rss_after_poll_mib": round(rss_poll / 1024),
            "rss_after_write_mib": round(peak_kib() / 1024),
            "tracemalloc": {
                "poll (live when polling is done)": {
                    "peak_mib": poll_peak / 2**20,
                    "top": tops(snaps["poll"]),
                },
                "write (live when offenses are inserted)": {
                    "peak_mib": write_peak / 2**20,
                    "top": tops(snaps["write"]) if "write" in snaps else [],
                },
            },
        }

    def fingerprints(self) -> dict[str, Any]:
        with self.runtime.store.read() as tx:
            statuses = tx.device_statuses()
        return {"fingerprints": {d: s.fingerprint for (d, _v), s in statuses.items()}}


def main() -> None:
    side = Side()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the protocol channel
    for line in sys.stdin:
        request = json.loads(line)
        cmd = request.pop("cmd")
        if cmd == "quit":
            break
        try:
            answer = getattr(side, cmd)(**request)
            answer = {"ok": True, **answer, "peak_kib": peak_kib()}
        except Exception as exc:  # reported to the driver, which stops the run
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()
    if side.rt is not None:
        side.rt.store.close()
    os._exit(0)  # skip teardown of a large heap: nothing left to flush


if __name__ == "__main__":
    main()
