"""The dashboard end to end in headless Chromium (Playwright) against a real `banfeed run`
process polling simulated FortiGates: sign in, the overview, search an address, open it, unban
it, and see the served feed change (a new ETag, the address gone). Every page is saved as a
screenshot under the test's folder and copied to /tmp/dashboard-shots/."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, sync_playwright
from webkit import ADMIN, cli_input

from banfeed import simulator
from conftest import spawn_banfeed, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOTS = Path("/tmp/dashboard-shots")


@pytest.fixture
def running(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A `banfeed run` process (dashboard on) polling two simulated FortiGates; its URL."""
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
            f"[dashboard]\nenabled = true\n{devices}",
            encoding="utf-8",
        )
        assert cli_input(path, "", "db", "upgrade").exit_code == 0  # type: ignore[attr-defined]
        added = cli_input(path, ADMIN[1] + "\n", "user", "add", ADMIN[0], "--role", "admin")
        assert added.exit_code == 0  # type: ignore[attr-defined]
        proc, lines, reader = spawn_banfeed(
            "--config", str(path), "run", env={"TOKEN_1": "t1", "TOKEN_2": "t2"}
        )
        try:
            line = wait_for(
                lambda: next((x for x in lines if "serving http" in x), None),
                timeout=30,
                what="banfeed run's URL",
            )
            url = line.split("serving ")[1].split("/feeds/")[0]
            wait_for(
                lambda: (
                    (r := httpx.get(f"{url}/feeds/quarantine.txt")).status_code == 200
                    and len(r.text.splitlines()) >= 50
                ),
                timeout=30,
                what="the feed after the first cycle",
            )
            yield url
        finally:
            proc.terminate()
            assert proc.wait(timeout=30) == 0
            reader.join(timeout=5)
            if proc.stderr is not None:
                proc.stderr.close()
            assert "Traceback" not in "".join(lines), "".join(lines)


def shoot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def test_sign_in_search_open_and_unban_in_a_real_browser(running: str, tmp_path: Path) -> None:
    feed = httpx.get(f"{running}/feeds/quarantine.txt")
    etag = feed.headers["etag"]
    target = next(line for line in feed.text.splitlines() if "/" not in line and "." in line)
    shots = tmp_path / "shots"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            for scheme in ("light", "dark"):
                context = browser.new_context(
                    color_scheme=scheme,  # type: ignore[arg-type]
                    viewport={"width": 1280, "height": 800},
                )
                page = context.new_page()
                page.goto(f"{running}/dashboard/")
                assert "/dashboard/login" in page.url
                shoot(page, shots, f"1-login-{scheme}")
                page.fill("input[name=username]", ADMIN[0])
                page.fill("input[name=password]", ADMIN[1])
                page.click("button[type=submit]")
                page.wait_for_url(f"{running}/dashboard/")
                assert page.inner_text("h1").startswith("Overview")
                body = page.inner_text("main")
                assert "active IPv4 offenders" in body and "edge-2" in body
                assert "serving version" in body
                shoot(page, shots, f"2-overview-{scheme}")
                page.goto(f"{running}/dashboard/offenders?sort=-offense_count")
                shoot(page, shots, f"3-offenders-{scheme}")
                context.close()
            context = browser.new_context(viewport={"width": 1280, "height": 800})
            page = context.new_page()
            page.goto(f"{running}/dashboard/login")
            page.fill("input[name=username]", ADMIN[0])
            page.fill("input[name=password]", ADMIN[1])
            page.click("button[type=submit]")
            page.wait_for_url(f"{running}/dashboard/")
            page.fill("form.inline input[name=q]", target)
            page.click("form.inline button[type=submit]")
            page.wait_for_url("**/dashboard/offenders?*")
            rows = page.locator("table.grid tbody tr")
            assert rows.count() == 1 and target in rows.first.inner_text()
            shoot(page, shots, "4-search")
            page.click(f"text={target}")
            page.wait_for_url(f"**/dashboard/offenders/{target}")
            assert "listed" in page.inner_text("table.grid >> nth=0")
            shoot(page, shots, "5-offender")
            page.click("button:has-text('Unban')")
            page.wait_for_url("**/dashboard/confirm?*")
            page.fill("input[name=note]", "false positive, ticket 4711")
            shoot(page, shots, "6-confirm")
            page.click("button:has-text('Confirm unban')")
            page.wait_for_url(f"**/dashboard/offenders/{target}?done=unban")
            assert "Done: unban" in page.inner_text("main")
            assert "false positive, ticket 4711" in page.inner_text("main")
            assert "alice" in page.inner_text("main")
            shoot(page, shots, "7-unbanned")
            context.close()
        finally:
            browser.close()

    def changed() -> httpx.Response | None:
        answer = httpx.get(f"{running}/feeds/quarantine.txt")
        return answer if answer.headers["etag"] != etag else None

    after = wait_for(changed, timeout=15, what="a new version of the feed")
    assert target not in after.text.splitlines()
    assert len(after.text.splitlines()) == len(feed.text.splitlines()) - 1
    SHOTS.mkdir(exist_ok=True)
    for shot in sorted(shots.glob("*.png")):
        shutil.copy(shot, SHOTS / shot.name)
    assert len(list(shots.glob("*.png"))) == 10
