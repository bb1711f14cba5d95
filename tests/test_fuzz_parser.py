"""Fuzzing the device boundary: hostile ``user/banned`` answers, parsed whole or diffed against
the last answer, held to a reference built on ``ipaddress`` (tests/fuzzkit.py); then whole
collect cycles against a hostile device on 127.0.0.1, down to the published feed.

The long run is ``bench/fuzz.py --entries 1000000``; this file is its short version.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fuzzkit import (
    NOW,
    answer_pair,
    body,
    check_diffed,
    check_plain,
    document,
    document_refused,
    entries,
    entry,
    expected,
    good_entry,
    loaded,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from banfeed import compose
from banfeed import config as config_mod
from banfeed.cycles import collect_once
from banfeed.fortios.parse import diffed_lists
from banfeed.publish import served
from banfeed.store import open_store
from banfeed.store.schema import offenses
from conftest import Clock

FUZZ = settings(max_examples=200, deadline=None, database=None)


@FUZZ
@given(raw=body())
def test_any_answer_parses_to_the_reference_or_fails_that_device_alone(raw: bytes) -> None:
    check_plain(raw)


@FUZZ
@given(pair=answer_pair())
def test_a_diffed_answer_is_judged_like_a_full_one_except_what_was_accepted(pair: Any) -> None:
    check_diffed(*pair)


@settings(max_examples=150, deadline=None, database=None)
@given(doc=document(), before=entries())
def test_a_diffed_parse_of_any_document_only_raises_device_errors(doc: Any, before: Any) -> None:
    """Diffing reads entries before validating them (to hash them): any shape must survive."""
    from banfeed.errors import DeviceError

    _, known = diffed_lists("fw", "root", {"results": before}, now=NOW, known=None)
    try:
        diffed_lists("fw", "root", json.loads(json.dumps(doc)), now=NOW, known=known)
    except DeviceError:
        pass


def test_the_reference_agrees_with_known_verdicts() -> None:
    """The reference itself, on the cases the README names: a fuzzer is only as good."""
    good = {"ip_address": "::ffff:45.1.2.3", "created": NOW, "source": " IPS "}
    assert expected(good).ip == ipaddress.IPv4Address("45.1.2.3")
    assert expected(good).source == "IPS"
    for text in ("999.1.1.1", "01.02.03.04", "1.2.3.4\n", "fe80::1%eth0", "1" * 46):
        assert expected(good | {"ip_address": text}).ip is None
    assert expected(good | {"created": float(NOW)}).ip is None
    assert expected(good | {"ipv6": 0}).ip is None  # the flag contradicts the address


def test_an_integer_hash_collision_with_a_stored_entry_stores_nothing(tmp_path: Path) -> None:
    """Keys hash integers arithmetically (``hash(n) == n mod 2**61-1``), so a device can send
    an impossible ``created`` whose key is that of an entry it sent before: that entry is then
    counted unchanged instead of rejected. What matters holds: nothing new is stored — the
    offense kept is the one validated before."""
    good = {"ip_address": "45.1.2.3", "created": NOW - 10, "source": "IPS"}
    forged = good | {"created": NOW - 10 + 2**61 - 1}
    [alone], _ = diffed_lists("fw", "root", {"results": [dict(forged)]}, now=NOW, known=None)
    assert alone.rejected and not alone.offenses  # judged alone, it is refused
    _, known = diffed_lists("fw", "root", {"results": [good]}, now=NOW, known=None)
    [diffed], _ = diffed_lists("fw", "root", {"results": [forged]}, now=NOW, known=known)
    assert diffed.offenses == [] and diffed.unchanged == 1


# -- whole cycles against a hostile device ---------------------------------------------------


class Hostile:
    """A FortiGate stand-in on 127.0.0.1 that answers whatever bytes the test sets."""

    def __init__(self) -> None:
        self.body = b"{}"
        hostile = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(hostile.body)))
                self.end_headers()
                self.wfile.write(hostile.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def empty_store() -> Iterator[Path]:
    """A store file with the schema, copied for each example (migrating costs more)."""
    folder = Path(tempfile.mkdtemp(prefix="banfeed-fuzz-"))
    open_store(f"sqlite:///{folder / 'empty.db'}", create=True).close()
    yield folder / "empty.db"
    shutil.rmtree(folder)


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    device = Hostile()
    yield device
    device.stop()


ALLOW = ["45.0.0.0/8", "2a00:1450::/32"]  # in the fuzzer's plausible addresses
_ALLOWED = [ipaddress.ip_network(n) for n in ALLOW]


def publishable(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """What ``ipaddress`` says may reach a blocklist: global unicast, not allowlisted."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return False  # published as the IPv4 address it carries, never in this form
    special = address.is_multicast or address.is_reserved or address.is_unspecified
    return address.is_global and not special and not any(address in n for n in _ALLOWED)


@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    answers=st.lists(
        st.one_of(
            st.builds(
                lambda items, vdom: {"vdom": vdom, "results": items},
                st.lists(st.one_of(good_entry(), good_entry(), entry()), max_size=30),
                st.sampled_from(["root", "root", "dmz"]),
            ),
            document(max_entries=20),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_hostile_answers_never_publish_anything_unsafe(
    hostile: Hostile, empty_store: Path, monkeypatch: pytest.MonkeyPatch, answers: list[Any]
) -> None:
    monkeypatch.setenv("FUZZ_TOKEN", "fuzz-token-0123456789")
    folder = Path(tempfile.mkdtemp(prefix="banfeed-fuzz-"))
    shutil.copy(empty_store, folder / "f.db")
    data = {
        "store": {"url": f"sqlite:///{folder / 'f.db'}"},
        "allowlist": {"networks": ALLOW},
        "fortigates": [{"name": "hostile", "url": hostile.url, "token_env": "FUZZ_TOKEN"}],
    }
    cfg = config_mod.parse(data, base_dir=folder)
    rt = compose.Runtime(cfg, open_store(cfg.store_url()), Clock(NOW))
    accepted: set[Any] = set()
    try:
        for answer in answers:  # successive polls: the later ones are diffed against the first
            hostile.body = json.dumps(answer, allow_nan=True).encode()
            ok, doc = loaded(hostile.body)  # the reference's verdicts on this answer
            if ok and not document_refused(doc):
                for obj in doc if isinstance(doc, list) else [doc]:
                    accepted |= {e.ip for e in map(expected, obj["results"]) if e.ip}
            report, _, _ = asyncio.run(collect_once(rt))
            assert len(report.results) == 1  # the device failed or listed; the cycle ended
        with rt.store.read() as tx:
            shown = served(tx, "quarantine")
            stored = {row.ip for row in tx.conn.execute(sa.select(offenses.c.ip))}
        lines = shown.body().decode("ascii").splitlines() if shown else []
    finally:
        rt.store.close()
        shutil.rmtree(folder)
    assert stored == {str(ip) for ip in accepted}, "stored is not what the answers validly listed"
    for line in lines:
        network = ipaddress.ip_network(line, strict=True)
        assert str(network.network_address if network.num_addresses == 1 else network) == line
        assert network.num_addresses == 1, f"{line}: no ban or escalation here, only addresses"
        address = network.network_address
        assert publishable(address), f"{line} published"
        assert address in accepted, f"{line} was never validly listed"
