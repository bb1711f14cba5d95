"""The overview in headless Chromium (Playwright) against a real `banfeed run` polling simulated
FortiGates: the vendored uPlot draws the series on a canvas, switching the range fetches it again
(and puts it in the address), the numbers refresh from /api/v1/overview, no console error, no
request leaves 127.0.0.1, and without JavaScript the series is a table and the range a link.
Screenshots in light and dark under the test's folder and in /tmp/dashboard-shots/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from browserkit import chromium, running_site, shoot, signed_in, watched
from playwright.sync_api import Browser, expect


def check_overview(browser: Browser, url: str, scheme: str, shots: Path) -> None:
    page = signed_in(browser, url, scheme)
    requests, problems = watched(page)
    with page.expect_response("**/api/v1/overview/series?range=24h"):
        page.reload()
    canvas = page.locator("#chart canvas")
    canvas.wait_for()
    box = canvas.first.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 100
    assert "new offenders" in page.inner_text("#chart .u-legend")
    assert page.get_attribute("#series-table", "open") is None  # the chart shows instead
    shoot(page, shots, f"overview-24h-{scheme}")

    with page.expect_response("**/api/v1/overview/series?range=7d") as answer:
        page.click("nav.ranges a[data-range='7d']")
    assert answer.value.json()["step"] == 6 * 3600
    expect(page).to_have_url(f"{url}/dashboard/?range=7d")  # replaceState, no reload
    assert page.get_attribute("nav.ranges a[data-range='7d']", "aria-current") == "true"
    assert page.get_attribute("nav.ranges a[data-range='24h']", "aria-current") is None
    assert page.locator("#series-table tbody tr").count() == 28
    assert "6-hourly" in page.inner_text("#range-words")
    shoot(page, shots, f"overview-7d-{scheme}")

    # what a timer tick does (the tab shown again), without waiting 30 s for it
    with page.expect_response("**/api/v1/overview"):
        page.evaluate("document.dispatchEvent(new Event('visibilitychange'))")
    expect(page.locator("#live")).to_contain_text("as of")
    assert "No cycle kept yet" not in page.inner_text("#cycles tbody")
    assert page.locator("#cycles tbody tr").count() >= 1

    page.goto(f"{url}/dashboard/?range=30d")  # the range is in the address
    page.locator("#chart canvas").wait_for()
    assert page.locator("#series-table tbody tr").count() == 30
    assert problems == [], problems
    hosts = {urlsplit(r).hostname for r in requests}
    assert hosts == {"127.0.0.1"}, hosts
    page.context.close()


def check_without_javascript(browser: Browser, url: str, shots: Path) -> None:
    page = signed_in(browser, url, javascript=False)
    assert page.locator("#chart canvas").count() == 0
    assert page.locator("#series-table tbody tr").count() == 24
    page.click("nav.ranges a[data-range='30d']")  # a link
    page.wait_for_url(f"{url}/dashboard/?range=30d")
    assert page.locator("#series-table tbody tr").count() == 30
    shoot(page, shots, "overview-no-js")
    page.context.close()


def test_the_chart_draws_switches_range_and_stays_on_this_host(tmp_path: Path) -> None:
    shots = tmp_path / "shots"
    with running_site(tmp_path) as url, chromium() as browser:
        for scheme in ("light", "dark"):
            check_overview(browser, url, scheme, shots)
        check_without_javascript(browser, url, shots)
    assert len(list(shots.glob("*.png"))) == 5
