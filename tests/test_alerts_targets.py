"""Alert targets and the dispatcher against a real local receiver (an HTTP server on 127.0.0.1
in the test): the webhook's signature and JSON shape, apprise's json:// to the same receiver,
retries with back-off, the bounded queue, and a producer that never waits for a receiver."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from banfeed.alerts import Alert, AlertKind, DeliveryError, Dispatcher, Severity, signature
from banfeed.alerts.targets import Target, build_target, reach
from banfeed.config.alerts import AlertTargetConfig
from banfeed.errors import ConfigError
from banfeed.policy import backoff_seconds

SECRET = "s3cret-for-the-receiver"
T0 = 1_800_000_000


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST (headers, body, when); answers
    ``statuses`` in turn (then 200); holds each request while ``hold`` is clear."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.statuses: list[int] = []
        self.hold = threading.Event()
        self.hold.set()
        self.waiting = 0  # requests held now
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.waiting += 1
                receiver.hold.wait(30)
                receiver.waiting -= 1
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                receiver.requests.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body,
                     "at": time.monotonic(), "status": status}
                )  # fmt: skip
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def json(self, index: int = -1) -> Any:
        return json.loads(self.requests[index]["body"])

    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["status"] == 200]

    def stop(self) -> None:
        self.hold.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    running = Receiver()
    yield running
    running.stop()


def free_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def webhook(url: str, tmp_path: Path, **extra: Any) -> Target:
    (tmp_path / "secret").write_text(SECRET + "\n", encoding="utf-8")
    cfg = AlertTargetConfig(type="webhook", url=url, secret_file=Path("secret"), **extra)
    return build_target(cfg, 0, tmp_path)


def alert(subject: str = "quarantine", kind: AlertKind = AlertKind.FEED_HELD) -> Alert:
    return Alert(kind, subject, Severity.CRITICAL, f"feed {subject} is held", T0, {"feed": subject})


def counted(outcome: str, kind: str = "feed_held", target: str = "webhook[0]") -> float:
    labels = {"kind": kind, "target": target, "outcome": outcome}
    return REGISTRY.get_sample_value("banfeed_alerts_total", labels) or 0.0


async def dispatch(dispatcher: Dispatcher, alerts: list[Alert], timeout: float = 20) -> bool:
    sender = asyncio.ensure_future(dispatcher.run())
    for each in alerts:
        dispatcher.submit(each)
    try:
        return await dispatcher.drain(timeout)
    finally:
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)


# -- the webhook ------------------------------------------------------------------------------


def test_the_webhook_body_is_versioned_json_signed_with_hmac(
    receiver: Receiver, tmp_path: Path
) -> None:
    target = webhook(receiver.url, tmp_path)
    sent = counted("sent")
    assert asyncio.run(dispatch(Dispatcher([target], 10), [alert()]))
    [request] = receiver.requests
    body, headers = request["body"], request["headers"]
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert headers["X-Banfeed-Signature"] == expected == signature(SECRET, body)
    assert (
        headers["Content-Type"] == "application/json" and headers["X-Banfeed-Kind"] == "feed_held"
    )
    document = json.loads(body)
    assert document == {
        "schema": 1,
        "kind": "feed_held",
        "subject": "quarantine",
        "severity": "critical",
        "status": "firing",
        "text": "feed quarantine is held",
        "time": "2027-01-15T08:00:00Z",
        "since": "2027-01-15T08:00:00Z",
        "facts": {"feed": "quarantine"},
    }
    assert counted("sent") == sent + 1
    assert SECRET not in repr(target)


def test_a_receiver_answering_500_is_retried_with_backoff(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500, 500]
    target = webhook(receiver.url, tmp_path)
    retried = counted("retried")
    # The project's one back-off rule, scaled down from minutes to a tenth of a second.
    dispatcher = Dispatcher([target], 10, backoff=lambda n: backoff_seconds(n) / 600)
    assert asyncio.run(dispatch(dispatcher, [alert()]))
    assert [r["status"] for r in receiver.requests] == [500, 500, 200]
    gaps = [
        b["at"] - a["at"] for a, b in zip(receiver.requests, receiver.requests[1:], strict=False)
    ]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2  # 60 s, then 120 s, scaled: it doubles
    assert counted("retried") == retried + 2


def test_a_delivery_is_given_up_after_its_retries_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = webhook(f"http://127.0.0.1:{free_port()}/hook", tmp_path, retries=2)
    failed = counted("failed")
    dispatcher = Dispatcher([target], 10, backoff=lambda n: 0.01)
    with caplog.at_level(logging.WARNING, "banfeed.alerts"):
        assert asyncio.run(dispatch(dispatcher, [alert()]))
    assert counted("failed") == failed + 1
    assert "not delivered after 3 attempts" in caplog.text and "ConnectError" in caplog.text
    assert SECRET not in caplog.text


def test_a_later_alert_waits_behind_a_retried_one_for_the_same_target(
    receiver: Receiver, tmp_path: Path
) -> None:
    receiver.statuses = [500]
    target = webhook(receiver.url, tmp_path)
    dispatcher = Dispatcher([target], 10, backoff=lambda n: 0.2)
    assert asyncio.run(dispatch(dispatcher, [alert("first"), alert("second")]))
    subjects = [json.loads(r["body"])["subject"] for r in receiver.requests]
    assert subjects == ["first", "first", "second"]  # a resolved notice never overtakes


def test_a_full_queue_drops_the_oldest_and_counts_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    target = webhook(f"http://127.0.0.1:{free_port()}/hook", tmp_path)
    dispatcher = Dispatcher([target], 3)  # not running: nothing leaves the queue
    before = REGISTRY.get_sample_value("banfeed_alerts_dropped_total") or 0.0
    with caplog.at_level(logging.WARNING, "banfeed.alerts"):
        for i in range(5):
            dispatcher.submit(alert(f"feed-{i}"))
    assert [d.alert.subject for d in dispatcher.queue] == ["feed-2", "feed-3", "feed-4"]
    assert dispatcher.dropped == 2
    assert REGISTRY.get_sample_value("banfeed_alerts_dropped_total") == before + 2
    assert caplog.text.count("alert queue full (3): dropped the oldest delivery") == 2


def test_a_slow_receiver_never_slows_the_producing_loop(receiver: Receiver, tmp_path: Path) -> None:
    receiver.hold.clear()  # the receiver takes each request and answers only when told
    target = webhook(receiver.url, tmp_path)
    dispatcher = Dispatcher([target], 100)

    async def scenario() -> tuple[float, int, int]:
        sender = asyncio.ensure_future(dispatcher.run())
        dispatcher.submit(alert("first"))
        while receiver.waiting == 0:  # the first delivery is in the receiver's hands
            await asyncio.sleep(0.01)
        began = time.monotonic()
        for i in range(50):  # the producer: what the daemon does after each cycle
            dispatcher.submit(alert(f"feed-{i}"))
        ticks = 0
        while ticks < 20:  # and the event loop keeps turning while the receiver holds
            await asyncio.sleep(0.01)
            ticks += 1
        produced = time.monotonic() - began
        answered = len(receiver.requests)
        receiver.hold.set()
        assert await dispatcher.drain(30)
        sender.cancel()
        await asyncio.gather(sender, return_exceptions=True)
        return produced, answered, dispatcher.pending

    produced, answered, pending = asyncio.run(scenario())
    assert answered == 0  # everything above happened while the receiver had not answered
    assert len(receiver.requests) == 51 and pending == 0
    assert produced >= 0.2  # the loop ran its 20 ticks (so the test did wait on the receiver)


def test_kinds_and_min_severity_filter_a_target_and_resolved_follow(tmp_path: Path) -> None:
    target = webhook(
        "http://127.0.0.1:9/hook", tmp_path, kinds=["feed_held"], min_severity="critical"
    )
    assert target.wants(alert())
    assert not target.wants(alert(kind=AlertKind.FEED_PINNED))
    warning = Alert(AlertKind.FEED_HELD, "f", Severity.WARNING, "x", T0)
    assert not target.wants(warning)
    resolved = Alert(AlertKind.FEED_HELD, "f", Severity.INFO, "x", T0, resolved=True)
    assert target.wants(resolved)
    assert target.wants(Alert(AlertKind.TEST, "test", Severity.INFO, "t", T0))


def test_the_rate_limit_of_a_target_counts_what_it_does_not_send(tmp_path: Path) -> None:
    target = webhook("http://127.0.0.1:9/hook", tmp_path, max_per_hour=2)
    dispatcher = Dispatcher([target], 10)
    limited = counted("rate_limited")
    for i in range(3):
        dispatcher.submit(alert(f"feed-{i}"))
    assert len(dispatcher.queue) == 2
    assert counted("rate_limited") == limited + 1


def test_check_connects_to_a_webhook_without_sending(receiver: Receiver, tmp_path: Path) -> None:
    assert reach(webhook(receiver.url, tmp_path)) is None
    assert receiver.requests == []
    port = free_port()
    reason = reach(webhook(f"http://127.0.0.1:{port}/hook", tmp_path))
    assert reason is not None and f"webhook[0]: cannot connect to 127.0.0.1:{port}" in reason


# -- apprise ----------------------------------------------------------------------------------


def apprise_target(tmp_path: Path, *urls: str) -> Target:
    (tmp_path / "urls").write_text("# chat\n" + "\n".join(urls) + "\n", encoding="utf-8")
    cfg = AlertTargetConfig(type="apprise", urls_file=Path("urls"))
    return build_target(cfg, 1, tmp_path)


def test_apprise_json_posts_the_alert_to_a_local_receiver(
    receiver: Receiver, tmp_path: Path
) -> None:
    target = apprise_target(tmp_path, f"json://127.0.0.1:{receiver.port}/chat")
    asyncio.run(target.send(alert()))
    [request] = receiver.requests
    assert request["path"] == "/chat"
    document = receiver.json()
    assert document["title"] == "banfeed critical: feed_held quarantine"
    assert document["message"].startswith("feed quarantine is held")
    assert '"feed": "quarantine"' in document["message"]
    assert document["type"] == "failure"  # apprise's type for a critical alert
    assert "127.0.0.1" not in repr(target)  # URLs hold credentials: never shown


def test_apprise_failing_is_a_delivery_error(receiver: Receiver, tmp_path: Path) -> None:
    receiver.statuses = [500]
    target = apprise_target(tmp_path, f"json://127.0.0.1:{receiver.port}/chat")
    with pytest.raises(DeliveryError, match="apprise could not notify"):
        asyncio.run(target.send(alert()))


def test_an_apprise_url_it_does_not_know_is_reported(tmp_path: Path) -> None:
    target = apprise_target(tmp_path, "nosuchscheme://x")
    reason = reach(target)
    assert reason == "apprise[1]: apprise URL 1 is not one apprise knows"


def test_without_apprise_installed_the_fix_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "apprise", None)  # `import apprise` raises ImportError
    target = apprise_target(tmp_path, "json://127.0.0.1:9/chat")
    with pytest.raises(ConfigError, match=r"pip install 'banfeed\[alerts\]'"):
        asyncio.run(target.send(alert()))
