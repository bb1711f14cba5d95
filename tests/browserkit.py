"""Helpers of the browser tests: a real `banfeed run` process (dashboard on) polling simulated
FortiGates, headless Chromium through Playwright, a sign-in, and screenshots kept under the
test's folder and copied to /tmp/dashboard-shots/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright
from webkit import ADMIN, cli_input

from banfeed import simulator
from conftest import served_url, spawn_banfeed, stop_banfeed, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path("/tmp/dashboard-shots")


@contextmanager
def running_site(tmp_path: Path, extra: str = "", min_lines: int = 50) -> Iterator[str]:
    """A `banfeed run` process (dashboard on, admin ``ADMIN``) polling two simulated
    FortiGates, with ``extra`` TOML appended to its config; yields its base URL once the
    quarantine feed has ``min_lines`` lines."""
    fleet = simulator.SimFleet(seed=11)
    fleet.add_device("edge-1", token="t1", entries=40)
    fleet.add_device("edge-2", token="t2", vdoms=["root", "dmz"], entries=25)
    with simulator.start(fleet) as sim:
        path = tmp_path / "banfeed.toml"
        devices = "".join(
            f'[[fortigates]]\nname = "{name}"\nurl = "{url}"\ntoken_env = "TOKEN_{i}"\n'
            f'vdoms = ["*"]\n'
            for i, (name, url) in enumerate(sim.urls.items(), 1)
        )
        path.write_text(
            '[store]\nurl = "sqlite:///b.db"\n[server]\nlisten = "127.0.0.1:0"\n'
            '[collect]\ninterval = "1h"\n[[feeds]]\nname = "quarantine"\n'
            f"[dashboard]\nenabled = true\n{devices}{extra}",
            encoding="utf-8",
        )
        assert cli_input(path, "", "db", "upgrade").exit_code == 0  # type: ignore[attr-defined]
        added = cli_input(path, ADMIN[1] + "\n", "user", "add", ADMIN[0], "--role", "admin")
        assert added.exit_code == 0  # type: ignore[attr-defined]
        proc, lines, reader = spawn_banfeed(
            "--config", str(path), "run", env={"TOKEN_1": "t1", "TOKEN_2": "t2"}
        )
        try:
            url = served_url(lines)
            wait_for(
                lambda: (
                    (r := httpx.get(f"{url}/feeds/quarantine.txt")).status_code == 200
                    and len(r.text.splitlines()) >= min_lines
                ),
                timeout=30,
                what="the feed after the first cycle",
            )
            yield url
        finally:
            stop_banfeed(proc, reader, lines)


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's headless Chromium, driven by Playwright."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def signed_in(
    browser: Browser,
    url: str,
    scheme: str = "light",
    *,
    javascript: bool = True,
    landing: str = "/dashboard/",
) -> Page:
    """A new page of a new context (``scheme`` colours, JavaScript on or off), signed in as
    ``ADMIN`` through the login form, on ``landing`` (the overview)."""
    context = browser.new_context(
        color_scheme=scheme,  # type: ignore[arg-type]
        viewport={"width": 1280, "height": 800},
        java_script_enabled=javascript,
    )
    page = context.new_page()
    after = "" if landing == "/dashboard/" else f"?next={landing}"
    page.goto(f"{url}/dashboard/login{after}")
    page.fill("input[name=username]", ADMIN[0])
    page.fill("input[name=password]", ADMIN[1])
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{landing}")
    return page


def watched(page: Page) -> tuple[list[str], list[str]]:
    """The URLs ``page`` requests from now on, and its console errors, warnings and page
    errors: lists filled as the page runs."""
    requests: list[str] = []
    problems: list[str] = []

    def console(message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            problems.append(message.text)

    page.on("request", lambda request: requests.append(request.url))
    page.on("console", console)
    page.on("pageerror", lambda error: problems.append(str(error)))
    return requests, problems


def shoot(page: Page, folder: Path, name: str) -> None:
    """A full-page screenshot ``folder/name.png``, copied to /tmp/dashboard-shots/."""
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{name}.png"
    page.screenshot(path=str(target), full_page=True)
    SHOTS.mkdir(exist_ok=True)
    shutil.copy(target, SHOTS / target.name)
