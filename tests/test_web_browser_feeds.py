"""The Feeds pages end to end in headless Chromium against a real `banfeed run` polling
simulated FortiGates: an allowlist entry made with the CLI against the same store holds the
feed (``[safety] max_drop`` is tiny), the Feeds page shows it held with its reason, the admin
approves it in the browser and the served feed changes (a new ETag, the address gone); then
rolls the feed back to that last good version (consumers get its lines again), reads the
diff, and releases the pin. The audit log names the admin and carries each note. Every page
is a screenshot."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from browserkit import chromium, running_site, shoot, signed_in
from webkit import cli_input

from conftest import wait_for

HELD_METRIC = 'banfeed_feed_held{feed="quarantine"} 1.0'


def feed(url: str) -> httpx.Response:
    answer = httpx.get(f"{url}/feeds/quarantine.txt")
    assert answer.status_code == 200
    return answer


def test_approve_a_held_feed_roll_it_back_and_release_it_in_a_real_browser(
    tmp_path: Path,
) -> None:
    shots = tmp_path / "shots"
    config = tmp_path / "banfeed.toml"
    with running_site(tmp_path, "[safety]\nmax_drop = 0.001\n") as url, chromium() as browser:
        first = feed(url)
        lines = first.text.splitlines()
        target = next(x for x in lines if "/" not in x and "." in x)
        listed = cli_input(config, "", "feeds", "--format", "json")
        good = json.loads(listed.output)[0]["version"]  # type: ignore[attr-defined]
        page = signed_in(browser, url)
        page.click("nav >> text=Feeds")
        page.wait_for_url(f"{url}/dashboard/feeds")
        assert f"serving version {good}" in page.inner_text("main")
        shoot(page, shots, "feeds-1-serving")

        added = cli_input(config, "", "allow", "add", target, "--note", "our partner")
        assert added.exit_code == 0, added.output  # type: ignore[attr-defined]
        wait_for(lambda: HELD_METRIC in httpx.get(f"{url}/metrics").text, 15, "the hold")
        assert feed(url).content == first.content  # consumers keep the last good version

        page.reload()
        held = page.locator("tr.held")
        assert held.count() == 1 and "quarantine" in held.inner_text()
        assert "1 of" in held.inner_text() and "removed by allowlist" in held.inner_text()
        assert "1 feed is held" in page.inner_text("main")
        shoot(page, shots, "feeds-2-held")
        held.locator("button:has-text('Approve')").click()
        page.wait_for_url("**/dashboard/feeds/quarantine/confirm?action=approve")
        assert "would disappear" in page.inner_text("main")
        page.fill("input[name=note]", "partner range, ticket 12")
        shoot(page, shots, "feeds-3-confirm-approve")
        page.click("button:has-text('Confirm approve')")
        page.wait_for_url("**/dashboard/feeds/quarantine?done=approve")
        assert "Done: the hold is released" in page.inner_text("main")
        shoot(page, shots, "feeds-4-approved")

        approved = wait_for(
            lambda: (r := feed(url)).headers["etag"] != first.headers["etag"] and r,
            15,
            "the approved version",
        )
        assert target not in approved.text.splitlines()
        assert len(approved.text.splitlines()) == len(lines) - 1

        page.reload()
        assert f"serving version {good + 1}" in page.inner_text("main")
        rollback = page.locator(f"form:has(input[name=version][value='{good}']) button")
        rollback.click()
        page.wait_for_url(f"**/dashboard/feeds/quarantine/confirm?action=rollback&version={good}")
        assert f"served version {good} from its next fetch" in page.inner_text("main")
        page.fill("input[name=note]", "the partner range was wrong")
        shoot(page, shots, "feeds-5-confirm-rollback")
        page.click(f"button:has-text('Confirm rollback to version {good}')")
        page.wait_for_url("**/dashboard/feeds/quarantine?done=rollback")
        assert f"pinned to version {good} by alice" in page.inner_text("main")
        shoot(page, shots, "feeds-6-pinned")
        wait_for(lambda: feed(url).content == first.content, 15, "the good version again")

        page.fill("input[name=old]", str(good))
        page.fill("input[name=new]", str(good + 1))
        page.click("button:has-text('Show the diff')")
        page.wait_for_url(f"**/dashboard/feeds/quarantine/diff?old={good}&new={good + 1}")
        body = page.inner_text("main")
        assert "0 added, 1 removed" in body and f"-{target}" in body
        shoot(page, shots, "feeds-7-diff")
        with page.expect_download() as download:
            page.click("text=Download the full diff as text")
        assert download.value.suggested_filename == f"quarantine-{good}-{good + 1}.diff"
        assert Path(download.value.path()).read_text() == f"-{target}\n"

        page.goto(f"{url}/dashboard/feeds/quarantine")
        page.click("button:has-text('Release the pin')")
        page.wait_for_url("**/dashboard/feeds/quarantine/confirm?action=release")
        assert f"stops serving version {good}" in page.inner_text("main")
        shoot(page, shots, "feeds-8-confirm-release")
        page.click("button:has-text('Confirm release the pin')")
        page.wait_for_url("**/dashboard/feeds/quarantine?done=release")
        assert f"serving version {good + 1}" in page.inner_text("main")
        shoot(page, shots, "feeds-9-released")
        wait_for(lambda: feed(url).content == approved.content, 15, "the approved one again")
        page.context.close()

    logged = cli_input(config, "", "events", "--actor", "alice", "--format", "json")
    assert logged.exit_code == 0, logged.output  # type: ignore[attr-defined]
    details = [(e["kind"], e["detail"]) for e in json.loads(logged.output)]  # type: ignore[attr-defined]
    assert details == [
        ("feed_approved", "released the hold on quarantine — partner range, ticket 12"),
        ("feed_pinned", f"pinned quarantine to version {good} — the partner range was wrong"),
        ("feed_released", "released the pin on quarantine"),
    ]
    assert len(list(shots.glob("*.png"))) == 9
