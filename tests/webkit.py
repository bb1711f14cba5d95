"""Helpers of the dashboard tests: a real SQLite store with users, the whole app (feeds and
dashboard) in process, and sign-ins the way a browser does them."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from ipaddress import ip_address
from pathlib import Path
from typing import Any

import httpx
from starlette.applications import Starlette

from banfeed.config import load
from banfeed.daemon import Daemon
from banfeed.models import Offender
from banfeed.server import create_app
from banfeed.web import dashboard_routes
from conftest import Clock, cli

ADMIN, VIEWER = ("alice", "correct horse battery"), ("victor", "viewer password 1")
ORIGIN = "http://testserver"


@dataclass
class App:
    path: Path
    daemon: Daemon
    app: Starlette
    clock: Clock

    def client(self, address: str = "127.0.0.1") -> Client:
        return Client(self.app, address)


class Client:
    """A browser-like client of the app in process (httpx over ASGI: cookies kept, redirects
    not followed), from ``address``."""

    def __init__(self, app: Starlette, address: str) -> None:
        self.loop = asyncio.new_event_loop()
        transport = httpx.ASGITransport(app=app, client=(address, 50000))
        self.http = httpx.AsyncClient(transport=transport, base_url=ORIGIN)

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.loop.run_until_complete(self.http.request(method, url, **kwargs))

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


def write_site(tmp_path: Path, extra: str = "", store_url: str | None = None) -> Path:
    path = tmp_path / "banfeed.toml"
    url = store_url or "sqlite:///b.db"
    path.write_text(
        f'[store]\nurl = "{url}"\n[retention]\nbase_ttl = "1d"\n'
        '[[feeds]]\nname = "all"\n[[feeds]]\nname = "dos"\ncauses = ["DoS"]\n'
        f"[dashboard]\nenabled = true\n{extra}",
        encoding="utf-8",
    )
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    for (name, password), role in ((ADMIN, "admin"), (VIEWER, "viewer")):
        result = cli_input(path, password + "\n", "user", "add", name, "--role", role)
        assert result.exit_code == 0, result.output
    return path


def cli_input(path: Path, text: str, *args: str) -> object:
    from click.testing import CliRunner

    from banfeed.cli import main

    return CliRunner().invoke(main, ["--config", str(path), *args], input=text)


def open_app(path: Path, clock: Clock) -> App:
    daemon = Daemon(load(path), collect=False, clock=clock)
    return App(path, daemon, create_app(daemon.state, dashboard_routes(daemon)), clock)


def seed(app: App, *rows: tuple[str, str, int, int]) -> None:
    """Offenders (ip, cause, offenses, seconds since the last one), active for a day."""
    now = int(app.clock())
    with app.daemon.store.write() as tx:
        tx.insert_offenders(
            [
                Offender(
                    ip_address(ip),
                    now - age - 100,
                    now - age,
                    count,
                    (cause,),
                    ("fw-1",),
                    ("fw-1/root",),
                    now - age + 86400,
                    "listed",
                )
                for ip, cause, count, age in rows
            ],
            now,
        )
        tx.bump_version()


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def sign_in(client: Client, name: str, password: str) -> str:
    """Sign in through the login form; returns the session's CSRF token."""
    form = client.get("/dashboard/login")
    assert form.status_code == 200
    answer = client.post(
        "/dashboard/login",
        data={"csrf": csrf_of(form.text), "username": name, "password": password, "next": ""},
        headers={"Origin": ORIGIN},
    )
    assert answer.status_code == 303, answer.text
    me = client.get("/api/v1/me")
    assert me.status_code == 200 and me.json()["user"] == name
    token: str = me.json()["csrf"]
    return token


def events(app: App) -> list[tuple[str, str, str]]:
    with app.daemon.store.read() as tx:
        return [(e.kind.value, e.actor, e.ip or "") for e in tx.events_matching()]
