#!/usr/bin/env python3
"""Replay captured FortiGate answers over HTTP on 127.0.0.1 (stdlib only), for the benchmarks.

The bench captures each simulated device's ``GET /api/v2/monitor/user/banned`` answer from
``banfeed.simulator`` once (Bearer token), writes the bytes to ``DIR/<device>.<variant>.json``
and serves them from this separate process, byte for byte, to both banfeed and the old cron
way. That keeps the input identical for both sides, keeps the device's serving cost out of the
measured process, and lets the old way use ``?access_token=`` (which the simulator, like
FortiOS 7.4.5+, refuses): the token is accepted as a Bearer header *or* as that parameter.

    GET /api/v2/monitor/user/banned[?vdom=root][&access_token=T]

One listening socket per device (banfeed's config takes scheme, host and port only), device
names taken from the ``*.base.json`` files in DIR. Each answer waits ``--latency`` seconds
first (like the simulator's ``latency``), then is sent with ``sendfile``.

Control on stdin, one command a line, answered ``ok`` on stdout:

    variant <device|*> <variant>   serve DIR/<device>.<variant>.json from now on
    requests                       print the number of banned-list requests answered so far
    quit

On start it prints ``ports {"<device>": <port>, ...}`` (JSON). It binds 127.0.0.1 only and
fetches nothing.
"""

from __future__ import annotations

import argparse
import hmac
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

BANNED_PATH = "/api/v2/monitor/user/banned"


class Fleet:
    """What every device's server shares: the folder, token, latency and variants."""

    def __init__(self, folder: Path, token: str, latency: float) -> None:
        self.folder = folder
        self.token = token
        self.latency = latency
        self.variants: dict[str, str] = {}  # device -> variant; else default_variant
        self.default_variant = "base"
        self.requests = 0
        self.lock = threading.Lock()

    def body_path(self, device: str) -> Path | None:
        with self.lock:
            variant = self.variants.get(device, self.default_variant)
        path = self.folder / f"{device}.{variant}.json"
        return path if path.is_file() else None


class DeviceServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # concurrent polls must never see a SYN dropped

    def __init__(self, fleet: Fleet, device: str) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.fleet = fleet
        self.device = device


class Handler(BaseHTTPRequestHandler):
    server: DeviceServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib name
        pass

    def _plain(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        fleet = self.server.fleet
        url = urlsplit(self.path)
        if url.path.rstrip("/") != BANNED_PATH:
            self._plain(404, "not found")
            return
        query = parse_qs(url.query)
        given = query.get("access_token", [""])[0]
        scheme, _, bearer = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and not given:
            given = bearer
        if not hmac.compare_digest(given.encode(), fleet.token.encode()):
            self._plain(401, "Unauthorized")
            return
        if query.get("vdom", ["root"])[0] != "root":
            self._plain(404, "unknown vdom")
            return
        path = fleet.body_path(self.server.device)
        if path is None:
            self._plain(404, "no answer for this device")
            return
        if fleet.latency > 0:
            time.sleep(fleet.latency)
        with path.open("rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.flush()
            self.connection.sendfile(handle)
        with fleet.lock:
            fleet.requests += 1


def control(fleet: Fleet) -> None:
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] == "quit":
            break
        if words[0] == "variant" and len(words) == 3:
            with fleet.lock:
                if words[1] == "*":
                    fleet.variants.clear()
                    fleet.default_variant = words[2]
                else:
                    fleet.variants[words[1]] = words[2]
            print("ok", flush=True)
        elif words[0] == "requests":
            with fleet.lock:
                print(fleet.requests, flush=True)
        else:
            print(f"error unknown command {line.strip()!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, required=True, help="folder of <device>.<variant>.json")
    parser.add_argument("--token", required=True)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args()
    fleet = Fleet(args.dir, args.token, args.latency)
    devices = sorted(p.name.removesuffix(".base.json") for p in args.dir.glob("*.base.json"))
    servers = [DeviceServer(fleet, device) for device in devices]
    for server in servers:
        threading.Thread(target=server.serve_forever, args=(0.5,), daemon=True).start()
    ports = {s.device: s.server_address[1] for s in servers}
    print("ports " + json.dumps(ports), flush=True)
    try:
        control(fleet)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
