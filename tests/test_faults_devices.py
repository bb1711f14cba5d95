"""Device-side faults and hostile answers (docs/reliability.md, "Devices: faults and hostile
answers"): each fails its own device and loses nothing of the healthy ones in the same cycle.

Real parts only: simulated FortiGates over HTTP(S) on 127.0.0.1 (their fault modes), small
hostile servers written here (a port that refuses, a backlog that never completes a connect, a
device that accepts and never answers), certificates from ``trustme`` and ``cryptography``,
``banfeed collect`` end to end on a real SQLite file. The slow answers (drip, drip-headers,
slow-chunked) and deep nesting are in tests/test_device_faults.py; the HTTP status types and
bad bodies at the client in tests/test_fortios.py.
"""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from banfeed import checks, errors, simulator
from banfeed import config as config_mod
from banfeed.fortios import BannedAnswer, DeviceTarget, FortiOSClient
from banfeed.fortios.parse import MAX_REJECTED, diffed_lists
from banfeed.fortios.stream import BATCH, streamed_lists
from banfeed.store import open_store
from conftest import Clock, cli, write_config

TOKEN = "fault-suite-token-0123456789abcdef"


def banned(target: DeviceTarget, vdom: str = "root", now: int | None = None) -> BannedAnswer:
    async def go() -> BannedAnswer:
        async with FortiOSClient(target) as client:
            return await client.banned(vdom, now=now or int(time.time()))

    return asyncio.run(go())


def target(url: str, **kw: Any) -> DeviceTarget:
    kw.setdefault("timeout", 1.0)
    return DeviceTarget(name="fw", url=url, token=SecretStr(TOKEN), **kw)


# -- hostile servers of our own ---------------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
def full_backlog() -> Iterator[int]:
    """A port whose accept queue is full: the kernel drops the SYN, so connect times out."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(listener.getsockname())
        except BlockingIOError:
            pass
        fillers.append(filler)
    yield listener.getsockname()[1]
    for sock in [*fillers, listener]:
        sock.close()


@pytest.fixture
def silent_device() -> Iterator[tuple[int, list[socket.socket]]]:
    """A device that accepts connections, reads the request and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1], held
    stop.set()
    thread.join()
    for sock in [*held, listener]:
        sock.close()


def test_connect_timeout_is_a_timeout(full_backlog: int) -> None:
    started = time.monotonic()
    with pytest.raises(errors.DeviceTimeout, match="within 1s"):
        banned(target(f"http://127.0.0.1:{full_backlog}"))
    assert time.monotonic() - started >= 1.0  # waited for the deadline, then gave up


def test_a_device_that_accepts_and_never_answers_is_a_timeout(silent_device: Any) -> None:
    port, held = silent_device
    with pytest.raises(errors.DeviceTimeout, match="connect, headers and body"):
        banned(target(f"http://127.0.0.1:{port}"))
    assert len(held) == 1  # it was connected: the deadline, not the connect, ended it


def test_a_name_that_does_not_resolve_is_unreachable() -> None:
    # RFC 6761: no name under .invalid ever resolves.
    with pytest.raises(errors.DeviceUnreachable, match="cannot connect to https://fw.invalid: "):
        banned(target("https://fw.invalid"))


# -- TLS ----------------------------------------------------------------------------------------


LOOPBACK = ipaddress.ip_address("127.0.0.1")


def self_signed(folder: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fortigate")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(LOOPBACK)]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / "self.pem", folder / "self.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@pytest.fixture
def https_devices(fleet: simulator.SimFleet, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two HTTPS simulators: one with a certificate of a private CA, one self-signed."""
    ca, other_ca = trustme.CA(), trustme.CA()
    issued = ca.issue_cert("127.0.0.1")
    ca_cert, key = tmp_path / "ca-issued.pem", tmp_path / "ca-issued.key"
    issued.cert_chain_pems[0].write_to_path(str(ca_cert))
    issued.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    other_ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    self_cert, self_key = self_signed(tmp_path)
    fleet.add_device("fw", token=TOKEN, entries=2)
    private = simulator.start(fleet, ssl_certfile=str(ca_cert), ssl_keyfile=str(key))
    alone = simulator.start(fleet, ssl_certfile=str(self_cert), ssl_keyfile=str(self_key))
    yield {
        "private": private.urls["fw"],
        "self": alone.urls["fw"],
        "ca": tmp_path / "ca.pem",
        "other_ca": tmp_path / "other-ca.pem",
        "self_cert": self_cert,
    }
    private.stop()
    alone.stop()


def test_tls_the_wrong_ca_is_refused(https_devices: dict[str, Any]) -> None:
    with pytest.raises(errors.DeviceTLSError, match="certificate not trusted") as caught:
        banned(target(https_devices["private"], ca_file=https_devices["other_ca"]))
    assert "unable to get local issuer certificate" in str(caught.value)
    assert "set ca_file" in str(caught.value)
    assert banned(target(https_devices["private"], ca_file=https_devices["ca"])).lists


def test_tls_self_signed_is_refused_without_ca_file_and_trusted_with_it(
    https_devices: dict[str, Any],
) -> None:
    url = https_devices["self"]
    with pytest.raises(errors.DeviceTLSError, match=r"not trusted \(self.signed certificate\)"):
        banned(target(url))
    (answer,) = banned(target(url, ca_file=https_devices["self_cert"])).lists
    assert len(answer.offenses) == 2


def test_tls_verification_off_is_explicit_per_device(https_devices: dict[str, Any]) -> None:
    url = https_devices["self"]
    assert DeviceTarget(name="fw", url=url, token=None).verify_tls is True  # the default
    (answer,) = banned(target(url, verify_tls=False)).lists
    assert len(answer.offenses) == 2


def test_check_warns_about_verify_tls_false(tmp_path: Path) -> None:
    body = (
        '[[fortigates]]\nname = "lab"\nurl = "https://203.0.113.10"\ntoken_env = "T"\n'
        "verify_tls = false\n\n"
        '[[fortigates]]\nname = "prod"\nurl = "https://203.0.113.11"\ntoken_env = "T"\n\n'
    )
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{tmp_path / 'b.db'}", body)
    warned = checks.warnings(config_mod.load(config))
    assert [w for w in warned if "verify_tls" in w] == [
        "fortigates[lab].verify_tls: false — its certificate is not checked, so anyone on the "
        "path can read its token; set ca_file to the device's CA instead"
    ]


# -- answers bounded in memory -------------------------------------------------------------------


def test_a_gzip_bomb_is_refused_as_it_inflates(fleet: simulator.SimFleet, run_sim: Any) -> None:
    device = fleet.add_device("fw", token=TOKEN, entries=2, fault="gzip-bomb")
    device.huge_bytes = 50_000_000
    url = run_sim()["fw"]
    with pytest.raises(errors.DeviceBadResponse, match="larger than max_response") as caught:
        banned(target(url, max_response=1_000_000))
    assert "(1,000,001 > 1,000,000 bytes)" in str(caught.value)  # inflated one byte past it


def test_a_gzip_answer_is_decompressed(fleet: simulator.SimFleet, run_sim: Any) -> None:
    # What a FortiGate that honours Accept-Encoding sends: the same list, compressed.
    device = fleet.add_device("fw", token=TOKEN, entries=3)
    device.huge_bytes = 1_000
    url = run_sim()["fw"]
    plain = banned(target(url))
    assert {str(o.ip) for o in plain.lists[0].offenses} == {e.ip for e in device.vdoms["root"]}
    device.fault = "gzip-bomb"  # 1,000 spaces, gzip-encoded: decompressed, then not JSON
    with pytest.raises(errors.DeviceBadResponse, match="not valid JSON"):
        banned(target(url))


def test_a_large_answer_is_never_held_as_a_tree_of_json_objects() -> None:
    """The parse of a realistic answer peaks at the offenses it yields plus one batch of
    entries, not at the whole document's JSON objects as well (bench/device_memory.py has the
    200 MB run)."""
    now = int(time.time())
    entries = [
        {"expires": now + 300, "created": now, "ip_address": f"8.{i // 65536}.{i // 256 % 256}"}
        | {"source": "IPS", "ipv6": 0}
        for i in range(30_000)
    ]
    for index, entry in enumerate(entries):
        entry["ip_address"] = f"{entry['ip_address']}.{index % 256}"
    text = json.dumps({"http_method": "GET", "results": entries, "vdom": "root"})
    del entries
    tracemalloc.start()
    try:
        (lst,), _keys = streamed_lists("fw", "root", text, now=now, known=None)
        streamed = tracemalloc.get_traced_memory()[1]
        kept = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        del lst
        document = json.loads(text)
        tree = tracemalloc.get_traced_memory()[1]
        del document
    finally:
        tracemalloc.stop()
    assert streamed - kept < 4_000_000  # beyond the offenses kept: one batch of 4,096 at most
    assert tree > 2.5 * len(text)  # what json.loads alone costs, before any offense


@pytest.mark.parametrize("entry", ["1", "{}"])
def test_an_answer_of_tiny_invalid_entries_is_refused_early(entry: str) -> None:
    """Short invalid entries would cost a rejection record each (150 bytes for 2): past
    MAX_REJECTED, once they outnumber the valid ones, the answer is refused."""
    now = int(time.time())
    text = '{"results":[' + ",".join([entry] * 50_000) + '],"vdom":"root"}'
    tracemalloc.start()
    try:
        with pytest.raises(errors.DeviceBadResponse, match="invalid entries") as caught:
            streamed_lists("fw", "root", text, now=now, known=None)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"more than {MAX_REJECTED:,} invalid entries" in str(caught.value)
    # Stopped after ~10,000 records of ~250 bytes: all 50,000 would be 12 MB.
    assert peak < 6_000_000


def test_many_invalid_entries_beside_more_valid_ones_are_rejected_alone() -> None:
    now = int(time.time())
    good = {"created": now, "expires": now + 300, "source": "IPS"}
    results = [good | {"ip_address": f"8.8.{i // 256}.{i % 256}"} for i in range(12_000)]
    results += [{"ip_address": "999.1.1.1"}] * (MAX_REJECTED + 500)
    text = json.dumps({"results": results})
    (lst,), _keys = streamed_lists("fw", "root", text, now=now, known=None)
    assert len(lst.offenses) == 12_000 and len(lst.rejected) == MAX_REJECTED + 500


# -- the streamed parse is the document parse ----------------------------------------------------

_NOW = 1_800_000_000
_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.sampled_from([_NOW, _NOW + 300, 1.5, "IPS", "", "8.8.8.8", "2001:4860::8888", "999.1.1.1"]),
)
_entries = st.one_of(
    st.fixed_dictionaries(
        {"ip_address": st.sampled_from(["8.8.8.8", "1.1.1.1", "2a00:1450::1", "x"])},
        optional={
            "created": st.sampled_from([_NOW, _NOW - 60, "1", None]),
            "expires": st.sampled_from([_NOW + 300, 1]),
            "source": st.sampled_from(["IPS", "DoS", "a" * 70]),
            "ipv6": st.sampled_from([0, 1, 2]),
        },
    ),
    _values,
    st.lists(_values, max_size=2),
)
_objects = st.fixed_dictionaries(
    {},
    optional={
        "results": st.one_of(st.lists(_entries, max_size=6), _values),
        "vdom": st.sampled_from(["root", "dmz", "", 5]),
        "status": st.sampled_from(["success", "error"]),
        "http_status": st.sampled_from([200, 403]),
    },
)
_documents = st.one_of(_objects, st.lists(st.one_of(_objects, _values), max_size=3), _values)


def _outcome(call: Any) -> Any:
    try:
        lists, keys = call()
    except errors.DeviceError as exc:
        return type(exc), exc.detail.split(" (")[0]
    return lists, sorted(keys.tolist())


@settings(max_examples=400, deadline=None)
@given(
    document=_documents,
    vdom=st.sampled_from(["root", "dmz", "*"]),
    spacing=st.sampled_from([None, 0, 2]),
    cut=st.one_of(st.none(), st.integers(0, 200)),
)
def test_the_streamed_parse_agrees_with_the_document_parse(
    document: Any, vdom: str, spacing: int | None, cut: int | None
) -> None:
    text = json.dumps(document, indent=spacing)
    if cut is not None:
        text = text[:cut]  # truncated answers too

    def whole() -> Any:
        try:
            loaded = json.loads(text)
        except ValueError as exc:
            raise errors.DeviceBadResponse("fw", f"answer is not valid JSON ({exc})") from None
        return diffed_lists("fw", vdom, loaded, now=_NOW, known=None)

    expected = _outcome(whole)
    got = _outcome(lambda: streamed_lists("fw", vdom, text, now=_NOW, known=None))
    if expected[0] is errors.DeviceBadResponse and "not valid JSON" in expected[1]:
        # Not JSON: refused too, maybe for a shape met before the bad byte (see stream).
        assert isinstance(got[0], type) and issubclass(got[0], errors.DeviceError)
    else:
        assert got == expected


def test_entries_are_parsed_as_the_vdom_the_answer_names_after_them() -> None:
    """FortiOS writes ``vdom`` after ``results``; a list longer than one batch, named another
    VDOM than the one asked for, is read again as that VDOM."""
    now = int(time.time())
    results = [
        {"ip_address": f"8.8.{i // 256}.{i % 256}", "created": now, "source": "IPS"}
        for i in range(BATCH + 10)
    ]
    text = json.dumps([{"results": results, "vdom": "dmz"}, {"results": [], "vdom": "root"}])
    lists, keys = streamed_lists("fw", "*", text, now=now, known=None)
    assert [lst.vdom for lst in lists] == ["dmz", "root"]
    assert {o.vdom for o in lists[0].offenses} == {"dmz"} and len(lists[0].offenses) == BATCH + 10
    again, _ = streamed_lists("fw", "*", text, now=now, known=keys)
    assert again[0].unchanged == BATCH + 10 and again[0].offenses == []


# -- end to end: every fault at once, beside healthy devices ------------------------------------

# (device, fault, the status kind banfeed stores for it)
SIM_FAULTS = [
    ("f-401", "401", "auth"),
    ("f-403", "403", "permission"),
    ("f-429", "429", "rate_limited"),
    ("f-500", "500", "server_error"),
    ("f-503", "503", "server_error"),
    ("f-html", "html", "bad_response"),
    ("f-truncated", "truncated", "bad_response"),
    ("f-shape", "shape", "bad_response"),
    ("f-nested", "nested", "bad_response"),
    ("f-huge", "huge", "bad_response"),
    ("f-gzip", "gzip-bomb", "bad_response"),
    ("f-timeout", "timeout", "timeout"),
    ("f-reset", "reset", "unreachable"),
    ("f-echo", "echo", "http"),
]


def _fortigate(name: str, url: str, **extra: str) -> str:
    lines = [
        "[[fortigates]]",
        f'name = "{name}"',
        f'url = "{url}"',
        'token_env = "DEVICE_TOKEN"',
        'timeout = "1s"',
        'max_response = "1MiB"',
    ]
    lines += [f"{key} = {value}" for key, value in extra.items()]
    return "\n".join(lines) + "\n\n"


def test_every_device_fault_in_one_cycle_fails_alone_and_loses_nothing(
    fleet: simulator.SimFleet,
    run_sim: Any,
    clock: Clock,
    tmp_path: Path,
    closed_port: int,
    full_backlog: int,
    silent_device: Any,
) -> None:
    clock.now = time.time()  # `collect` judges device times by the machine's clock
    healthy = [fleet.add_device(f"ok-{i}", token=TOKEN, entries=4) for i in (1, 2)]
    for name, fault, _kind in SIM_FAULTS:
        device = fleet.add_device(name, token=TOKEN, entries=3, fault=fault)
        device.huge_bytes, device.timeout_delay = 2_000_000, 5.0
    urls = run_sim()
    body = "".join(_fortigate(d.name, urls[d.name]) for d in healthy)
    body += "".join(_fortigate(name, urls[name]) for name, _fault, _kind in SIM_FAULTS)
    others = {
        "f-refused": (f"http://127.0.0.1:{closed_port}", "unreachable"),
        "f-no-name": ("https://fw.invalid", "unreachable"),
        "f-connect": (f"http://127.0.0.1:{full_backlog}", "timeout"),
        "f-silent": (f"http://127.0.0.1:{silent_device[0]}", "timeout"),
    }
    body += "".join(_fortigate(name, url) for name, (url, _kind) in others.items())
    db = tmp_path / "banfeed.db"
    config = write_config(tmp_path / "banfeed.toml", f"sqlite:///{db}", body)
    env = {"DEVICE_TOKEN": TOKEN, "BANFEED_CONFIG": str(config)}
    assert cli("db", "upgrade", env=env).exit_code == 0

    result = cli("collect", "--format", "json", env=env)
    assert result.exit_code == 1, result.output
    report = json.loads(result.output)
    kinds = {p["device"]: (p["error"] or {}).get("kind") for p in report["polls"]}
    expected = {name: kind for name, _fault, kind in SIM_FAULTS}
    expected |= {name: kind for name, (_url, kind) in others.items()}
    expected |= {d.name: None for d in healthy}
    assert kinds == expected
    assert report["summary"]["new_offenses"] == 8  # the healthy devices' entries, all of them
    assert TOKEN not in result.output
    echo = next(p for p in report["polls"] if p["device"] == "f-echo")["error"]["detail"]
    assert "authorization: Bearer ***" in echo

    listed = json.loads(cli("list", "--format", "json", env=env).output)
    assert {r["ip"] for r in listed} == {e.ip for d in healthy for e in d.vdoms["root"]}
    store = open_store(f"sqlite:///{db}")
    with store.read() as tx:
        statuses = {device: status for (device, _vdom), status in tx.device_statuses().items()}
    store.close()
    assert {name: s.error_kind for name, s in statuses.items()} == expected
    assert all(TOKEN not in (s.error_message or "") for s in statuses.values())

    # The next cycle: 401 and 429 are backed off (not asked again), the rest retried.
    asked = {name: fleet.devices[name].requests for name, _f, _k in SIM_FAULTS}
    again = json.loads(cli("collect", "--format", "json", env=env).output)
    kinds = {p["device"]: (p["error"] or {}).get("kind") for p in again["polls"]}
    assert kinds["f-401"] == kinds["f-429"] == "backoff"
    assert fleet.devices["f-401"].requests == asked["f-401"]
    assert fleet.devices["f-429"].requests == asked["f-429"]
    assert fleet.devices["f-500"].requests == asked["f-500"] + 1
    assert {kinds[d.name] for d in healthy} == {None}


def test_a_gzip_encoded_healthy_answer_is_stored(tmp_path: Path) -> None:
    """A device (or proxy) that compresses its answers: decompressed within max_response."""
    now = int(time.time())
    entry = {"expires": now + 300, "created": now, "ip_address": "8.8.4.4", "source": "IPS"}
    payload = gzip.compress(json.dumps({"results": [entry], "vdom": "root"}).encode())

    class Handler(threading.Thread):
        def __init__(self) -> None:
            super().__init__(daemon=True)
            self.listener = socket.create_server(("127.0.0.1", 0))

        def run(self) -> None:
            conn, _ = self.listener.accept()
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(4096)
                assert b"accept-encoding: gzip, deflate" in request.lower()
                head = (
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    f"Content-Encoding: gzip\r\nContent-Length: {len(payload)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                conn.sendall(head.encode() + payload)

    server = Handler()
    server.start()
    port = server.listener.getsockname()[1]
    (lst,) = banned(target(f"http://127.0.0.1:{port}"), now=now).lists
    server.join(timeout=5)
    server.listener.close()
    assert [str(o.ip) for o in lst.offenses] == ["8.8.4.4"]
