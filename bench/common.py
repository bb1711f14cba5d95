"""Shared pieces of the benchmark suite: inputs from the simulator, the replay server, the two
sides (banfeed in a child process, the old cron way in another) and the machine's facts.

Nothing here talks to anything but 127.0.0.1; tools whose network behaviour is not ours to
vouch for (iprange) run in a network namespace of their own with loopback only (netns()).
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import httpx

from banfeed import simulator

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PYTHON = ROOT / ".venv" / "bin" / "python"
TOKEN = "bench-token-0123456789"
BANNED_PATH = "/api/v2/monitor/user/banned"
KIB = 1024


def launched(argv: list[str], peak_file: Path) -> list[str]:
    """``argv`` started by ``/usr/bin/time -f %M -o peak_file``: a small process that forks.

    Needed for honest peak RSS on Linux: a child's ru_maxrss starts at its parent's peak (the
    kernel records the vfork'ed image's high-water mark at exec), and this driver holds the
    simulated fleet. Started by a small forking launcher, the child's ru_maxrss (and the
    launcher's report, the max over the child and all its descendants) is its own.
    """
    return ["/usr/bin/time", "-f", "%M", "-o", str(peak_file), *argv]


def read_peak(peak_file: Path) -> int:
    """KiB written by ``/usr/bin/time -f %M`` (its last line)."""
    return int(peak_file.read_text().split()[-1])


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def mib(kib: int) -> float:
    return kib / KIB


# -- inputs: simulated devices, their answers captured once ---------------------------------


async def _capture(urls: dict[str, str]) -> dict[str, bytes]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    gate = asyncio.Semaphore(8)

    async def one(url: str) -> bytes:
        async with httpx.AsyncClient(base_url=url, timeout=600, trust_env=False) as client:
            async with gate:
                resp = await client.get(BANNED_PATH, params={"vdom": "root"}, headers=headers)
        resp.raise_for_status()
        return resp.content

    names = list(urls)
    bodies = await asyncio.gather(*(one(urls[n]) for n in names))
    return dict(zip(names, bodies, strict=True))


def capture(fleet: simulator.SimFleet, folder: Path, variant: str) -> dict[str, int]:
    """Save every device's current answer as ``folder/<device>.<variant>.json``; sizes."""
    folder.mkdir(parents=True, exist_ok=True)
    with simulator.start(fleet) as sim:
        bodies = asyncio.run(_capture(sim.urls))
    for name, body in bodies.items():
        (folder / f"{name}.{variant}.json").write_bytes(body)
    return {name: len(body) for name, body in bodies.items()}


def make_fleet(devices: int, entries: int, seed: int) -> simulator.SimFleet:
    """``devices`` simulated FortiGates with ``entries`` each (no expiry: stable answers)."""
    fleet = simulator.SimFleet(seed=seed)
    width = len(str(devices))
    for i in range(devices):
        name = "fw" if devices == 1 else f"fw{i + 1:0{width}d}"
        device = fleet.add_device(name, token=TOKEN, vdoms=["root"])
        device.populate("root", entries, ttl=None)
    return fleet


# -- the replay server (a child process) ----------------------------------------------------


class Replay:
    """bench/replay.py serving ``folder``; ``urls`` maps device name to its base URL."""

    def __init__(self, folder: Path, latency: float = 0.0) -> None:
        self.proc = subprocess.Popen(
            [str(PYTHON), str(BENCH / "replay.py"), "--dir", str(folder), "--token", TOKEN]
            + ["--latency", str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        first = self._line()
        if not first.startswith("ports "):
            self.stop()
            raise RuntimeError(f"replay server did not start: {first!r}")
        ports: dict[str, int] = json.loads(first.removeprefix("ports "))
        self.urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}

    def _line(self) -> str:
        assert self.proc.stdout is not None
        return self.proc.stdout.readline().strip()

    def command(self, text: str) -> str:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._line()

    def variant(self, name: str, device: str = "*") -> None:
        if (answer := self.command(f"variant {device} {name}")) != "ok":
            raise RuntimeError(f"replay: {answer}")

    def requests(self) -> int:
        return int(self.command("requests"))

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write("quit\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> Replay:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- banfeed's side (a child process) --------------------------------------------------------


class BanfeedSide:
    """bench/banfeed_side.py: a fresh process per measurement series."""

    def __init__(self, scratch: Path) -> None:
        self.peak_file = scratch / f".banfeed-side-{os.getpid()}-{id(self)}.rss"
        self.proc = subprocess.Popen(
            launched([str(PYTHON), str(BENCH / "banfeed_side.py")], self.peak_file),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def call(self, cmd: str, **params: Any) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"cmd": cmd, **params}) + "\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"banfeed side died during {cmd} (status {self.proc.wait()})")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise RuntimeError(f"banfeed side, {cmd}: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            assert self.proc.stdin is not None
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
                self.proc.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.peak_file.unlink(missing_ok=True)

    def __enter__(self) -> BanfeedSide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- the old way (a child process) -----------------------------------------------------------


@dataclass
class OldRun:
    seconds: float  # inside the script, interpreter start and imports excluded
    process_seconds: float  # the whole process, as cron would see it
    python_peak_kib: int
    child_peak_kib: dict[str, int]
    tree_peak_kib: int  # /usr/bin/time on the script: the max over it and all its children
    feed_lines: int
    entries: int
    device_seconds: list[float] = field(default_factory=list)


@dataclass
class OldWay:
    """The old cron job's persistent folders: the running list, web root, backups."""

    base: Path

    def __post_init__(self) -> None:
        for name in ("state", "webroot", "backups", "tmp"):
            (self.base / name).mkdir(parents=True, exist_ok=True)

    @property
    def feed(self) -> Path:
        return self.base / "webroot" / "banned.txt"

    def run(self, urls: Sequence[str], rss: bool = False) -> OldRun:
        """One cron run over ``urls`` in sequence (``rss``: also each command's peak RSS)."""
        b = self.base
        argv = [str(PYTHON), str(BENCH / "oldway.py"), "--token", TOKEN]
        argv += ["--state", str(b / "state"), "--webroot", str(b / "webroot")]
        argv += ["--backups", str(b / "backups"), "--tmp", str(b / "tmp")]
        argv += ["--rss", *urls] if rss else urls
        peak_file = b / "tmp" / ".oldway.rss"
        t = time.perf_counter()
        done = subprocess.run(launched(argv, peak_file), stdout=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - t
        if done.returncode != 0:
            raise RuntimeError(f"old way failed with status {done.returncode}")
        report = json.loads(done.stdout)
        return OldRun(
            seconds=report["seconds"],
            process_seconds=elapsed,
            python_peak_kib=report["python_peak_kib"],
            child_peak_kib=report["child_peak_kib"],
            tree_peak_kib=read_peak(peak_file),
            feed_lines=report["feed_lines"],
            entries=report["entries"],
            device_seconds=report["device_seconds"],
        )


# -- tools in a network namespace -----------------------------------------------------------


def netns(script: str, timeout: float = 600) -> str:
    """Run a bash script in a new network namespace (loopback only, brought up); its stdout."""
    done = subprocess.run(
        ["unshare", "-n", "bash", "-c", "ip link set lo up\n" + script],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"in netns: status {done.returncode}: {done.stderr.strip()}")
    return done.stdout


def check_tools(need: Sequence[str]) -> list[str]:
    hints = {
        "iprange": "apt-get update && apt-get install -y iprange",
        "unshare": "apt-get install -y util-linux",
        "ip": "apt-get install -y iproute2",
    }
    problems = [f"{t} not found: {hints.get(t, 'install it')}" for t in need if not shutil.which(t)]
    try:
        import requests  # noqa: F401
    except ImportError:
        problems.append("requests not in the venv: .venv/bin/pip install requests")
    if os.geteuid() != 0:
        problems.append("run as root: unshare -n (a network namespace of its own) needs it")
    return problems


# -- facts about the run ---------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return "not found"
    return (out.stdout or out.stderr).strip().splitlines()[0] if (out.stdout or out.stderr) else ""


def machine() -> dict[str, Any]:
    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo", encoding="utf-8") as handle:
        mem_kib = int(handle.readline().split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kib / KIB / KIB, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    from importlib.metadata import version

    found = {p: version(p) for p in ("banfeed", "httpx", "SQLAlchemy", "requests", "pyinstrument")}
    found["sqlite"] = __import__("sqlite3").sqlite_version
    found["iprange"] = _first_line(["iprange", "--version"])
    found["sort"] = _first_line(["sort", "--version"])
    return found


def self_peak_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def log(text: str, stream: IO[str] = sys.stdout) -> None:
    print(text, file=stream, flush=True)
