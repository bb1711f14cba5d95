"""The dashboard end to end in headless Chromium (Playwright) against a real `banfeed run`
process polling simulated FortiGates: sign in, the overview, search an address, open it, unban
it, and see the served feed change (a new ETag, the address gone). Every page is saved as a
screenshot under the test's folder and copied to /tmp/dashboard-shots/."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browserkit import CHROMIUM, CHROMIUM_ARGS, running_site, shoot
from playwright.sync_api import sync_playwright
from webkit import ADMIN

from conftest import wait_for


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    """A `banfeed run` process (dashboard on) polling two simulated FortiGates; its URL."""
    with running_site(tmp_path) as url:
        yield url


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
    assert len(list(shots.glob("*.png"))) == 10
