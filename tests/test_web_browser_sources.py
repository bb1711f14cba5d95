"""The sources page in headless Chromium (Playwright) against a real `banfeed run` polling two
simulated FortiGates, two more through the simulator's FortiManager (one of them unreachable)
and a blocklist served on 127.0.0.1: reached from the header's nav, every source listed with
its kind, the unreachable device marked, no console error, no request leaving 127.0.0.1, the
same page without JavaScript. Screenshots in light and dark under the test's folder and in
/tmp/dashboard-shots/."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

import pytest
from browserkit import chromium, running_site, shoot, signed_in, watched
from playwright.sync_api import Browser
from test_blocklists import ListServer

from banfeed import simulator
from banfeed.simulator import fortimanager as simfmg

LIST = "185.220.101.4\n185.220.101.5\n2a0b:f4c0::1\n"


def sources_of(page_text: str) -> None:
    for name in ("edge-1", "edge-2", "fmg-1.fgt_a", "fmg-1.fgt_b", "import:feodo", "blocklist"):
        assert name in page_text, name


def check_sources(browser: Browser, url: str, scheme: str, shots: Path) -> None:
    page = signed_in(browser, url, scheme)
    requests, problems = watched(page)
    page.click("header nav a[href='/dashboard/sources']")
    page.wait_for_url(f"{url}/dashboard/sources")
    assert page.get_attribute("header nav a[href='/dashboard/sources']", "aria-current") == "page"
    kinds = {
        row.get_attribute("data-source"): row.get_attribute("data-kind")
        for row in page.locator("#sources tbody tr").all()
    }
    assert kinds == {
        "edge-1": "fortigate",
        "edge-2": "fortigate",
        "fmg-1": "fortimanager",
        "feodo": "blocklist",
    }
    assert page.locator("#sources tbody tr.bad").count() == 0  # every source answered
    fmg = page.locator("#sources tr[data-source='fmg-1']")
    assert "ok; 1 of 2 devices failing" in fmg.inner_text()
    assert fmg.get_attribute("class") == "warn"
    # edge-1/*, edge-2/*, the FortiManager's own row and its two devices, the list
    assert page.locator("#source-rows tbody tr").count() == 6
    down = page.locator("#source-rows tr[data-device='fmg-1.fgt_b']")
    assert down.get_attribute("class") == "bad" and "unreachable" in down.inner_text()
    assert "disabled" in page.inner_text("#abuseipdb")
    assert "No [[alerts.targets]]" in page.inner_text("#alert-targets")
    sources_of(page.inner_text("main"))
    shoot(page, shots, f"sources-{scheme}")
    assert problems == [], problems
    hosts = {urlsplit(r).hostname for r in requests}
    assert hosts == {"127.0.0.1"}, hosts
    page.context.close()


def check_without_javascript(browser: Browser, url: str, shots: Path) -> None:
    page = signed_in(browser, url, javascript=False, landing="/dashboard/sources")
    assert page.locator("#sources tbody tr").count() == 4
    sources_of(page.inner_text("main"))
    shoot(page, shots, "sources-no-js")
    page.context.close()


def test_the_sources_page_lists_each_source_and_stays_on_this_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    managed = simulator.SimFleet(seed=12)
    managed.add_device("fgt_a", token="ta", entries=5)
    managed.add_device("fgt_b", token="tb", entries=5)
    fmg = simfmg.fortimanager(managed, "fmg-key-1", unreachable={"fgt_b"})
    monkeypatch.setenv("FMG_KEY", "fmg-key-1")  # the spawned `banfeed run` inherits it
    lists = ListServer()
    lists.body = LIST.encode()
    shots = tmp_path / "shots"
    try:
        with simfmg.start(fmg) as fmg_run:
            extra = (
                f'[[fortimanagers]]\nname = "fmg-1"\nurl = "{fmg_run.url}"\n'
                'token_env = "FMG_KEY"\ntimeout = "10s"\ndevice_timeout = "5s"\n'
                f'[[blocklists]]\nname = "feodo"\nurl = "{lists.url}/list.txt"\ntimeout = "5s"\n'
            )
            with running_site(tmp_path, extra) as url, chromium() as browser:
                for scheme in ("light", "dark"):
                    check_sources(browser, url, scheme, shots)
                check_without_javascript(browser, url, shots)
    finally:
        lists.stop()
    assert sorted(p.name for p in shots.glob("*.png")) == [
        "sources-dark.png",
        "sources-light.png",
        "sources-no-js.png",
    ]
