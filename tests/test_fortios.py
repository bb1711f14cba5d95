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
from banfeed.fortios import (
    EARLIEST,
    EXPIRES_AHEAD,
    FUTURE_SKEW,
    BannedAnswer,
    DeviceTarget,
    FortiOSClient,
    _fast_ipv4,
    parse_banned,
    parse_entry_list,
)
from banfeed.net import parse_address
from conftest import T0

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "fortios"
# Just after the fixtures' newest `created` (2023-11-20): the clock they were taken at.
FIXTURE_NOW = 1_700_600_000


def target(url: str, token: str = "tok", **kw: Any) -> DeviceTarget:
    return DeviceTarget(name="fw", url=url, token=SecretStr(token), **kw)


def banned(
    tgt: DeviceTarget, vdom: str = "root", known: str | None = None, now: int = T0
) -> BannedAnswer:
    async def go() -> BannedAnswer:
        async with FortiOSClient(tgt) as client:
            return await client.banned(vdom, now=now, known_fingerprint=known)

    return asyncio.run(go())


@pytest.fixture
def one(fleet: simulator.SimFleet, run_sim: Any) -> tuple[simulator.SimDevice, str]:
    device = fleet.add_device("fw", token="tok", vdoms=["root", "dmz"], entries=3)
    return device, run_sim()["fw"]


def test_fixtures_are_in_the_repository() -> None:
    names = {p.name for p in FIXTURES.iterdir()}
    assert "user_banned_select_v7.2.5.json" in names
    for json_file in FIXTURES.glob("*.json"):  # each says where it comes from
        assert json_file.with_suffix(".source.txt").is_file(), json_file.name
        json.loads(json_file.read_bytes())


def test_real_fixtures_parse() -> None:
    select = (FIXTURES / "user_banned_select_v7.2.5.json").read_bytes()
    lists = parse_banned("fw", "root", select, now=FIXTURE_NOW)
    (only,) = lists
    assert only.vdom == "root" and not only.rejected
    assert [str(o.ip) for o in only.offenses] == ["0.0.0.0", "0.0.0.0", "::"]
    assert only.offenses[0].expires == 1969642305
    assert only.offenses[1].expires is None  # absent "expires": a ban with no expiry
    assert only.offenses[2].source == "Administrative"
    empty_body = (FIXTURES / "user_banned_empty_v6.4.4.json").read_bytes()
    empty = parse_banned("fw", "root", empty_body, now=FIXTURE_NOW)
    assert empty[0].offenses == [] and empty[0].rejected == []


def test_answer_is_typed_and_ipv6_normalised(one: Any) -> None:
    device, url = one
    device.add("root", "2A00:1450:0000:0000:0000:0000:0000:0001", created=T0 - 100, expires=None)
    answer = banned(target(url))
    (lst,) = answer.lists
    entry = next(o for o in lst.offenses if o.created == T0 - 100)
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
        parse_banned("fw", "root", body, now=T0)


GOOD_IP, BAD_IP = "198.51.100.7", "198.51.100.8"


def two_entries(**bad: object) -> bytes:
    """A list of a valid entry and one with ``bad`` fields (None: the key is absent)."""
    base: dict[str, object] = {"ip_address": GOOD_IP, "ipv6": 0, "source": "IPS"}
    base |= {"created": T0, "expires": T0 + 300}
    other = {k: v for k, v in ({**base, "ip_address": BAD_IP} | bad).items() if v is not None}
    return json.dumps({"status": "success", "vdom": "root", "results": [base, other]}).encode()


@pytest.mark.parametrize(
    "fields",
    [
        {"created": EARLIEST},
        {"created": T0 + FUTURE_SKEW},  # a device clock up to a day ahead is tolerated
        {"created": EARLIEST, "expires": EARLIEST},  # long expired: harmless, still a fact
        {"expires": T0 + EXPIRES_AHEAD},
        {"expires": None},  # absent: no expiry
    ],
)
def test_times_inside_the_window_are_kept(fields: dict[str, object]) -> None:
    (lst,) = parse_banned("fw", "root", two_entries(**fields), now=T0)
    assert lst.rejected == [] and len(lst.offenses) == 2
    kept = lst.offenses[1]
    assert kept.created == fields.get("created", T0)
    assert kept.expires == fields.get("expires", T0 + 300)


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("created", T0 + FUTURE_SKEW + 1, "more than a day ahead of banfeed's clock"),
        ("created", 32_503_680_000, "3000-01-01T00:00:00Z"),
        ("created", 10**400, "more than a day ahead"),
        ("created", EARLIEST - 1, "1999-12-31T23:59:59Z) is before 2000-01-01"),
        ("created", 0, "before 2000-01-01"),
        ("created", -1, "before 2000-01-01"),
        ("created", float(T0), "not an epoch time in whole seconds"),
        ("created", 1.8e9 + 0.5, "whole seconds"),
        ("created", True, "whole seconds"),
        ("created", "1800000000", "whole seconds"),
        ("created", [[[[T0]]]], "'<list>'"),
        ("created", None, "created is missing"),
        ("expires", T0 + EXPIRES_AHEAD + 1, "more than ten years ahead"),
        ("expires", 2**40, "more than ten years ahead"),
        ("expires", EARLIEST - 1, "before 2000-01-01"),
        ("expires", float(T0 + 300), "whole seconds"),
        ("expires", False, "whole seconds"),
        ("expires", {"a": {"a": {}}}, "'<dict>'"),
    ],
)
def test_impossible_times_reject_that_entry_alone(key: str, value: object, needle: str) -> None:
    (lst,) = parse_banned("fw", "root", two_entries(**{key: value}), now=T0)
    assert [str(o.ip) for o in lst.offenses] == [GOOD_IP]
    (rejected,) = lst.rejected
    assert rejected.index == 1 and rejected.device == "fw" and rejected.vdom == "root"
    assert rejected.reason.startswith(key) and needle in rejected.reason


NESTED_VALUE = json.loads("[" * 500 + "]" * 500)  # deep, yet within what json.loads parses


@pytest.mark.parametrize("key", ["ip_address", "ipv6", "created", "expires", "source"])
def test_deep_values_inside_an_entry_reject_it_without_being_printed(key: str) -> None:
    (lst,) = parse_banned("fw", "root", two_entries(**{key: NESTED_VALUE}), now=T0)
    assert [str(o.ip) for o in lst.offenses] == [GOOD_IP]
    (rejected,) = lst.rejected
    assert len(rejected.reason) < 200 and "[[" not in rejected.reason


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b"[" * 1_000, "nested too deeply"),  # not even closed: the depth fails first
        (b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "nested too deeply"),
        (b'{"status": "success", "results": [' + b"[" * 5_000 + b"]", "nested too deeply"),
        (b'{"status": "success", "results": ["\xff\xfe"]}', "not UTF-8 text"),
        (b'{"status": "success", "results": [' + b"7" * 5_000 + b"]}", "not valid JSON"),
        (b"", "not valid JSON"),
        (b"{", "not valid JSON"),
    ],
)
def test_hostile_bodies_are_bad_responses(body: bytes, needle: str) -> None:
    with pytest.raises(errors.DeviceBadResponse, match=needle) as caught:
        parse_banned("fw", "root", body, now=T0)
    assert caught.value.device == "fw" and caught.value.kind == "bad_response"
    with pytest.raises(errors.DeviceBadResponse, match=needle):
        parse_entry_list("fw", "quarantine", body)


def test_an_error_object_with_a_deep_detail_is_still_an_error() -> None:
    body = json.dumps({"status": "error", "http_status": 500, "cli_error": NESTED_VALUE})
    with pytest.raises(errors.DeviceHTTPError, match=r"http_status=500, cli_error=<list>"):
        parse_banned("fw", "root", body.encode(), now=T0)


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
