"""Secrets never leave banfeed (docs/reliability.md, "Secrets"): device tokens and feed
passwords and tokens appear in no output at any log level, no error, no ``check`` output, no
URL, no HTTP answer (feeds, ``/metrics``, the status page) and nowhere in the store file.

Real processes (``python -m banfeed -vv …``: every logger at debug, httpx's included), real
simulated FortiGates on 127.0.0.1, among them one whose error object echoes the request with
its ``Authorization`` header and one that echoes it into a redirect, and a real SQLite store.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from banfeed import simulator
from banfeed.store import open_store
from conftest import Clock, wait_for, write_config

DEVICE_TOKEN = "dev-token-A-5f2b9c41e7d04a8b"
ECHO_TOKEN = "dev-token-B-91c3e6d2aa7f4b10"
LITERAL_TOKEN = "dev-token-C-0d8e4f7a3b2c1e96"
REFUSED_TOKEN = "dev-token-D-7a6b5c4d3e2f1a0b"  # the device expects another: 401
FEED_PASSWORD = "feed-pass-E-c4d5e6f7a8b9"
FEED_TOKEN = "feed-token-F-1234abcd5678ef90"
SECRETS = [DEVICE_TOKEN, ECHO_TOKEN, LITERAL_TOKEN, REFUSED_TOKEN, FEED_PASSWORD, FEED_TOKEN]
BASIC = base64.b64encode(f"fortigate:{FEED_PASSWORD}".encode()).decode()


def leaks(text: str | bytes) -> list[str]:
    data = text if isinstance(text, bytes) else text.encode("utf-8", "replace")
    return [s for s in [*SECRETS, BASIC] if s.encode() in data]


def config_for(urls: dict[str, str], tmp_path: Path) -> Path:
    def device(name: str, token: str, **extra: str) -> str:
        lines = ["[[fortigates]]", f'name = "{name}"', f'url = "{urls[name]}"', token]
        lines += ['timeout = "2s"', *(f"{k} = {v}" for k, v in extra.items())]
        return "\n".join(lines) + "\n\n"

    body = (
        '[collect]\ninterval = "1s"\n\n[server]\nlisten = "127.0.0.1:0"\n\n'
        + device("fw-ok", 'token_env = "TOKEN_OK"')
        + device("fw-echo", 'token_env = "TOKEN_ECHO"')
        + device("fw-lab", f'token = "{LITERAL_TOKEN}"', verify_tls="false")
        + device("fw-refused", 'token_env = "TOKEN_REFUSED"')
        + '[[feeds]]\nname = "quarantine"\n[feeds.auth]\ntype = "basic"\n'
        'username = "fortigate"\npassword_env = "FEED_PASSWORD"\n\n'
        '[[feeds]]\nname = "siem"\n[feeds.auth]\ntype = "bearer"\ntoken_env = "FEED_TOKEN"\n'
    )
    return write_config(tmp_path / "banfeed.toml", f"sqlite:///{tmp_path / 'banfeed.db'}", body)


ENV = {
    "TOKEN_OK": DEVICE_TOKEN,
    "TOKEN_ECHO": ECHO_TOKEN,
    "TOKEN_REFUSED": REFUSED_TOKEN,
    "FEED_PASSWORD": FEED_PASSWORD,
    "FEED_TOKEN": FEED_TOKEN,
    "PYTHONUNBUFFERED": "1",
}


def banfeed(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "banfeed", "-vv", "--config", str(config), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **ENV},
        timeout=120,
    )


class Daemon:
    """``banfeed -vv run`` in a process of its own, its standard error kept."""

    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "banfeed", "-vv", "--config", str(config), "run"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **ENV},
        )
        self.lines: list[str] = []
        self.out: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.proc.stderr, self.lines), daemon=True),
            threading.Thread(target=self._read, args=(self.proc.stdout, self.out), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Any, into: list[str]) -> None:
        for line in stream:
            into.append(line)

    def log(self) -> str:
        return "".join(self.lines)

    def stop(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=30)
        for reader in self._readers:
            reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()
        return self.log() + "".join(self.out)


def test_no_secret_in_any_output_answer_or_the_store(
    fleet: simulator.SimFleet, run_sim: Any, clock: Clock, tmp_path: Path
) -> None:
    clock.now = time.time()
    ok = fleet.add_device("fw-ok", token=DEVICE_TOKEN, entries=3)
    fleet.add_device("fw-echo", token=ECHO_TOKEN, entries=3, fault="echo")
    fleet.add_device("fw-lab", token=LITERAL_TOKEN, entries=3, fault="echo-redirect")
    fleet.add_device("fw-refused", token="the-device-expects-this-one", entries=3)
    config = config_for(run_sim(), tmp_path)
    seen: list[str] = []

    assert banfeed(config, "db", "upgrade").returncode == 0
    for args in (["check"], ["check", "--format", "json"], ["collect"], ["collect"]):
        done = banfeed(config, *args)
        seen += [done.stdout, done.stderr]
        assert done.returncode == 1, (args, done.stdout, done.stderr)  # devices failed
    collected = seen[-4] + seen[-3]
    assert "fw-echo" in collected and "***" in collected  # the echo came, scrubbed
    assert "redirected (302)" in collected and "token refused (401)" in collected
    assert "DEBUG" in collected  # -vv: every debug line was there to leak, and did not

    daemon = Daemon(config)
    try:
        url = wait_for(lambda: re.search(r"serving (http://\S+)/feeds/", daemon.log()), 30)[1]
        feed = f"{url}/feeds/quarantine.txt"
        good = httpx.get(feed, auth=("fortigate", FEED_PASSWORD), timeout=5)
        assert good.status_code == 200
        assert set(good.text.split()) == {entry.ip for entry in ok.vdoms["root"]}
        wrong = httpx.get(feed, auth=("fortigate", FEED_PASSWORD[:-1]), timeout=5)
        siem = httpx.get(
            f"{url}/feeds/siem.txt", headers={"Authorization": f"Bearer {FEED_TOKEN}"}, timeout=5
        )
        answers = [good, wrong, siem]
        answers += [httpx.get(f"{url}{path}", timeout=5) for path in ("/metrics", "/", "/readyz")]
        assert wrong.status_code == 401 and siem.status_code == 200
        assert "banfeed_" in answers[3].text
        wait_for(lambda: daemon.log().count("fw-echo") >= 2, 30, "two cycles in run")
    finally:
        run_log = daemon.stop()
    seen.append(run_log)
    assert "fortigates[fw-lab].verify_tls: false" in run_log  # the start warning
    for answer in answers:
        seen += [str(answer.url), str(answer.headers), answer.text]

    for args in (["list"], ["feeds"], ["show", ok.vdoms["root"][0].ip]):
        done = banfeed(config, *args)
        assert done.returncode == 0, (args, done.stderr)
        seen += [done.stdout, done.stderr]

    store = open_store(f"sqlite:///{tmp_path / 'banfeed.db'}")
    with store.read() as tx:
        statuses = {device: s for (device, _vdom), s in tx.device_statuses().items()}
    store.close()
    assert "Bearer ***" in (statuses["fw-echo"].error_message or "")
    assert statuses["fw-refused"].error_kind in ("auth", "backoff")

    found = {index: leaks(text) for index, text in enumerate(seen) if leaks(text)}
    assert found == {}, {i: (found[i], seen[i][:2000]) for i in found}
    for path in tmp_path.glob("banfeed.db*"):  # the file, and any -wal or -journal beside it
        assert leaks(path.read_bytes()) == [], path
