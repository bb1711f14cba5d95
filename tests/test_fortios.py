"""The FortiOS client over real HTTP(S) against the simulator: shapes, validation, typed errors."""

from __future__ import annotations

import asyncio
import json
import socket
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import trustme
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from banfeed import errors, simulator
from banfeed.fortios import BannedAnswer, DeviceTarget, FortiOSClient, _fast_ipv4, parse_banned
from banfeed.net import parse_address

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fortios" / "fixtures"


def target(url: str, token: str = "tok", **kw: Any) -> DeviceTarget:
    return DeviceTarget(name="fw", url=url, token=SecretStr(token), **kw)


def banned(tgt: DeviceTarget, vdom: str = "root", known: str | None = None) -> BannedAnswer:
    async def go() -> BannedAnswer:
        async with FortiOSClient(tgt) as client:
            return await client.banned(vdom, known_fingerprint=known)

    return asyncio.run(go())


@pytest.fixture
def one(fleet: simulator.SimFleet, run_sim: Any) -> tuple[simulator.SimDevice, str]:
    device = fleet.add_device("fw", token="tok", vdoms=["root", "dmz"], entries=3)
    return device, run_sim()["fw"]


def test_real_fixtures_parse() -> None:
    lists = parse_banned("fw", "root", (FIXTURES / "user_banned_select_v7.2.5.json").read_bytes())
    (only,) = lists
    assert only.vdom == "root" and not only.rejected
    assert [str(o.ip) for o in only.offenses] == ["0.0.0.0", "0.0.0.0", "::"]
    assert only.offenses[0].expires == 1969642305
    assert only.offenses[1].expires is None  # absent "expires": a ban with no expiry
    assert only.offenses[2].source == "Administrative"
    empty = parse_banned("fw", "root", (FIXTURES / "user_banned_empty_v6.4.4.json").read_bytes())
    assert empty[0].offenses == [] and empty[0].rejected == []


def test_answer_is_typed_and_ipv6_normalised(one: Any) -> None:
    device, url = one
    device.add("root", "2A00:1450:0000:0000:0000:0000:0000:0001", created=100, expires=None)
    answer = banned(target(url))
    (lst,) = answer.lists
    entry = next(o for o in lst.offenses if o.created == 100)
    assert entry.ip == parse_address("2a00:1450::1") and entry.expires is None
    assert len(lst.offenses) == 4 and lst.rejected == []
    assert all(o.device == "fw" and o.vdom == "root" for o in lst.offenses)


def test_vdom_star_answers_one_list_per_vdom(one: Any) -> None:
    _device, url = one
    answer = banned(target(url), vdom="*")
    assert sorted(v.vdom for v in answer.lists) == ["dmz", "root"]


def test_same_bytes_are_not_parsed_again(one: Any) -> None:
    _device, url = one
    first = banned(target(url))
    again = banned(target(url), known=first.fingerprint)
    assert again.unchanged and again.lists == [] and again.fingerprint == first.fingerprint


def test_invalid_entries_are_rejected_with_reasons(one: Any) -> None:
    device, url = one
    device.fault = "invalid"
    (lst,) = banned(target(url)).lists
    assert len(lst.offenses) == 3
    reasons = " | ".join(r.reason for r in lst.rejected)
    assert len(lst.rejected) == 7
    for needle in ("999.1.1.1", "01.02.03.04", "characters", "empty", "too long", "created"):
        assert needle in reasons


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        ("401", errors.DeviceAuthError, 401),
        ("403", errors.DevicePermissionError, 403),
        ("404", errors.DeviceNotFoundError, 404),
        ("424", errors.DeviceUnavailableError, 424),
        ("429", errors.DeviceRateLimited, 429),
        ("500", errors.DeviceServerError, 500),
    ],
)
def test_http_statuses_are_typed(one: Any, fault: str, error: type, status: int) -> None:
    device, url = one
    device.fault = fault
    with pytest.raises(error) as caught:
        banned(target(url))
    assert caught.value.status == status and caught.value.device == "fw"
    if fault == "429":
        assert caught.value.retry_after == 60


def test_wrong_token_is_auth_error_and_token_never_in_message(one: Any) -> None:
    _device, url = one
    with pytest.raises(errors.DeviceAuthError) as caught:
        banned(target(url, token="s3cret-wrong-token"))
    assert "s3cret-wrong-token" not in str(caught.value)
    assert "s3cret-wrong-token" not in repr(target(url, token="s3cret-wrong-token"))


@pytest.mark.parametrize(
    ("fault", "needle"),
    [("html", "HTML"), ("truncated", "not valid JSON"), ("shape", "wrong JSON shape")],
)
def test_bad_bodies_are_bad_responses(one: Any, fault: str, needle: str) -> None:
    device, url = one
    device.fault = fault
    with pytest.raises(errors.DeviceBadResponse, match=needle):
        banned(target(url))


def test_body_over_the_limit_is_refused(one: Any) -> None:
    device, url = one
    device.fault, device.huge_bytes = "huge", 300_000
    with pytest.raises(errors.DeviceBadResponse, match="larger than max_response"):
        banned(target(url, max_response=100_000))
    assert banned(target(url, max_response=400_000)).lists  # under the limit it is fine


def test_unknown_vdom_is_not_found(one: Any) -> None:
    _device, url = one
    with pytest.raises(errors.DeviceNotFoundError):
        banned(target(url), vdom="nope")


def test_timeout(one: Any) -> None:
    device, url = one
    device.fault, device.timeout_delay = "timeout", 5.0
    with pytest.raises(errors.DeviceTimeout, match="0.3s"):
        banned(target(url, timeout=0.3))


def test_connection_refused() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(errors.DeviceUnreachable, match="cannot connect"):
        banned(target(f"http://127.0.0.1:{port}"))


def test_missing_token_fails_that_device_only() -> None:
    tgt = DeviceTarget(name="fw", url="http://127.0.0.1:9", token=None, token_problem="unset X")
    with pytest.raises(errors.DeviceConfigError, match="unset X"):
        banned(tgt)


@pytest.fixture
def tls_sim(fleet: simulator.SimFleet, tmp_path: Path) -> Any:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_file, key_file, ca_file = tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem"
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    ca.cert_pem.write_to_path(str(ca_file))
    fleet.add_device("fw", token="tok", entries=2)
    sim = simulator.start(fleet, ssl_certfile=str(cert_file), ssl_keyfile=str(key_file))
    yield sim.urls["fw"], ca_file
    sim.stop()


def test_tls_verified_with_ca_file(tls_sim: Any) -> None:
    url, ca_file = tls_sim
    assert url.startswith("https://")
    assert len(banned(target(url, ca_file=ca_file)).lists[0].offenses) == 2


def test_tls_untrusted_certificate_is_a_tls_error(tls_sim: Any) -> None:
    url, _ca_file = tls_sim
    with pytest.raises(errors.DeviceTLSError, match="ca_file"):
        banned(target(url))


def test_plain_http_to_https_port_is_a_tls_or_protocol_failure(tls_sim: Any) -> None:
    url, _ca_file = tls_sim
    with pytest.raises(errors.DeviceError):
        banned(target(url.replace("https://", "http://")))


def test_error_object_inside_200_is_an_error() -> None:
    body = json.dumps({"status": "error", "http_status": 403, "error": -37}).encode()
    with pytest.raises(errors.DeviceHTTPError, match="http_status=403"):
        parse_banned("fw", "root", body)


@settings(max_examples=3000, deadline=None)
@given(
    text=st.one_of(
        st.text(alphabet="0123456789. \n\t+-x", min_size=7, max_size=15),
        st.lists(st.integers(min_value=0, max_value=999), min_size=3, max_size=5).map(
            lambda parts: ".".join(str(p).zfill(1 + p % 2) for p in parts)
        ),
        st.tuples(*[st.integers(min_value=0, max_value=300)] * 4).map(
            lambda parts: ".".join(map(str, parts))
        ),
    )
)
def test_fast_ipv4_agrees_with_ipaddress(text: str) -> None:
    """The inet_pton fast path accepts exactly what ipaddress.IPv4Address accepts."""
    try:
        expected = IPv4Address(text)
    except ValueError:
        expected = None
    assert _fast_ipv4(text) == expected
