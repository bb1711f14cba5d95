#!/usr/bin/env python3
"""Peak memory of one device poll against the size of its answer: `max_response` bounds it.

A FortiGate (or something posing as one) answers ``GET user/banned`` with a body of SIZE MB,
served by a plain HTTP server in a child process on 127.0.0.1 from a file. For each shape of
answer, a fresh child process polls it once with banfeed's client and reports its own peak RSS
and CPU time:

- ``entries``: a realistic list (~95 bytes an entry, every entry valid);
- ``one-string``: one entry whose ``source`` is SIZE MB of text (rejected);
- ``tiny-invalid``: ``[1,1,1,…]`` (half a million entries a MB, each invalid);
- ``gzip-bomb``: 4 × max_response of spaces, gzip-encoded (about a thousandth on the wire).

Each is measured two ways, side by side: ``stream`` (the client as it is: the entries decoded
and parsed a batch at a time, see src/banfeed/fortios/stream.py; invalid entries refused past
10,000 once they outnumber the valid ones) and ``before`` (the code before: ``json.loads`` of
the whole answer, then the entries, every invalid one kept as a rejection record; skipped for
``tiny-invalid`` unless ``--before-tiny``: 3.5 GB for 20 MB). The process's baseline (imports,
no poll) is measured too and taken off every peak. ``cycle`` is a whole first ``banfeed
collect`` of the ``entries`` answer into a fresh SQLite store (ingest and publish included).
Figures: bench/README.md, "Device answers and memory".

    .venv/bin/python bench/device_memory.py            # 200 MB, max_response 256 MiB (~8 min)
    .venv/bin/python bench/device_memory.py --quick    # 20 MB, max_response 32 MiB, no cycle

Exit 1 when a poll peaks above BOUND × max_response, or a hostile answer is not refused.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = ROOT / ".venv" / "bin" / "python"
TOKEN = "bench-device-memory-token-0123"
MIB = 1024 * 1024
BOUND = 6  # peak RSS of one poll, above the interpreter's, in max_response (docs/reliability.md)

SERVER = r"""
import http.server, socketserver, sys
body = open(sys.argv[1], "rb").read()
encoding = sys.argv[2]
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if encoding:
            self.send_header("Content-Encoding", encoding)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass
class Server(socketserver.TCPServer):
    def handle_error(self, request, client_address):
        pass  # a client that gave up on the answer (refused as too large) resets the connection
with Server(("127.0.0.1", 0), Handler) as server:
    print(server.server_address[1], flush=True)
    server.serve_forever()
"""

POLL = r"""
import asyncio, json, resource, sys, time
from pydantic import SecretStr
from banfeed.errors import DeviceError
from banfeed.fortios import DeviceTarget, FortiOSClient
from banfeed.fortios.client import BANNED_PATH
from banfeed.fortios.parse import banned_text, diffed_lists, load_banned

url, mode, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "before":  # the code before the streamed parse: no cap on rejected entries either
    from banfeed.fortios import parse
    parse.MAX_REJECTED = 10**15

async def poll():
    target = DeviceTarget(name="fw", url=url, token=SecretStr(sys.argv[4]), timeout=600,
                          max_response=limit)
    async with FortiOSClient(target) as client:
        now = int(time.time())
        if mode == "stream":
            answer = await client.banned("root", now=now)
            return answer.lists
        body = await client._get(BANNED_PATH, {"vdom": "root"})  # the way before
        text = banned_text("fw", body)
        del body
        document = load_banned("fw", text)
        del text
        return diffed_lists("fw", "root", document, now=now, known=None)[0]

started = time.monotonic()
try:
    lists = asyncio.run(poll()) if mode != "baseline" else []
    outcome = f"{sum(len(l.offenses) for l in lists):,} offenses, " \
              f"{sum(len(l.rejected) for l in lists):,} rejected"
except DeviceError as exc:
    outcome = f"{exc.kind}: {exc.detail[:70]}"
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu = usage.ru_utime + usage.ru_stime
print(json.dumps({"peak": usage.ru_maxrss * 1024, "outcome": outcome, "cpu": cpu,
                  "seconds": time.monotonic() - started}))
"""


def write_answers(folder: Path, size: int, limit: int) -> dict[str, tuple[Path, str]]:
    """The answers' files, each ``size`` bytes decoded, the bomb 4 × ``limit`` (written in
    pieces: never held)."""
    now = int(time.time())
    answers: dict[str, tuple[Path, str]] = {}
    path = folder / "entries.json"
    with path.open("w") as out:
        out.write('{"http_method":"GET","results":[')
        written, index = 0, 0
        times = f'"expires":{now + 300},"created":{now}'

        def entry(ip: str) -> str:
            return "{" + times + f',"ip_address":"{ip}","source":"IPS","ipv6":0' + "}"

        while written < size - 200:
            text = entry(f"{1 + index // 65536 % 200}.{index // 256 % 256}.{index % 256}.9")
            text += ","
            out.write(text)
            written += len(text)
            index += 1
        out.write(entry("8.8.8.8") + '],"vdom":"root","status":"success"}')
    answers["entries"] = (path, "")
    path = folder / "one-string.json"
    with path.open("w") as out:
        out.write('{"results":[{' + times + ',"ip_address":"8.8.8.8","source":"')
        for _ in range(size // MIB):
            out.write("X" * MIB)
        out.write('","ipv6":0}],"vdom":"root","status":"success"}')
    answers["one-string"] = (path, "")
    path = folder / "tiny-invalid.json"
    with path.open("w") as out:
        out.write('{"results":[1')
        for _ in range(size // MIB):
            out.write(",1" * (MIB // 2))
        out.write('],"vdom":"root","status":"success"}')
    answers["tiny-invalid"] = (path, "")
    path = folder / "gzip-bomb.json.gz"
    with gzip.open(path, "wb", compresslevel=9) as packed:
        for _ in range(4 * limit // MIB):
            packed.write(b" " * MIB)
    answers["gzip-bomb"] = (path, "gzip")
    return answers


def serve(path: Path, encoding: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [str(PYTHON), "-c", SERVER, str(path), encoding], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    port = int(proc.stdout.readline())
    return proc, f"http://127.0.0.1:{port}"


def poll(url: str, mode: str, limit: int) -> dict[str, object]:
    done = subprocess.run(
        [str(PYTHON), "-c", POLL, url, mode, str(limit), TOKEN],
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, object] = json.loads(done.stdout.splitlines()[-1])
    return result


def cycle(url: str, folder: Path, limit: int) -> dict[str, object]:
    """Peak RSS of a whole first ``banfeed collect`` of the answer at ``url``."""
    config = folder / "banfeed.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{folder / "cycle.db"}"\n\n[[fortigates]]\nname = "fw"\n'
        f'url = "{url}"\ntoken_env = "BENCH_TOKEN"\ntimeout = "600s"\nmax_response = {limit}\n',
        encoding="utf-8",
    )
    env = {**os.environ, "BENCH_TOKEN": TOKEN}
    banfeed = [str(PYTHON), "-m", "banfeed", "--config", str(config)]
    subprocess.run([*banfeed, "db", "upgrade"], env=env, check=True, capture_output=True)
    code = (
        "import resource, runpy, sys; sys.argv = ['banfeed', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('banfeed', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "print('PEAK', usage.ru_maxrss * 1024, usage.ru_utime + usage.ru_stime)"
    )
    started = time.monotonic()
    done = subprocess.run(
        [str(PYTHON), "-c", code, "--config", str(config), "collect", "-q"],
        env=env,
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    peak, cpu = done.stdout.rsplit("PEAK", 1)[1].split()
    seconds = time.monotonic() - started
    return {"peak": int(peak), "outcome": "first ingest", "cpu": float(cpu), "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="20 MB answers, max_response 32 MiB, no cycle (CI)"
    )
    parser.add_argument("--size-mb", type=int, help="answer size in MB (default 200, quick 20)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--before-tiny",
        action="store_true",
        help="also run `before` on tiny-invalid (184x the answer: 3.5 GB for 20 MB)",
    )
    args = parser.parse_args()
    size = (args.size_mb or (20 if args.quick else 200)) * 1_000_000
    # The default max_response, or (quick) a smaller one the 20 MB answers fit in.
    limit = 32 * MIB if args.quick else max(256 * MIB, size + MIB)
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="banfeed-memory-") as tmp:
        folder = Path(tmp)
        baseline = int(str(poll("http://127.0.0.1:9", "baseline", limit)["peak"]))
        for shape, (path, encoding) in write_answers(folder, size, limit).items():
            server, url = serve(path, encoding)
            try:
                for mode in ("stream", "before"):
                    if shape == "tiny-invalid" and mode == "before" and not args.before_tiny:
                        continue  # 184× the answer: 3.5 GB for 20 MB, and two minutes
                    rows.append({"shape": shape, "mode": mode, **poll(url, mode, limit)})
                if shape == "entries" and not args.quick:
                    rows.append({"shape": shape, "mode": "cycle", **cycle(url, folder, limit)})
            finally:
                server.terminate()
                server.wait()
    print(
        f"answers of {size / 1e6:.0f} MB, max_response {limit / MIB:.0f} MiB, "
        f"baseline RSS {baseline / MIB:.0f} MiB (taken off each peak)\n"
    )
    head = f"{'answer':<13} {'mode':<9} {'peak RSS':>10} {'× answer':>9} {'× limit':>8}"
    head += f" {'CPU s':>6}"
    print(head + "  outcome")
    for row in rows:
        peak = int(str(row["peak"])) - baseline
        row["above_baseline"] = peak
        print(
            f"{row['shape']:<13} {row['mode']:<9} {peak / MIB:>7.0f} MiB {peak / size:>8.1f}×"
            f" {peak / limit:>7.2f}× {float(str(row['cpu'])):>6.1f}  {row['outcome']}"
        )
    if args.json:
        figures = {"size": size, "limit": limit, "baseline": baseline, "rows": rows}
        args.json.write_text(json.dumps(figures, indent=1))
    # The bound this bench stands for: a poll as the client is never costs more than
    # BOUND × max_response above the interpreter, and the hostile shapes are refused.
    over = [
        r for r in rows if r["mode"] == "stream" and int(str(r["above_baseline"])) > BOUND * limit
    ]
    refused = {r["shape"]: str(r["outcome"]) for r in rows if r["mode"] == "stream"}
    if over or not all(
        refused[shape].startswith("bad_response") for shape in ("tiny-invalid", "gzip-bomb")
    ):
        print(f"FAILED: over {BOUND}× max_response: {over}; outcomes: {refused}")
        sys.exit(1)


if __name__ == "__main__":
    if Path(sys.executable).resolve() != PYTHON.resolve() and PYTHON.exists():
        os.execv(str(PYTHON), [str(PYTHON), *sys.argv])
    main()
