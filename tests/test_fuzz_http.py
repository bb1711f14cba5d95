"""Fuzzing every request the server accepts: the feed routes' paths, query strings and headers,
and every operation of ``/api/v1/openapi.json`` (query parameters, path parameters, JSON
bodies) and the dashboard's forms, signed in as an admin. Never a 500, never a traceback or a
file path in a body, errors as documented, and nothing malformed written to the store.

The whole app runs in process (httpx over ASGI, tests/webkit.py) on a real SQLite store."""

from __future__ import annotations

import ipaddress
import json
import string
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from webkit import ADMIN, ORIGIN, App, Client, open_app, seed, sign_in, write_site

from banfeed.store.schema import allow_entries, bans
from conftest import T0, Clock

FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def site() -> Iterator[tuple[App, Client, str]]:
    folder = Path(tempfile.mkdtemp(prefix="banfeed-fuzz-http-"))
    app = open_app(write_site(folder), Clock(T0))
    seed(app, ("45.1.2.3", "IPS", 3, 60), ("2a00:1450::7", "DoS", 1, 600))
    client = app.client()
    csrf = sign_in(client, *ADMIN)
    yield app, client, csrf
    client.close()
    app.daemon.store.close()


def sound(answer: Any, app: App) -> None:
    """No 500, no traceback, no path of this machine in what a client is shown."""
    assert answer.status_code < 500 or answer.status_code == 503, (answer.status_code, answer.text)
    text = answer.text
    assert "Traceback" not in text and str(app.path.parent) not in text, text[:500]


def documented_error(answer: Any) -> None:
    """A JSON API refusal: ``{"error": "..."}``, short."""
    if answer.status_code >= 400:
        body = answer.json()
        assert set(body) == {"error"} and isinstance(body["error"], str), body
        assert len(body["error"]) < 1000, body["error"][:300]


_junk = st.text(st.characters(exclude_categories=["Cs"]), max_size=40)
_url_text = st.text(string.printable.strip() + "é\u202e%", max_size=40)
_header_value = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=80)
HEADERS = [
    "If-None-Match", "If-Modified-Since", "Accept-Encoding", "Authorization", "Range", "Host",
    "X-Forwarded-For", "Forwarded", "Accept", "Cookie", "Origin", "X-CSRF-Token", "Content-Type",
]  # fmt: skip


@FUZZ
@given(
    name=st.one_of(st.sampled_from(["all", "dos", "nope"]), _url_text),
    fmt=st.one_of(st.sampled_from(["txt", "csv", "json", "gz", ""]), _url_text),
    query=st.lists(st.tuples(_url_text, _url_text), max_size=4),
    headers=st.dictionaries(st.sampled_from(HEADERS), _header_value, max_size=5),
    method=st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"]),
)
def test_feed_routes_answer_any_request_soundly(
    site: Any, name: str, fmt: str, query: list[Any], headers: dict[str, str], method: str
) -> None:
    app, _, _ = site
    fresh = app.client()  # not signed in: a FortiGate, a scanner
    try:
        for path in (f"/feeds/{name}.{fmt}", "/healthz", "/readyz", "/metrics", "/"):
            answer = fresh.request(method, path, params=query, headers=headers)
            sound(answer, app)
            if answer.status_code == 200 and method == "GET" and path.startswith("/feeds/"):
                for line in answer.text.splitlines() if fmt == "txt" else []:
                    ipaddress.ip_network(line, strict=True)  # a feed line, nothing else
    finally:
        fresh.close()


def operations(app: App, client: Client) -> list[tuple[str, str, dict[str, Any]]]:
    document = client.get("/api/v1/openapi.json").json()
    return [
        (method.upper(), path, spec)
        for path, item in document["paths"].items()
        for method, spec in item.items()
    ]


def test_every_documented_operation_is_fuzzed(site: Any) -> None:
    app, client, _ = site
    found = {(m, p) for m, p, _ in operations(app, client)}
    assert found == set(FUZZED), "fuzz the operations added to /api/v1/openapi.json"
    for method, path in FUZZED:  # those without parameters: any query string is ignored
        takes = {p for p, _ in READS} | {"/api/v1/overview/series"}
        if (
            method == "GET"
            and "{" not in path
            and not path.endswith("offenders")
            and path not in takes
        ):
            answer = client.get(path, params={"\x00": "\x1b", "limit": "-1"})
            sound(answer, app)
            assert answer.status_code == 200 and isinstance(answer.json(), dict | list)


# The later operations, each fuzzed from its documented parameters (the document names them;
# the values are drawn below) and, for writes, any body: (path, query parameters).
READS = [
    ("/api/v1/feeds/{name}", ()),
    ("/api/v1/feeds/{name}/versions", ("limit",)),
    ("/api/v1/feeds/{name}/diff", ("old", "new")),
    ("/api/v1/allowlist", ("q",)),
    ("/api/v1/bans", ("origin", "state", "network", "limit", "offset")),
    ("/api/v1/events", ("actor", "kind", "address", "since", "until", "limit", "cursor")),
    ("/api/v1/offenders.csv", ("q", "cause", "state", "sort", "limit", "cursor")),
]
WRITES = [
    "/api/v1/unban-everywhere",
    "/api/v1/feeds/{name}/approve",
    "/api/v1/feeds/{name}/rollback",
    "/api/v1/feeds/{name}/release",
    "/api/v1/allowlist/remove",
]

FUZZED = [
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/me"),
    ("GET", "/api/v1/overview"),
    ("GET", "/api/v1/alerts"),
    ("GET", "/api/v1/offenders"),
    ("GET", "/api/v1/offenders/{ip}"),
    ("GET", "/api/v1/feeds"),
    ("GET", "/api/v1/devices"),
    ("GET", "/api/v1/sources"),
    ("POST", "/api/v1/unban"),
    ("POST", "/api/v1/ban"),
    ("POST", "/api/v1/allow"),
    *(("GET", path) for path in ("/api/v1/overview/series", *(p for p, _ in READS))),
    *(("POST", path) for path in WRITES),
]
_SEARCH_KEYS = ["q", "cause", "device", "vdom", "state", "min_offenses", "sort", "limit"]
_search_value = st.one_of(
    _url_text,
    st.sampled_from(["45.0.0.0/8", "2a00::/16", "-last", "ip", "any", "0", "-1", "1e9", "50"]),
    st.integers(-(2**70), 2**70).map(str),
)


@FUZZ
@given(
    params=st.lists(
        st.tuples(
            st.one_of(st.sampled_from(_SEARCH_KEYS + ["offset", "cursor"]), _junk), _search_value
        ),
        max_size=6,
    ),
    ip=st.one_of(
        _url_text.filter(lambda t: t and "/" not in unquote(t)),
        st.sampled_from(["45.1.2.3", "::ffff:45.1.2.3", "1.2.3.4%2F8"]),
    ),
)
def test_api_reads_answer_any_parameters_as_documented(
    site: Any, params: list[Any], ip: str
) -> None:
    app, client, _ = site
    for path in ("/api/v1/offenders", "/api/v1/offenders/{ip}"):  # the others take nothing
        url = path.replace("{ip}", quote(ip, safe=""))
        answer = client.get(url, params=params if path.endswith("offenders") else None)
        sound(answer, app)
        assert answer.status_code in (200, 400, 404), (url, answer.status_code, answer.text)
        json.loads(answer.text)
        if path != "/api/v1/offenders/{ip}" or answer.status_code != 404:
            documented_error(answer)


_field = st.sampled_from(["target", "note", "ttl", "expires", "force", "csrf", "other"])
_target = st.one_of(
    st.sampled_from(["45.9.9.9", "2a00:1450::/64", "0.0.0.0/0", "10.0.0.0/8", "::/0"]),
    st.sampled_from(["198.51.100.7/24", "999.1.1.1", "45.9.9.9 ", "1.2.3.4\n5.6.7.8", ""]),
    _junk,
)
_body_value = st.one_of(_target, _junk, st.booleans(), st.none(), st.integers(), st.floats())
_optional = {
    "note": st.one_of(_junk, st.text(max_size=600)),
    "ttl": st.one_of(st.sampled_from(["7d", "1h", "0s", "-1d", "99999999999d", "1y"]), _junk),
    "expires": st.one_of(st.sampled_from(["30d", "1s", "10000d"]), _junk),
    "force": st.one_of(st.booleans(), _body_value),
}
_action_body = st.fixed_dictionaries({"target": _target}, optional=_optional)
_json_body = st.one_of(
    _action_body,
    _action_body,
    st.dictionaries(_field, _body_value, max_size=5),
    st.recursive(
        st.one_of(st.none(), st.booleans(), st.integers(), _junk),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_junk, inner)),
        max_leaves=5,
    ),
)


@FUZZ
@given(
    action=st.sampled_from(["unban", "ban", "allow"]),
    body=st.one_of(
        _json_body.map(lambda b: json.dumps(b).encode()),
        st.binary(max_size=100),
        st.just(b"[" * 100_000),
        st.just(b'{"target": "' + b"1" * 20_000 + b'"}'),
    ),
)
def test_api_writes_answer_any_body_as_documented(site: Any, action: str, body: bytes) -> None:
    app, client, csrf = site
    answer = client.post(
        f"/api/v1/{action}",
        content=body,
        headers={"Origin": ORIGIN, "X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    sound(answer, app)
    assert answer.status_code in (200, 400, 413), (answer.status_code, answer.text)
    documented_error(answer)
    stored_soundly(app)


@FUZZ
@given(
    action=st.sampled_from(["unban", "ban", "allow"]),
    form=st.one_of(
        _action_body.map(lambda b: {k: str(v) for k, v in b.items()}),
        st.dictionaries(_field, st.one_of(_target, _junk), max_size=5),
    ),
    forged=st.integers(0, 9),
)
def test_dashboard_forms_answer_any_fields_soundly(
    site: Any, action: str, form: dict[str, str], forged: int
) -> None:
    app, client, csrf = site
    if forged < 9:  # mostly the session's own token, so the fields are what is judged
        form = form | {"csrf": csrf}
    answer = client.post(f"/dashboard/actions/{action}", data=form, headers={"Origin": ORIGIN})
    sound(answer, app)
    assert answer.status_code in (303, 400, 403), (answer.status_code, answer.text[:300])
    stored_soundly(app)


@FUZZ
@given(form=st.dictionaries(st.sampled_from(["csrf", "username", "password", "next"]), _junk))
def test_the_login_form_answers_any_fields_soundly(site: Any, form: dict[str, str]) -> None:
    app, _, _ = site
    fresh = app.client()
    try:
        answer = fresh.post("/dashboard/login", data=form, headers={"Origin": ORIGIN})
        sound(answer, app)
        assert answer.status_code in (400, 401, 403, 429), (answer.status_code, answer.text[:300])
    finally:
        fresh.close()


def stored_soundly(app: App) -> None:
    """Every ban and allow entry in the store is a network in its canonical form."""
    with app.daemon.store.read() as tx:
        for table in (bans, allow_entries):
            for row in tx.conn.execute(sa.select(table)):
                text = row.network
                assert str(ipaddress.ip_network(text, strict=True)) == text, text


# A path segment of a name: "." and ".." are dot segments, which the client removes before
# sending (RFC 3986 §5.2.4), so they would name another route, not a feed.
_name = st.one_of(
    st.sampled_from(["all", "dos", "nope", "all-1", "ALL"]),
    _url_text.filter(lambda text: text not in ("", ".", "..")),
)
_value = st.one_of(
    _search_value,
    st.sampled_from(["manual", "imported", "active", "expired", "7d", "2026-12-01", "banned"]),
    st.sampled_from(["alice", "45.1.2.3", "45.0.0.0/8", "1", "2", "99", "24h", "30d", "x"]),
)


@FUZZ
@given(
    which=st.sampled_from([*READS, ("/api/v1/overview/series", ("range",))]),
    name=_name,
    picks=st.lists(st.tuples(st.integers(0, 9), _value), max_size=5),
    junk=st.lists(st.tuples(_junk, _junk), max_size=2),
)
def test_later_api_reads_answer_any_parameters_as_documented(
    site: Any, which: tuple[str, tuple[str, ...]], name: str, picks: list[Any], junk: list[Any]
) -> None:
    app, client, _ = site
    path, keys = which
    params = [(keys[i % len(keys)], v) for i, v in picks if keys] + junk
    answer = client.get(path.replace("{name}", quote(name, safe="")), params=params)
    sound(answer, app)
    assert answer.status_code in (200, 400, 404), (path, answer.status_code, answer.text[:300])
    if answer.status_code == 200 and path.endswith(".csv"):
        assert answer.headers["content-type"].startswith("text/csv")
        assert answer.text.startswith("ip,"), answer.text[:100]
    else:
        json.loads(answer.text)
        documented_error(answer)


_write_body = st.one_of(
    _json_body,
    st.fixed_dictionaries(
        {}, optional={"version": st.one_of(st.integers(-5, 2**70), _body_value), "note": _junk}
    ),
)


@FUZZ
@given(
    path=st.sampled_from(WRITES),
    name=_name,
    body=st.one_of(_write_body.map(lambda b: json.dumps(b).encode()), st.binary(max_size=60)),
)
def test_later_api_writes_answer_any_body_as_documented(
    site: Any, path: str, name: str, body: bytes
) -> None:
    app, client, csrf = site
    answer = client.post(
        path.replace("{name}", quote(name, safe="")),
        content=body,
        headers={"Origin": ORIGIN, "X-CSRF-Token": csrf, "Content-Type": "application/json"},
    )
    sound(answer, app)
    assert answer.status_code in (200, 400, 404, 413), (path, answer.status_code, answer.text)
    documented_error(answer)
    stored_soundly(app)
