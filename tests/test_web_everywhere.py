"""Unban everywhere from the dashboard and the API: the store first, then every configured
FortiGate's quarantine, as `banfeed unban --everywhere` — against simulated FortiGates over real
HTTP on 127.0.0.1, one of them failing (the app in process, a real SQLite store)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from webkit import ADMIN, ORIGIN, App, csrf_of, events, open_app, seed, sign_in, write_site

from banfeed import simulator
from banfeed.models import Role
from banfeed.web import tokens
from conftest import T0, Clock

IP = "45.33.1.1"


@pytest.fixture
def fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    sims = simulator.SimFleet(seed=5)
    fw_a = sims.add_device("fw-a", token="ta", entries=0)
    fw_c = sims.add_device("fw-c", token="tc", entries=0, fault="500")
    running = simulator.start(sims)
    monkeypatch.setenv("TA", "ta")
    monkeypatch.setenv("TC", "tc")
    devices = "".join(
        f'[[fortigates]]\nname = "{name}"\nurl = "{running.urls[name]}"\n'
        f'token_env = "{env}"\ntimeout = "2s"\n'
        for name, env in (("fw-a", "TA"), ("fw-c", "TC"))
    )
    app = open_app(write_site(tmp_path, devices), Clock(T0))
    seed(app, (IP, "IPS", 3, 10))
    fw_a.add("root", IP, created=int(time.time()))
    yield {"app": app, "a": fw_a, "c": fw_c}
    app.daemon.store.close()
    running.stop()


def clears(device: simulator.SimDevice) -> list[Any]:
    return [b for m, p, b in device.calls if m == "POST" and p.endswith("/clear_users")]


def test_the_offender_page_confirms_and_reports_each_fortigate(fleet: dict[str, Any]) -> None:
    app: App = fleet["app"]
    browser = app.client()
    try:
        csrf = sign_in(browser, *ADMIN)
        offender = browser.get(f"/dashboard/offenders/{IP}")
        assert "Unban everywhere…" in offender.text
        confirm = browser.get(f"/dashboard/confirm?action=unban-everywhere&target={IP}")
        assert confirm.status_code == 200
        assert "<code>fw-a</code>, <code>fw-c</code>" in confirm.text
        assert "every configured FortiGate" in confirm.text
        assert clears(fleet["a"]) == []  # confirming does nothing yet
        done = browser.post(
            "/dashboard/actions/unban-everywhere",
            data={"csrf": csrf_of(confirm.text), "target": IP, "note": "false positive"},
            headers={"Origin": ORIGIN},
        )
        assert csrf_of(confirm.text) == csrf
    finally:
        browser.close()
    assert done.status_code == 200, done.text
    assert "released on 1 of 2 FortiGates" in done.text
    rows = [row for row in done.text.split("<tr")[1:] if "<td>fw-" in row]
    assert "released" in rows[0] and "fw-a" in rows[0]
    assert "fw-c" in rows[1] and "failed" in rows[1] and "server_error" in rows[1]
    assert clears(fleet["a"]) == [{"ip_addresses": [IP]}]
    assert IP not in {e.ip for e in fleet["a"].vdoms["root"]}
    assert ("unbanned", ADMIN[0], IP) in events(app)


def test_the_api_unbans_everywhere_with_an_admin_token(fleet: dict[str, Any]) -> None:
    app: App = fleet["app"]
    _, secret = tokens.add_token(
        app.daemon.store, "soar", Role.ADMIN, expires_in=None, note=None, actor="t", now=T0
    )
    script = app.client("198.51.100.30")
    try:
        answer = script.post(
            "/api/v1/unban-everywhere",
            json={"target": IP, "note": "ticket 9"},
            headers={"Authorization": f"Bearer {secret}"},
        )
    finally:
        script.close()
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["actor"] == "token:soar" and body["offenders"] == [IP]
    assert body["cleared_everywhere"] is False
    by_device = {d["device"]: d for d in body["devices"]}
    assert by_device["fw-a"] == {"device": "fw-a", "cleared": True, "addresses": 1, "error": None}
    assert by_device["fw-c"]["cleared"] is False
    assert by_device["fw-c"]["error"]["kind"] == "server_error"
    assert clears(fleet["a"]) == [{"ip_addresses": [IP]}]
    assert ("unbanned", "token:soar", IP) in events(app)
