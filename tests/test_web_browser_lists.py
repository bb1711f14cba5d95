"""The Allowlist, Bans and Events pages end to end in headless Chromium against a real
`banfeed run` polling simulated FortiGates: allowlist a served address through the form and
its confirmation, see the feed change (a new ETag, the address gone) and the entry listed with
the user's name, find its event in the audit log, ban a network through the Bans page, and
download the offenders search as CSV. Every page is saved as a screenshot (lists-*.png)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from browserkit import chromium, running_site, shoot, signed_in
from webkit import ADMIN

from banfeed.web.search import EXPORT_COLUMNS
from conftest import wait_for

NOTE = "partner scanner, ticket 12"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[str]:
    with running_site(tmp_path) as url:
        yield url


def test_allowlist_an_address_in_a_real_browser_and_see_it_carved_out(
    running: str, tmp_path: Path
) -> None:
    feed = httpx.get(f"{running}/feeds/quarantine.txt")
    etag, lines = feed.headers["etag"], feed.text.splitlines()
    target = next(line for line in lines if "/" not in line and "." in line)
    shots = tmp_path / "shots"
    with chromium() as browser:
        page = signed_in(browser, running)
        page.click("header nav >> text=Allowlist")
        page.wait_for_url(f"{running}/dashboard/allowlist")
        assert "The allowlist is empty." in page.inner_text("main")
        shoot(page, shots, "lists-1-allowlist-empty")
        page.fill("form.add input[name=target]", target)
        page.fill("form.add input[name=expires]", "30d")
        page.fill("form.add input[name=note]", NOTE)
        page.click("form.add button:has-text('Add…')")
        page.wait_for_url("**/dashboard/lists/confirm?*")
        assert "No feed publishes it while the entry lasts" in page.inner_text("main")
        assert page.input_value("form.confirm input[name=note]") == NOTE
        shoot(page, shots, "lists-2-confirm-allow")
        page.click("button:has-text('Confirm allowlist')")
        page.wait_for_url("**/dashboard/allowlist?done=allow*")
        main = page.inner_text("main")
        assert f"Done: allowlisted {target}" in main
        row = page.locator("table.grid tbody tr", has_text=target)
        assert ADMIN[0] in row.inner_text() and NOTE in row.inner_text()
        shoot(page, shots, "lists-3-allowlisted")

        def changed() -> httpx.Response | None:
            answer = httpx.get(f"{running}/feeds/quarantine.txt")
            return answer if answer.headers["etag"] != etag else None

        after = wait_for(changed, timeout=15, what="a new version of the feed")
        assert target not in after.text.splitlines()
        assert len(after.text.splitlines()) == len(lines) - 1

        page.click("header nav >> text=Events")
        page.wait_for_url(f"{running}/dashboard/events")
        event = page.locator("table.grid tbody tr", has_text="allowlist_added").first
        assert target in event.inner_text() and ADMIN[0] in event.inner_text()
        assert NOTE in event.inner_text()
        page.fill("form.search input[name=actor]", ADMIN[0])
        page.click("form.search button:has-text('Filter')")
        page.wait_for_url("**/dashboard/events?*actor=alice*")
        assert page.locator("table.grid tbody tr").count() == 1
        shoot(page, shots, "lists-4-events")

        page.click("header nav >> text=Bans")
        page.wait_for_url(f"{running}/dashboard/bans")
        page.fill("form.add input[name=target]", "45.77.0.0/24")
        page.fill("form.add input[name=ttl]", "7d")
        page.fill("form.add input[name=note]", "scanner farm")
        page.click("form.add button:has-text('Ban…')")
        page.wait_for_url("**/dashboard/lists/confirm?*")
        shoot(page, shots, "lists-5-confirm-ban")
        page.click("button:has-text('Confirm ban')")
        page.wait_for_url("**/dashboard/bans?done=ban*")
        assert "45.77.0.0/24" in page.inner_text("table.grid")
        shoot(page, shots, "lists-6-bans")

        page.goto(f"{running}/dashboard/offenders?sort=-offense_count")
        shoot(page, shots, "lists-7-offenders")
        with page.expect_download() as download:
            page.click("text=Download CSV")
        saved = download.value.path()
        assert download.value.suggested_filename.startswith("banfeed-offenders-")
        rows = list(csv.reader(io.StringIO(saved.read_text(encoding="utf-8"), newline="")))
        assert tuple(rows[0]) == EXPORT_COLUMNS and len(rows) > 40
        assert target not in {r[0] for r in rows}  # allowlisted: no longer active

        dark = browser.new_context(color_scheme="dark", viewport={"width": 1280, "height": 800})
        dark.add_cookies(page.context.cookies())
        night = dark.new_page()
        for name in ("allowlist", "bans", "events"):
            night.goto(f"{running}/dashboard/{name}")
            assert night.url == f"{running}/dashboard/{name}"
            shoot(night, shots, f"lists-8-{name}-dark")
        dark.close()
    assert len(list(shots.glob("lists-*.png"))) == 10
