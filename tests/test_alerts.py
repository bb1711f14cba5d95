"""Alerts from real records: each kind fired by what the core really produced (a publish held by
the mass-drop guard, a rollback, simulated FortiGates failing or locking banfeed out, a storm
of new offenders, consumer records, `verify`'s verdicts), de-duplicated and resolved, sent to a
real local webhook receiver; the config; `banfeed check` and `banfeed alerts test`; and
`banfeed run` sending them itself."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from test_alerts_targets import SECRET, Receiver, free_port

from banfeed import checks, compose, simulator
from banfeed import config as config_mod
from banfeed.alerts import (
    Alert,
    Alerting,
    AlertKind,
    CycleSeen,
    Severity,
    Tracker,
    recent_alerts,
    running,
)
from banfeed.errors import ConfigError
from banfeed.server.consumers import Fetches
from banfeed.store import Store, open_store
from banfeed.store.leases import STALE, Leases
from conftest import Clock, RunningDaemon, cli, fortigate_toml, wait_for, write_config

T0 = 1_800_000_000


@dataclass
class Host:
    """What alerting needs of a daemon: its config, store and clock (the real ones)."""

    config: config_mod.Config
    store: Store
    clock: Any
    crashed: BaseException | None = None
    stopped: bool = False
    leases: Leases | None = None  # a replica's, sharing the fleet; None: the whole fleet

    def request_stop(self) -> None:
        self.stopped = True


@pytest.fixture
def receiver() -> Any:
    running_receiver = Receiver()
    yield running_receiver
    running_receiver.stop()


def alerts_toml(url: str, **settings: Any) -> str:
    lines = ["[alerts]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
    target = ["[[alerts.targets]]", 'type = "webhook"', f'url = "{url}"', 'secret_env = "HOOK"']
    return "\n".join(lines + ["", *target]) + "\n\n"


def make_site(tmp_path: Path, body: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    path = write_config(tmp_path / "banfeed.toml", "sqlite:///b.db", body)
    env = {"BANFEED_CONFIG": str(path), "HOOK": SECRET, "TA": "ta", "BANFEED_ACTOR": "alice"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli("db", "upgrade").exit_code == 0
    return {"path": path, "env": env}


def capture(caplog: pytest.LogCaptureFixture) -> None:
    """Hand pytest's log capture back to the root logger: a CLI command replaced its handlers."""
    if caplog.handler not in logging.getLogger().handlers:
        logging.getLogger().addHandler(caplog.handler)


def alerting_for(path: Path, clock: Any, replica: str | None = None) -> tuple[Alerting, Host]:
    config = config_mod.load(path)
    store = open_store(config.store_url())
    leases = None if replica is None else Leases(store, clock, replica)
    host = Host(config, store, clock, leases=leases)
    return Alerting(host, checks.verify_feed), host


async def evaluated(alerting: Alerting, cycle: CycleSeen | None = None) -> list[Alert]:
    """One evaluation, then every delivery it queued sent (to the real receiver)."""
    sender = asyncio.ensure_future(alerting.dispatcher.run())
    try:
        notices = await alerting.evaluate(cycle)
        assert await alerting.dispatcher.drain(20)
        return notices
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


def kinds(notices: list[Alert]) -> list[tuple[str, str, bool]]:
    return [(n.kind.value, n.subject, n.resolved) for n in notices]


# -- the tracker ------------------------------------------------------------------------------


def firing(subject: str = "q", kind: AlertKind = AlertKind.FEED_HELD) -> Alert:
    return Alert(kind, subject, Severity.CRITICAL, f"{subject} held", T0)


def test_an_alert_is_sent_once_again_after_repeat_and_when_resolved() -> None:
    tracker = Tracker(repeat=3600)
    held = [AlertKind.FEED_HELD]
    assert kinds(tracker.update([firing()], held, T0)) == [("feed_held", "q", False)]
    assert tracker.update([firing()], held, T0 + 60) == []  # still firing: de-duplicated
    again = tracker.update([firing()], held, T0 + 3600)
    assert kinds(again) == [("feed_held", "q", False)] and again[0].since == T0
    assert tracker.update([], [AlertKind.FEED_PINNED], T0 + 3700) == []  # other kind: kept
    [resolved] = tracker.update([], held, T0 + 3800)
    assert resolved.resolved and resolved.record()["status"] == "resolved"
    assert resolved.severity is Severity.INFO and resolved.since == T0
    assert tracker.update([], held, T0 + 3900) == []
    assert REGISTRY.get_sample_value("banfeed_alert_active", {"kind": "feed_held"}) == 0


def test_only_the_subjects_checked_are_resolved() -> None:
    tracker = Tracker(repeat=3600)
    failing = [AlertKind.DEVICE_FAILING]
    a, b = firing("fw-a/root", failing[0]), firing("fw-b/root", failing[0])
    assert len(tracker.update([a, b], failing, T0)) == 2
    assert REGISTRY.get_sample_value("banfeed_alert_active", {"kind": "device_failing"}) == 2
    # A replica polling only fw-a says nothing about fw-b.
    [resolved] = tracker.update([], failing, T0 + 60, checked={"fw-a/root"})
    assert resolved.subject == "fw-a/root" and "device_failing:fw-b/root" in tracker.active


def test_alert_log_lines_are_warning_then_info(caplog: pytest.LogCaptureFixture) -> None:
    tracker = Tracker(repeat=3600)
    with caplog.at_level(logging.INFO, "banfeed.alerts"):
        tracker.update([firing()], [AlertKind.FEED_HELD], T0)
        tracker.update([], [AlertKind.FEED_HELD], T0 + 1)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("WARNING", "alert feed_held (critical) q: q held"),
        ("INFO", "alert feed_held (resolved) q: q held"),
    ]


# -- the config -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('[alerts]\nrepeet = "1h"\n', "alerts.repeet: unknown key — did you mean repeat?"),
        (
            '[[alerts.targets]]\ntype = "webhook"\nurl = "http://127.0.0.1:9/h"\n',
            "a webhook is signed: set secret_env",
        ),
        (
            '[[alerts.targets]]\ntype = "webhook"\nurl = "http://u:p@127.0.0.1:9/h"\n'
            'secret_env = "X"\n',
            "put no credentials in the URL",
        ),
        ('[[alerts.targets]]\ntype = "apprise"\n', "exactly one of urls_env, urls_file"),
        (
            '[[alerts.targets]]\ntype = "apprise"\nurls_env = "U"\nurl = "http://127.0.0.1/"\n',
            "url: for webhook targets only",
        ),
        (
            '[[alerts.targets]]\ntype = "webhook"\nkinds = ["feed_hold"]\n',
            "alerts.targets[0].kinds",
        ),
    ],
)
def test_bad_alert_config_is_refused_with_the_key(tmp_path: Path, body: str, message: str) -> None:
    path = write_config(tmp_path / "banfeed.toml", "sqlite:///b.db", body)
    with pytest.raises(ConfigError) as caught:
        config_mod.load(path)
    assert message in str(caught.value)


def test_the_defaults_are_the_documented_ones() -> None:
    settings = config_mod.Config().alerts
    assert (settings.device_failures, settings.storm_new_offenders) == (3, 1000)
    assert (settings.consumer_silence, settings.repeat, settings.queue) == (3, 6 * 3600, 1000)
    assert settings.targets == []


# -- each kind, from real records --------------------------------------------------------------


def feed_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> dict[str, Any]:
    fleet = simulator.SimFleet(seed=3)
    fw = fleet.add_device("fw-a", token="ta")
    for i in range(10):
        fw.add("root", f"93.184.216.{10 + i}", source="IPS")
    sim = simulator.start(fleet)
    body = fortigate_toml("fw-a", sim.urls["fw-a"], "TA") + alerts_toml(url)
    site = make_site(tmp_path, body, monkeypatch)
    assert cli("collect").exit_code == 0  # version 1: 10 lines
    return {**site, "sim": sim, "fw": fw}


def test_a_feed_held_by_the_mass_drop_guard_alerts_once_then_resolves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    site = feed_site(tmp_path, monkeypatch, receiver.url)
    try:
        assert cli("allow", "add", "93.184.216.0/24").exit_code == 0
        held = cli("export")
        assert held.exit_code == 1 and "HELD" in held.stderr  # the guard holds the feed
        alerting, host = alerting_for(site["path"], Clock(T0))
        notices = asyncio.run(evaluated(alerting))
        assert kinds(notices) == [("feed_held", "quarantine", False)]
        assert "10 of 10" in notices[0].text and "feeds approve quarantine" in notices[0].text
        document = receiver.json()
        assert document["kind"] == "feed_held" and document["status"] == "firing"
        assert document["facts"]["feed"] == "quarantine" and document["severity"] == "critical"
        assert asyncio.run(evaluated(alerting)) == []  # still held: nothing sent again
        assert len(receiver.requests) == 1
        assert cli("feeds", "approve", "quarantine").exit_code == 0
        assert cli("export").exit_code == 0  # the approved build is published: no hold
        [resolved] = asyncio.run(evaluated(alerting))
        assert resolved.resolved and receiver.json()["status"] == "resolved"
        # The dashboard's list: in memory, and in the store for any process.
        assert [a.resolved for a in recent_alerts(alerting)] == [True, False]
        assert recent_alerts(host.store) == recent_alerts(alerting)
        host.store.close()
    finally:
        site["sim"].stop()


def test_replicas_send_the_fleets_alerts_once_and_the_next_takes_over(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    """Every replica sees the held feed in the shared store; only the one that started first
    sends it. When it stops heartbeating, the next one leads within STALE seconds."""
    site = feed_site(tmp_path, monkeypatch, receiver.url)
    try:
        assert cli("allow", "add", "93.184.216.0/24").exit_code == 0
        assert cli("export").exit_code == 1  # held
        clock = Clock(T0)
        first, first_host = alerting_for(site["path"], clock, "replica-b")
        second, second_host = alerting_for(site["path"], clock, "replica-a")
        assert first_host.leases is not None and second_host.leases is not None
        first_host.leases.heartbeat()  # started first: it leads, whatever the ids' order
        clock.now += 1
        second_host.leases.heartbeat()
        assert first_host.leases.leads() and not second_host.leases.leads()
        assert kinds(asyncio.run(evaluated(first))) == [("feed_held", "quarantine", False)]
        assert asyncio.run(evaluated(second)) == []  # it sees the hold, and leaves it to the leader
        assert len(receiver.requests) == 1
        clock.now += STALE + 1  # the leader died: no more heartbeats
        second_host.leases.heartbeat()
        assert second_host.leases.leads() and not first_host.leases.leads()
        assert kinds(asyncio.run(evaluated(second))) == [("feed_held", "quarantine", False)]
        assert asyncio.run(evaluated(first)) == []  # back, but not leading: silent
        assert len(receiver.requests) == 2
        first_host.store.close()
        second_host.store.close()
    finally:
        site["sim"].stop()


def test_a_rollback_alerts_as_a_pinned_feed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    site = feed_site(tmp_path, monkeypatch, receiver.url)
    try:
        site["fw"].add("root", "93.184.216.99")
        assert cli("collect").exit_code == 0  # version 2
        assert cli("feeds", "rollback", "quarantine", "1").exit_code == 0
        alerting, host = alerting_for(site["path"], Clock(T0))
        [pinned] = asyncio.run(evaluated(alerting))
        assert pinned.kind is AlertKind.FEED_PINNED and pinned.facts["rolled_back"] is True
        assert "rolled back to version 1 (newest 2) by alice" in pinned.text
        assert receiver.json()["kind"] == "feed_pinned"
        assert cli("feeds", "release", "quarantine").exit_code == 0
        [released] = asyncio.run(evaluated(alerting))
        assert released.resolved and released.kind is AlertKind.FEED_PINNED
        host.store.close()
    finally:
        site["sim"].stop()


@pytest.fixture
def fleet_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver) -> Any:
    clock = Clock(T0)
    fleet = simulator.SimFleet(seed=9, clock=clock)
    fw = fleet.add_device("fw-a", token="ta")
    sim = simulator.start(fleet)
    body = fortigate_toml("fw-a", sim.urls["fw-a"], "TA") + alerts_toml(
        receiver.url, device_failures=3, storm_new_offenders=20
    )
    site = make_site(tmp_path, body, monkeypatch)
    alerting, host = alerting_for(site["path"], clock)
    collector = compose.make_collector(host.config, host.store, clock)
    yield {"fw": fw, "clock": clock, "alerting": alerting, "collector": collector}
    host.store.close()
    sim.stop()


def cycle_then_evaluate(site: dict[str, Any]) -> list[Alert]:
    async def both() -> list[Alert]:
        report = await site["collector"].cycle()
        seen = CycleSeen.of(report, site["collector"].targets)
        return await evaluated(site["alerting"], seen)

    site["clock"].now += 60
    return asyncio.run(both())


def test_a_device_failing_n_cycles_alerts_on_the_nth_then_resolves(
    fleet_site: dict[str, Any], receiver: Receiver
) -> None:
    fleet_site["fw"].fault = "500"
    assert cycle_then_evaluate(fleet_site) == []
    assert cycle_then_evaluate(fleet_site) == []
    [failing] = cycle_then_evaluate(fleet_site)  # the third failure in a row
    assert (failing.kind, failing.subject) == (AlertKind.DEVICE_FAILING, "fw-a/root")
    assert failing.facts["failures"] == 3 and failing.facts["error"] == "server_error"
    assert cycle_then_evaluate(fleet_site) == []  # a fourth: the same alert, not sent again
    fleet_site["fw"].fault = "none"
    [resolved] = cycle_then_evaluate(fleet_site)
    assert resolved.resolved and resolved.subject == "fw-a/root"
    assert [r["status"] for r in map(json.loads, (q["body"] for q in receiver.requests))] == [
        "firing",
        "resolved",
    ]


def test_a_device_backed_off_after_a_401_alerts(fleet_site: dict[str, Any]) -> None:
    fleet_site["fw"].fault = "401"
    [backoff] = cycle_then_evaluate(fleet_site)
    assert backoff.kind is AlertKind.DEVICE_BACKOFF and backoff.facts["error"] == "auth"
    assert "fix its token or trusted host" in backoff.text
    fleet_site["fw"].fault = "none"
    fleet_site["clock"].now += 3600  # past the back-off: polled again, and fine
    [resolved] = cycle_then_evaluate(fleet_site)
    assert resolved.resolved and resolved.kind is AlertKind.DEVICE_BACKOFF


def test_a_ban_storm_is_one_digest_of_causes_devices_and_a_sample(
    fleet_site: dict[str, Any], receiver: Receiver
) -> None:
    fleet_site["fw"].populate("root", 25, source="DoS", ipv6_ratio=0.0)
    fleet_site["fw"].populate("root", 5, source="IPS", ipv6_ratio=0.0)
    [storm] = cycle_then_evaluate(fleet_site)
    assert storm.kind is AlertKind.BAN_STORM and storm.facts["new_offenders"] == 30
    assert storm.facts["top_causes"] == [
        {"cause": "DoS", "offenders": 25},
        {"cause": "IPS", "offenders": 5},
    ]
    assert storm.facts["top_devices"] == [{"device": "fw-a", "offenders": 30}]
    assert len(storm.facts["sample"]) == 10
    assert "30 new offenders in one cycle (threshold 20)" in storm.text
    assert len(receiver.requests) == 1 and receiver.json()["kind"] == "ban_storm"
    [calm] = cycle_then_evaluate(fleet_site)  # nothing new: the storm is over
    assert calm.resolved and calm.kind is AlertKind.BAN_STORM


def test_a_consumer_that_stopped_fetching_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    site = make_site(tmp_path, alerts_toml(receiver.url, consumer_silence=3), monkeypatch)
    clock = Clock(T0)
    alerting, host = alerting_for(site["path"], clock)
    fetches = Fetches()  # what the server records for every authorised fetch
    for minute in range(0, 60, 10):  # every 10 minutes for an hour
        fetches.record("quarantine", "198.51.100.7", "FortiGate", '"e"', 200, T0 + minute * 60)
    with host.store.write() as tx:
        Fetches.write(tx, fetches.take(), T0 + 3000)
    clock.now = T0 + 3000 + 29 * 60  # 29 minutes since the last fetch: under 3 × 10
    assert asyncio.run(evaluated(alerting)) == []
    clock.now = T0 + 3000 + 31 * 60
    [silent] = asyncio.run(evaluated(alerting))
    assert silent.kind is AlertKind.CONSUMER_SILENT
    assert silent.facts["usual_interval"] == 600 and silent.facts["address"] == "198.51.100.7"
    assert "has not fetched feed quarantine for 31m" in silent.text
    fetches.record("quarantine", "198.51.100.7", "FortiGate", '"e"', 304, int(clock.now))
    with host.store.write() as tx:
        Fetches.write(tx, fetches.take(), int(clock.now))
    [back] = asyncio.run(evaluated(alerting))
    assert back.resolved and back.kind is AlertKind.CONSUMER_SILENT
    host.store.close()


def test_a_fortigate_whose_load_diverges_alerts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    fleet = simulator.SimFleet(seed=4)
    fw = fleet.add_device("fw-a", token="ta")
    for i in range(6):
        fw.add("root", f"93.184.216.{60 + i}", source="IPS")
    sim = simulator.start(fleet)
    body = (
        '[server]\nlisten = "127.0.0.1:0"\n\n'
        + fortigate_toml("fw-a", sim.urls["fw-a"], "TA")
        + alerts_toml(receiver.url, verify_every="1s")
    )
    site = make_site(tmp_path, body, monkeypatch)
    assert cli("collect").exit_code == 0
    daemon = RunningDaemon(config_mod.load(site["path"]), collect=False)
    try:
        fw.feed_limit = 4  # it loads 4 of the 6 lines served: overflow
        fw.add_feed("banfeed-quarantine", url=f"{daemon.url}/feeds/quarantine.txt")
        assert fw.refresh_feed("banfeed-quarantine") == 200
        alerting, host = alerting_for(site["path"], Clock(T0))
        report = asyncio.run(compose.make_collector(host.config, host.store, Clock(T0)).cycle())
        seen = CycleSeen.of(report, compose.targets(host.config))

        def diverged() -> list[Alert]:
            found = asyncio.run(evaluated(alerting, seen))
            return [n for n in found if n.kind is AlertKind.FEED_DIVERGED]

        [alert] = wait_for(diverged, what="a verification (every 1s)")
        assert alert.subject == "quarantine fw-a" and alert.facts["verdict"] == "overflow"
        assert receiver.json()["kind"] == "feed_diverged"
        with host.store.read() as tx:  # kept for the dashboard: what each device loaded
            kept = json.loads(tx.get_meta("verified") or "{}")
        [checked] = kept["feeds"]
        assert checked["feed"] == "quarantine" and checked["served"]["entries"] == 6
        assert [(d["device"], d["verdict"], d["valid"]) for d in checked["devices"]] == [
            ("fw-a", "overflow", 4)
        ]
        host.store.close()
    finally:
        daemon.stop()
        sim.stop()


# -- banfeed check, banfeed alerts test --------------------------------------------------------


def test_check_names_a_missing_secret_and_an_unreachable_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    port = free_port()
    body = alerts_toml(f"http://127.0.0.1:{port}/hook") + (
        f'[[alerts.targets]]\ntype = "webhook"\nurl = "{receiver.url}"\nsecret_env = "NOPE"\n\n'
        f'[[alerts.targets]]\ntype = "webhook"\nname = "ops"\nurl = "{receiver.url}"\n'
        'secret_env = "HOOK"\n'
    )
    make_site(tmp_path, body, monkeypatch)
    result = cli("check")
    assert result.exit_code == 0
    assert f"webhook[0]: cannot connect to 127.0.0.1:{port}" in result.stdout
    assert "alerts.targets[1].secret_env: $NOPE is not set — export NOPE" in result.stdout
    assert "ops" not in result.stdout  # complete and reachable: nothing to say
    assert receiver.requests == [] and SECRET not in result.stdout  # nothing was sent


def test_check_says_how_to_install_apprise(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    body = '[[alerts.targets]]\ntype = "apprise"\nurls_env = "CHAT"\n'
    make_site(tmp_path, body, monkeypatch)
    monkeypatch.setenv("CHAT", "json://127.0.0.1:9/chat")
    monkeypatch.setitem(__import__("sys").modules, "apprise", None)
    result = cli("check")
    assert 'apprise[0]: type = "apprise" needs the apprise library' in result.stdout
    assert "pip install 'banfeed[alerts]'" in result.stdout


def test_alerts_test_sends_one_test_alert_to_every_target(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    body = alerts_toml(receiver.url) + ('[[alerts.targets]]\ntype = "apprise"\nurls_env = "CHAT"\n')
    make_site(tmp_path, body, monkeypatch)
    monkeypatch.setenv("CHAT", f"json://127.0.0.1:{receiver.port}/chat")
    result = cli("alerts", "test", "--format", "json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "ok": True,
        "targets": [
            {"target": "webhook[0]", "ok": True, "error": None},
            {"target": "apprise[1]", "ok": True, "error": None},
        ],
    }
    paths = sorted(r["path"] for r in receiver.requests)
    assert paths == ["/chat", "/hook"]
    hook = next(json.loads(r["body"]) for r in receiver.requests if r["path"] == "/hook")
    assert hook["kind"] == "test" and hook["severity"] == "info"


def test_alerts_test_fails_for_a_target_that_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    receiver.statuses = [500]
    make_site(tmp_path, alerts_toml(receiver.url), monkeypatch)
    result = cli("alerts", "test")
    assert result.exit_code == 1
    assert "webhook[0]: the receiver answered HTTP 500" in result.stdout
    assert len(receiver.requests) == 1  # once: a test is not retried


def test_alerts_test_without_targets_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_site(tmp_path, "", monkeypatch)
    result = cli("alerts", "test")
    assert result.exit_code == 1 and "no [[alerts.targets]] configured" in result.stdout


# -- banfeed run ------------------------------------------------------------------------------


def test_run_sends_a_failing_device_and_its_recovery_to_the_webhook(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    fleet = simulator.SimFleet(seed=2)
    fw = fleet.add_device("fw-a", token="ta", entries=3, fault="500")
    sim = simulator.start(fleet)
    body = (
        '[server]\nlisten = "127.0.0.1:0"\n\n[collect]\ninterval = "1s"\njitter = 0.0\n\n'
        + fortigate_toml("fw-a", sim.urls["fw-a"], "TA")
        + alerts_toml(receiver.url, device_failures=2)
    )
    site = make_site(tmp_path, body, monkeypatch)
    daemon = RunningDaemon(config_mod.load(site["path"]))
    try:
        wait_for(lambda: receiver.ok(), timeout=30, what="the device_failing alert")
        first = receiver.json(0)
        assert (first["kind"], first["subject"], first["status"]) == (
            "device_failing",
            "fw-a/root",
            "firing",
        )
        fw.fault = "none"
        wait_for(lambda: len(receiver.ok()) >= 2, timeout=30, what="the resolved notice")
        assert receiver.json(1)["status"] == "resolved"
        alerting = running(daemon.daemon)
        assert alerting is not None
        assert [a.resolved for a in recent_alerts(alerting)][:2] == [True, False]
    finally:
        daemon.stop()
        sim.stop()
    assert daemon.daemon.crashed is None
    store = open_store(config_mod.load(site["path"]).store_url())
    assert [a.kind for a in recent_alerts(store)][:2] == [AlertKind.DEVICE_FAILING] * 2
    store.close()


# -- failure paths ----------------------------------------------------------------------------


def silent_consumer(store: Store) -> None:
    """A consumer that fetched every 10 minutes for an hour, written as the server writes it."""
    fetches = Fetches()
    for minute in range(0, 60, 10):
        fetches.record("quarantine", "198.51.100.7", "FortiGate", '"e"', 200, T0 + minute * 60)
    with store.write() as tx:
        Fetches.write(tx, fetches.take(), T0 + 3000)


def test_a_read_only_store_still_sends_and_says_the_list_was_not_kept(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    site = make_site(tmp_path, alerts_toml(receiver.url), monkeypatch)
    config = config_mod.load(site["path"])
    writable = open_store(config.store_url())
    silent_consumer(writable)
    writable.close()
    store = open_store(config.store_url(), read_only=True)
    alerting = Alerting(Host(config, store, Clock(T0 + 7200)))
    capture(caplog)
    with caplog.at_level(logging.WARNING, "banfeed.alerts"):
        [silent] = asyncio.run(evaluated(alerting))
    assert silent.kind is AlertKind.CONSUMER_SILENT and len(receiver.requests) == 1
    assert "recent alerts not saved in the store" in caplog.text
    assert recent_alerts(alerting) == [silent] and recent_alerts(store) == []
    store.close()


def test_a_store_that_cannot_be_read_evaluates_nothing_and_resolves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: Receiver
) -> None:
    site = make_site(tmp_path, alerts_toml(receiver.url), monkeypatch)
    alerting, host = alerting_for(site["path"], Clock(T0 + 7200))
    silent_consumer(host.store)
    assert len(asyncio.run(evaluated(alerting))) == 1
    host.store.close()
    (tmp_path / "b.db").rename(tmp_path / "moved.db")  # the store is gone
    host.store = open_store("sqlite:///" + str(tmp_path / "moved.db"))
    (tmp_path / "moved.db").unlink()
    assert asyncio.run(evaluated(alerting)) == []  # not "resolved": nothing was judged
    assert "consumer_silent:quarantine 198.51.100.7 FortiGate" in alerting.tracker.active


def test_a_target_missing_its_secret_is_left_out_and_the_others_send(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    body = alerts_toml(receiver.url).replace('secret_env = "HOOK"', 'secret_env = "NOPE"') + (
        f'[[alerts.targets]]\ntype = "webhook"\nurl = "{receiver.url}"\nsecret_env = "HOOK"\n'
    )
    site = make_site(tmp_path, body, monkeypatch)
    capture(caplog)
    with caplog.at_level(logging.ERROR, "banfeed.alerts"):
        alerting, host = alerting_for(site["path"], Clock(T0 + 7200))
    assert "alert target not used: alerts.targets[0].secret_env: $NOPE is not set" in caplog.text
    assert [t.label for t in alerting.targets] == ["webhook[1]"]
    silent_consumer(host.store)
    asyncio.run(evaluated(alerting))
    assert len(receiver.requests) == 1
    host.store.close()


class BuggyTarget:
    """A target with a bug: its send raises what no target should."""

    label = "buggy"
    kinds: frozenset[AlertKind] = frozenset()
    min_severity = Severity.INFO
    retries = 0
    max_per_hour = 60

    def wants(self, alert: Alert) -> bool:
        return True

    async def send(self, alert: Alert) -> None:
        raise RuntimeError("a bug in a target")


def test_a_bug_in_delivery_stops_banfeed_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    site = make_site(tmp_path, "", monkeypatch)
    alerting, host = alerting_for(site["path"], Clock(T0 + 7200))
    alerting.dispatcher.targets = [BuggyTarget()]
    capture(caplog)

    async def scenario() -> None:
        alerting.start()
        alerting.dispatcher.submit(firing())
        while not host.stopped:
            await asyncio.sleep(0.01)
        alerting.stop()

    with caplog.at_level(logging.CRITICAL, "banfeed.alerts"):
        asyncio.run(scenario())
    assert isinstance(host.crashed, RuntimeError)
    assert "alerting stopped unexpectedly; stopping banfeed" in caplog.text
    host.store.close()
