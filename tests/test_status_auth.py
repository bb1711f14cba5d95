"""`[server.status]`: /metrics and the status page / behind basic or bearer auth and networks,
as a feed is guarded; /healthz and /readyz always open; open by default, with a `check`
warning when the dashboard is on (a real `banfeed serve` daemon on 127.0.0.1, real SQLite)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from banfeed import config as config_mod
from banfeed.errors import ConfigError
from conftest import RunningDaemon, cli

PASSWORD = "scrape-pass-0123456789"
TOKEN = "scrape-token-0123456789"
Start = Callable[[str], str]


@pytest.fixture
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Start]:
    """``serve(extra_toml)`` starts a daemon (no collection) and returns its URL."""
    monkeypatch.setenv("SCRAPE_PW", PASSWORD)
    monkeypatch.setenv("SCRAPE_TOKEN", TOKEN)
    running: list[RunningDaemon] = []

    def start(extra: str) -> str:
        path = write(tmp_path, extra)
        assert cli("--config", str(path), "db", "upgrade").exit_code == 0
        daemon = RunningDaemon(config_mod.load(path), collect=False)
        running.append(daemon)
        assert daemon.url is not None
        return daemon.url

    yield start
    for daemon in running:
        daemon.stop()


def write(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "banfeed.toml"
    path.write_text(
        '[store]\nurl = "sqlite:///b.db"\n[server]\nlisten = "127.0.0.1:0"\n' + extra,
        encoding="utf-8",
    )
    return path


def statuses(url: str, **kwargs: object) -> dict[str, int]:
    paths = ("/metrics", "/", "/healthz", "/readyz")
    return {p: httpx.get(url + p, timeout=5, **kwargs).status_code for p in paths}  # type: ignore[arg-type]


def test_open_by_default(serve: Start) -> None:
    url = serve("")
    found = statuses(url)
    assert found["/metrics"] == 200 and found["/"] == 200 and found["/healthz"] == 200


def test_basic_auth_guards_metrics_and_the_status_page_only(serve: Start) -> None:
    url = serve(
        '[server.status.auth]\ntype = "basic"\nusername = "prometheus"\n'
        'password_env = "SCRAPE_PW"\n'
    )
    anonymous = httpx.get(f"{url}/metrics", timeout=5)
    assert anonymous.status_code == 401 and "banfeed_" not in anonymous.text
    assert anonymous.headers["www-authenticate"] == 'Basic realm="banfeed status", charset="UTF-8"'
    assert httpx.get(f"{url}/", timeout=5).status_code == 401
    wrong = statuses(url, auth=("prometheus", "wrong"))
    assert wrong["/metrics"] == 401 and wrong["/"] == 401
    right = httpx.get(f"{url}/metrics", auth=("prometheus", PASSWORD), timeout=5)
    assert right.status_code == 200 and "banfeed_" in right.text
    assert httpx.get(f"{url}/", auth=("prometheus", PASSWORD), timeout=5).status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200  # always open
    assert httpx.get(f"{url}/readyz", timeout=5).status_code in (200, 503)  # never 401
    assert httpx.get(f"{url}/feeds/quarantine.txt", timeout=5).status_code != 401  # own rules


def test_bearer_auth_as_prometheus_sends_it(serve: Start) -> None:
    url = serve('[server.status]\nauth = { type = "bearer", token_env = "SCRAPE_TOKEN" }\n')
    assert httpx.get(f"{url}/metrics", timeout=5).headers["www-authenticate"] == (
        'Bearer realm="banfeed status"'
    )
    given = {"Authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{url}/metrics", headers=given, timeout=5).status_code == 200
    wrong = {"Authorization": f"Bearer {TOKEN}x"}
    assert httpx.get(f"{url}/metrics", headers=wrong, timeout=5).status_code == 401


def test_allow_from_refuses_other_networks_before_credentials(serve: Start) -> None:
    url = serve(
        "[server.status]\n"
        'allow_from = ["192.0.2.0/24"]\n'
        'auth = { type = "basic", username = "prometheus", password_env = "SCRAPE_PW" }\n'
    )
    found = statuses(url, auth=("prometheus", PASSWORD))  # from 127.0.0.1: not allowed
    assert found == {"/metrics": 403, "/": 403, "/healthz": 200, "/readyz": found["/readyz"]}
    assert found["/readyz"] in (200, 503)


def test_allow_from_believes_x_forwarded_for_from_trusted_proxies_only(serve: Start) -> None:
    url = serve(
        'trusted_proxies = ["127.0.0.1/32"]\n[server.status]\nallow_from = ["192.0.2.0/24"]\n'
    )
    via_proxy = {"X-Forwarded-For": "192.0.2.7"}
    assert httpx.get(f"{url}/metrics", headers=via_proxy, timeout=5).status_code == 200
    elsewhere = {"X-Forwarded-For": "198.51.100.1"}
    assert httpx.get(f"{url}/metrics", headers=elsewhere, timeout=5).status_code == 403


def test_an_unset_secret_stops_the_daemon_before_it_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SCRAPE_MISSING", raising=False)
    path = write(tmp_path, '[server.status.auth]\ntype = "bearer"\ntoken_env = "SCRAPE_MISSING"\n')
    assert cli("--config", str(path), "db", "upgrade").exit_code == 0
    with pytest.raises(ConfigError, match=r"server\.status\.auth\.token_env: \$SCRAPE_MISSING"):
        RunningDaemon(config_mod.load(path), collect=False)


def test_check_warns_that_metrics_is_open_beside_the_dashboard(tmp_path: Path) -> None:
    path = write(tmp_path, "[dashboard]\nenabled = true\n")
    warned = cli("--config", str(path), "check")
    assert "server.status: /metrics and the status page / are open" in warned.output
    path = write(
        tmp_path, '[server.status]\nallow_from = ["192.0.2.9/32"]\n[dashboard]\nenabled = true\n'
    )
    assert "server.status" not in cli("--config", str(path), "check").output
    path = write(tmp_path, "")  # no dashboard: open as it always was, no warning
    assert "server.status" not in cli("--config", str(path), "check").output


def test_a_bad_status_section_is_a_config_error(tmp_path: Path) -> None:
    path = write(tmp_path, '[server.status.auth]\ntype = "basic"\n')
    result = cli("--config", str(path), "check")
    assert (
        result.exit_code == 2 and "server.status.auth: basic auth needs a username" in result.output
    )
