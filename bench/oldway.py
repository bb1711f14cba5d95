#!/usr/bin/env python3
"""The cron job banfeed replaces, re-implemented faithfully: the benchmarks' baseline.

What sites ran before banfeed, every few minutes from cron, one FortiGate after another::

    for fw in $FIREWALLS; do
        python3 fetch_banned.py "https://$fw/api/v2/monitor/user/banned?access_token=$TOKEN" \\
            > /tmp/banned.new                                   # requests + response.json()
        touch /var/lib/banned/banned.txt
        sort /tmp/banned.new /var/lib/banned/banned.txt | uniq > /tmp/banned.merged
        sed -i '/^10\\./d; /^192\\.168\\./d' /tmp/banned.merged  # our own networks
        cp /tmp/banned.merged /var/lib/banned/banned.txt
        cp /tmp/banned.merged /var/www/html/banned.txt
        cp /var/www/html/banned.txt /var/backups/banned/banned.txt.$(date +%Y%m%d%H%M%S)
        find /var/backups/banned -name 'banned.txt.*' -mmin +60 -delete
    done

Here the fetch (``requests.get`` with the token in the query string, ``response.json()``, one
``ip_address`` a line, no validation) runs in this Python process and every other step is a
subprocess exactly as the shell runs it (``sort | uniq`` as a pipe). Devices are done strictly
in sequence. The environment of the children is cron's (PATH=/usr/bin:/bin, no LANG: the C
locale).

Prints one JSON object: per-device seconds, the total, this process's peak RSS (python +
requests: meaningful when started by a small forking launcher such as ``/usr/bin/time``, see
``Children``) and, with ``--rss``, the peak RSS of each command, so the caller can report the
old way's peak as the max over its processes.

    .venv/bin/python bench/oldway.py --state S --webroot W --backups B --token T URL [URL...]

URLs are device base URLs (``http://127.0.0.1:PORT/fw1``); nothing but 127.0.0.1 is accepted.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import requests

BANNED_PATH = "/api/v2/monitor/user/banned"
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh", "HOME": "/root", "LOGNAME": "root"}


class Children:
    """Runs commands like a shell does; with ``rss``, also each command's peak RSS (KiB).

    The peak comes from ``/usr/bin/time -f %M`` around the command, not from this process's
    wait4: on Linux a child's ru_maxrss starts at its parent's peak (it is recorded at exec
    from the vfork'ed image), so only a small launcher that forks gives the command's own.
    The launcher costs a fork and an exec per command, so timing runs go without it.
    """

    def __init__(self, rss: bool, scratch: Path) -> None:
        self.rss = rss
        self.scratch = scratch
        self.peaks: dict[str, int] = {}
        self._n = 0

    def _argv(self, argv: list[str]) -> tuple[list[str], Path | None]:
        if not self.rss:
            return argv, None
        self._n += 1
        out = self.scratch / f".rss.{self._n}"
        return ["/usr/bin/time", "-f", "%M", "-o", str(out), *argv], out

    def _done(self, name: str, proc: subprocess.Popen[bytes], out: Path | None) -> int:
        code = proc.wait()
        if out is not None:
            peak = int(out.read_text().split()[-1])
            out.unlink()
            self.peaks[name] = max(self.peaks.get(name, 0), peak)
        return code

    def run(self, argv: list[str], capture: bool = False) -> str:
        full, out = self._argv(argv)
        proc = subprocess.Popen(full, stdout=subprocess.PIPE if capture else None, env=CRON_ENV)
        text = b""
        if capture:
            assert proc.stdout is not None
            text = proc.stdout.read()
            proc.stdout.close()
        if self._done(argv[0], proc, out) != 0:
            raise SystemExit(f"{argv[0]} failed")
        return text.decode()

    def pipe(self, first: list[str], second: list[str], output: Path) -> None:
        """``first | second > output``."""
        (full1, out1), (full2, out2) = self._argv(first), self._argv(second)
        with output.open("wb") as sink:
            left = subprocess.Popen(full1, stdout=subprocess.PIPE, env=CRON_ENV)
            right = subprocess.Popen(full2, stdin=left.stdout, stdout=sink, env=CRON_ENV)
            assert left.stdout is not None
            left.stdout.close()  # so `first` gets SIGPIPE if `second` dies, as in a shell
            codes = (self._done(first[0], left, out1), self._done(second[0], right, out2))
        if codes != (0, 0):
            raise SystemExit(f"{first[0]} | {second[0]} failed: {codes}")


def fetch_banned(url: str, token: str, out: Path) -> int:
    """fetch_banned.py: the list, one ip_address a line, as the cron job's helper wrote it."""
    response = requests.get(
        url + BANNED_PATH, params={"access_token": token}, timeout=300, verify=False
    )
    response.raise_for_status()
    data = response.json()
    with out.open("w") as handle:
        for entry in data["results"]:
            handle.write(entry["ip_address"] + "\n")
    return len(data["results"])


def one_device(
    url: str, token: str, tmp: Path, state: Path, webroot: Path, backups: Path, sh: Children
) -> int:
    new, merged, current = tmp / "banned.new", tmp / "banned.merged", state / "banned.txt"
    count = fetch_banned(url, token, new)
    sh.run(["touch", str(current)])
    sh.pipe(["sort", str(new), str(current)], ["uniq"], merged)
    sh.run(["sed", "-i", r"/^10\./d; /^192\.168\./d", str(merged)])
    sh.run(["cp", str(merged), str(current)])
    sh.run(["cp", str(merged), str(webroot / "banned.txt")])
    stamp = sh.run(["date", "+%Y%m%d%H%M%S"], capture=True).strip()
    sh.run(["cp", str(webroot / "banned.txt"), str(backups / f"banned.txt.{stamp}")])
    sh.run(["find", str(backups), "-name", "banned.txt.*", "-mmin", "+60", "-delete"])
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description="the old cron way, one device after another")
    parser.add_argument("--state", type=Path, required=True, help="folder of the running list")
    parser.add_argument("--webroot", type=Path, required=True)
    parser.add_argument("--backups", type=Path, required=True)
    parser.add_argument("--tmp", type=Path, help="scratch folder (default: --state)")
    parser.add_argument("--token", required=True)
    parser.add_argument("--rss", action="store_true", help="measure each command's peak RSS")
    parser.add_argument("urls", nargs="+")
    args = parser.parse_args()
    for url in args.urls:
        if urlsplit(url).hostname != "127.0.0.1":
            raise SystemExit(f"{url}: the benchmark talks to 127.0.0.1 only")
    tmp: Path = args.tmp or args.state
    sh = Children(args.rss, tmp)
    began = time.perf_counter()
    seconds: list[float] = []
    entries = 0
    for url in args.urls:
        t = time.perf_counter()
        entries += one_device(url, args.token, tmp, args.state, args.webroot, args.backups, sh)
        seconds.append(time.perf_counter() - t)
    total = time.perf_counter() - began
    report = {
        "seconds": total,
        "device_seconds": seconds,
        "devices": len(args.urls),
        "entries": entries,
        "python_peak_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "child_peak_kib": sh.peaks,
        "feed_lines": sum(1 for _ in (args.webroot / "banned.txt").open("rb")),
    }
    json.dump(report, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
