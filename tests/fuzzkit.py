"""Hostile FortiOS answers for fuzzing, and the reference every parse is judged against.

Shared by tests/test_fuzz_parser.py (a short run on every CI run) and bench/fuzz.py (the long
run: a million entries and more). The reference is written from the documented promises of
``banfeed.fortios.parse`` with Python's ``ipaddress`` as the judge of addresses; it imports
nothing from banfeed but the constants of the time window.
"""

from __future__ import annotations

import functools
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from banfeed.fortios.parse import EARLIEST, EXPIRES_AHEAD, FUTURE_SKEW, MAX_SOURCE_TEXT

NOW = 1_800_000_000  # banfeed's clock in the fuzzed parses (2027-01-15)
VDOM = "root"

# -- addresses: real ones, near misses, and text that only looks like one ----------------------

_real_v4 = st.builds(lambda n: str(ipaddress.IPv4Address(n)), st.integers(0, 2**32 - 1))
_real_v6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(0, 2**128 - 1))
_exploded_v6 = st.builds(lambda n: ipaddress.IPv6Address(n).exploded, st.integers(0, 2**128 - 1))
_mapped = st.builds(lambda n: f"::ffff:{ipaddress.IPv4Address(n)}", st.integers(0, 2**32 - 1))
SPECIAL = [
    "10.1.2.3", "127.0.0.1", "0.0.0.0", "255.255.255.255", "169.254.1.1", "100.64.0.1",
    "192.168.1.1", "172.16.5.4", "224.0.0.1", "240.0.0.1", "192.0.2.1", "198.51.100.7",
    "203.0.113.9", "::", "::1", "fe80::1", "fc00::1", "ff02::1", "2001:db8::1",
    "::ffff:10.0.0.1", "::ffff:127.0.0.1", "64:ff9b::a00:1", "2002:a00:1::", "8.8.8.8",
    "45.33.12.7", "2a00:1450:4001:81c::200e",
]  # fmt: skip
NEAR_MISS = [
    "999.1.1.1", "01.02.03.04", "1.2.3", "1.2.3.4.5", "1.2.3.4 ", " 1.2.3.4", "1.2.3.4\n",
    "1.2.3.4\n10.0.0.1", "1.2.3.4/32", "0x01.2.3.4", "1.2.3.04", "256.0.0.1", "-1.2.3.4",
    "fe80::1%eth0", "fe80::1%1", "::ffff:01.2.3.4", "1:2:3:4:5:6:7:8:9", "12345::1",
    ":::1", "1::2::3", "[::1]", "::g", "１.２.３.４", "1.2.3.4\x00", "1.2.3.4\u202e",
    "٣.٣.٣.٣", "0000:0000:0000:0000:0000:0000:255.255.255.255", "::255.255.255.256",
    "1.2.3.4" * 10, "", "localhost", "1e3.0.0.1", "+1.2.3.4", "1.2.3.4.",
]  # fmt: skip
PIECES = ["", "0", "00", ":", ".", " ", "%", "/", "f", "g", "\t", "::", "\u0660"]
ADDRESS_ALPHABET = "0123456789abcdef:.%/ "
SOURCES = ["IPS", "DoS", "Antivirus", "Application Control", "Administrative", "DLP"]
ODD_SOURCES = ["", "   ", " IPS ", "A" * MAX_SOURCE_TEXT, "A" * (MAX_SOURCE_TEXT + 1)]
HOSTILE_SOURCES = ["IPS\n10.0.0.1", "IPS\r\n", "\x1b[31mred", "IPS\u202e", "\x00", "é"]
FLAGS = [0, 1, True, False, 2, -1, 0.0, 1.0, "1", "0"]

_special = st.sampled_from(SPECIAL)
_near_miss = st.sampled_from(NEAR_MISS)
_mutated = st.builds(
    lambda text, at, piece: text[:at] + piece + text[at + 1 :],
    st.one_of(_real_v4, _real_v6, _mapped),
    st.integers(0, 40),
    st.sampled_from(PIECES),
)
_address_text = st.one_of(
    _real_v4, _real_v4, _real_v6, _exploded_v6, _mapped, _special, _near_miss, _mutated,
    st.text(alphabet=ADDRESS_ALPHABET, max_size=50),
    st.text(max_size=60),
)  # fmt: skip
_json_scalar = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=20)
)
# Anything JSON can hold, for fields that should not hold it: lists, objects, a few levels deep.
_json_any = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)

# -- times: inside the window, at its edges, outside it, and of the wrong type -----------------


def _times(now: int, ahead: int) -> st.SearchStrategy[Any]:
    edges = [EARLIEST - 1, EARLIEST, now, now + ahead, now + ahead + 1, 0, -1, 2**63, 2**64]
    return st.one_of(
        st.integers(EARLIEST, now + ahead),
        st.integers(now - 86_400 * 30, now + 86_400),
        st.sampled_from(edges),
        st.integers(-(2**80), 2**80),
        st.builds(float, st.integers(EARLIEST, now)),  # 1.8e9 written as a float
        st.floats(allow_nan=True, allow_infinity=True),
        st.booleans(),
        st.builds(str, st.integers(EARLIEST, now)),
        _json_any,
    )


_source = st.one_of(
    st.sampled_from(SOURCES),
    st.sampled_from(ODD_SOURCES),
    st.sampled_from(HOSTILE_SOURCES),
    st.text(max_size=70),
    _json_any,
)
_flag = st.one_of(st.sampled_from(FLAGS), _json_any)


@functools.cache
def _fields(now: int) -> dict[str, tuple[st.SearchStrategy[Any], st.SearchStrategy[Any]]]:
    """Per field: any value it may hold, and a plausible one."""
    return {
        "ip_address": (_address_text, st.one_of(_real_v4, _real_v6, _mapped, _special)),
        "created": (_times(now, FUTURE_SKEW), st.integers(now - 86_400 * 30, now + 3_600)),
        "expires": (_times(now, EXPIRES_AHEAD), st.integers(now - 3_600, now + 86_400 * 400)),
        "source": (_source, st.sampled_from(["IPS", "DoS", "Antivirus", "Administrative"])),
        "ipv6": (_flag, st.just(None)),
    }


@st.composite
def entry(draw: st.DrawFn, now: int = NOW) -> Any:
    """One entry as a device (or a broken one, or a hostile proxy) may list it."""
    if draw(st.integers(0, 40)) == 0:
        return draw(_json_any)  # not an object at all
    out: dict[str, Any] = {}
    for key, (values, plausible) in _fields(now).items():
        # Mostly well-formed, so the rules past the first are reached as often as the first.
        roll = draw(st.integers(0, 9))
        if roll == 0:
            continue  # absent
        if roll == 1:
            out[key] = draw(_json_any)
        elif roll <= 3:
            out[key] = draw(values)
        else:
            out[key] = draw(plausible)
    if draw(st.integers(0, 5)) == 0:
        out.update(draw(st.dictionaries(st.text(max_size=12), _json_scalar, max_size=3)))
    if "ipv6" in out and out["ipv6"] in (0, 1) and isinstance(out.get("ip_address"), str):
        if draw(st.booleans()):  # usually consistent, so that the address decides
            out["ipv6"] = int(":" in out["ip_address"])
    return out


_global_v6 = st.builds(lambda n: str(ipaddress.IPv6Address(n)), st.integers(2**125, 2**126 - 1))


@st.composite
def good_entry(draw: st.DrawFn, now: int = NOW) -> dict[str, Any]:
    """An entry a healthy FortiGate lists: mostly public addresses, some special or mapped."""
    out: dict[str, Any] = {
        "ip_address": draw(st.one_of(_real_v4, _real_v4, _global_v6, _mapped, _special)),
        "created": draw(st.integers(now - 86_400 * 30, now)),
        "source": draw(st.sampled_from(["IPS", "DoS", "Antivirus", "Administrative"])),
    }
    if draw(st.booleans()):
        out["expires"] = draw(st.integers(now + 60, now + 86_400 * 400))
    if draw(st.booleans()):
        out["ipv6"] = int(":" in out["ip_address"])
    return out


def entries(max_size: int = 40, now: int = NOW) -> st.SearchStrategy[list[Any]]:
    return st.lists(entry(now), max_size=max_size)


@st.composite
def document(draw: st.DrawFn, max_entries: int = 40, now: int = NOW) -> Any:
    """A whole ``user/banned`` answer: one object, an array of them (``vdom=*``), or a wrong
    shape; its objects with good or odd ``vdom`` and ``status``."""

    def obj() -> Any:
        out: dict[str, Any] = {"results": draw(entries(max_entries, now))}
        roll = draw(st.integers(0, 12))
        if roll == 0:
            out["results"] = draw(_json_any)
        elif roll == 1:
            out["vdom"] = draw(st.one_of(st.text(max_size=70), _json_any))
        elif roll <= 3:
            out["status"] = "error"
            detail = st.one_of(_source, _json_any)  # text a device or a proxy echoes
            optional = {"http_status": _json_any, "error": detail, "cli_error": detail}
            out |= draw(st.fixed_dictionaries({}, optional=optional))
        elif roll <= 6:
            out["vdom"] = draw(st.sampled_from(["root", "dmz", "VD-1"]))
        return out

    shape = draw(st.integers(0, 9))
    if shape == 0:
        return draw(_json_any)
    if shape <= 2:
        return [obj() for _ in range(draw(st.integers(0, 3)))]
    return obj()


@st.composite
def body(draw: st.DrawFn, max_entries: int = 40, now: int = NOW) -> bytes:
    """The bytes of an answer: the JSON of a :func:`document`, sometimes damaged in transit
    (cut, flipped, re-encoded, wrapped in HTML)."""
    raw = json.dumps(draw(document(max_entries, now)), allow_nan=True).encode()
    damage = draw(st.integers(0, 15))
    if damage == 0 and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if damage == 1 and raw:
        at = draw(st.integers(0, len(raw) - 1))
        return raw[:at] + bytes([draw(st.integers(0, 255))]) + raw[at + 1 :]
    if damage == 2:
        return raw.decode().encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig"])))
    if damage == 3:
        return b"<html>" + raw
    if damage == 4:
        return draw(st.binary(max_size=200))
    return raw


# -- the reference -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Expected:
    """What the parser must make of one entry: an offense's values, or a rejection."""

    ip: ipaddress.IPv4Address | ipaddress.IPv6Address | None  # None: rejected
    created: int = 0
    expires: int | None = None
    source: str = ""


REJECT = Expected(None)


def _epoch(value: Any, latest: int) -> int | None:
    if type(value) is not int or not EARLIEST <= value <= latest:
        return None
    return value


def expected(item: Any, now: int = NOW) -> Expected:
    """The documented rules, with ``ipaddress`` deciding what an address is."""
    if not isinstance(item, dict):
        return REJECT
    text = item.get("ip_address")
    if not isinstance(text, str) or not text.isascii() or text != text.strip():
        return REJECT
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return REJECT
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:  # fe80::1%eth0: a zone is no address to publish
            return REJECT
        ip = ip.ipv4_mapped or ip
    flag = item.get("ipv6")
    if flag is not None and (type(flag) not in (int, bool) or flag not in (0, 1)):
        return REJECT
    if flag is not None and bool(flag) != (":" in text):
        return REJECT
    created = _epoch(item.get("created"), now + FUTURE_SKEW)
    if created is None:
        return REJECT
    expires = None
    if item.get("expires") is not None:
        expires = _epoch(item.get("expires"), now + EXPIRES_AHEAD)
        if expires is None:
            return REJECT
    source = item.get("source", "unknown")
    if not isinstance(source, str) or not source.isprintable() or len(source) > MAX_SOURCE_TEXT:
        return REJECT
    return Expected(ip, created, expires, source.strip() or "unknown")


def valid_vdom(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 64 and value.isprintable()


def values(item: Any) -> tuple[Any, ...] | None:
    """What an entry is compared by when a later answer lists it again (None: not an object)."""
    if not isinstance(item, dict):
        return None
    keys = ("ip_address", "ipv6", "created", "expires", "source")
    return tuple(item.get(k) for k in keys)


def safe_text(text: str, limit: int) -> bool:
    """A message banfeed shows, logs and stores: bounded and one printable line."""
    return len(text) <= limit and text.isprintable()


def document_refused(document: Any) -> bool:
    """Whether a loaded answer as a whole is no ``user/banned`` list (the device then fails)."""
    objects = document if isinstance(document, list) else [document]
    for obj in objects:
        if not isinstance(obj, dict) or obj.get("status") == "error":
            return True
        if not isinstance(obj.get("results"), list) or not valid_vdom(obj.get("vdom", VDOM)):
            return True
    return False


def loaded(raw: bytes) -> tuple[bool, Any]:
    """``json.loads`` as the reference for bytes: (whether it loads, the document)."""
    if raw.lstrip()[:1] == b"<":
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, RecursionError):
        return False, None


# -- the properties, for the tests and the long run --------------------------------------------


def check_plain(raw: bytes, now: int = NOW) -> int:
    """Parse ``raw`` as one device's answer and hold it to the reference; the entries judged."""
    from banfeed.errors import DeviceError
    from banfeed.fortios.parse import parse_banned

    ok, document = loaded(raw)
    try:
        lists = parse_banned("fw", VDOM, raw, now=now)
    except DeviceError as exc:  # the one kind of failure allowed out: this device fails alone
        assert not ok or document_refused(document), f"refused a good answer: {exc}"
        assert safe_text(str(exc), 600), f"unsafe message {str(exc)[:500]!r}"
        return 0
    assert ok and not document_refused(document), "accepted an answer that is no banned list"
    objects = document if isinstance(document, list) else [document]
    assert len(lists) == len(objects)
    judged = 0
    for obj, vdom_list in zip(objects, lists, strict=True):
        assert vdom_list.vdom == obj.get("vdom", VDOM) and vdom_list.unchanged == 0
        judge(vdom_list, obj["results"], range(len(obj["results"])), now)
        judged += len(obj["results"])
    return judged


def judge(vdom_list: Any, items: list[Any], todo: Any, now: int) -> None:
    """Every entry of ``todo`` is either an offense equal to the reference's, or rejected with
    a short printable reason, in order; nothing else is accepted or lost."""
    want = [(index, expected(items[index], now)) for index in todo]
    offenses = [(e.ip, e.created, e.expires, e.source) for _, e in want if e.ip is not None]
    got = [(o.ip, o.created, o.expires, o.source) for o in vdom_list.offenses]
    assert got == offenses, f"offenses differ from the reference: {got} != {offenses}"
    for offense in vdom_list.offenses:
        assert (offense.device, offense.vdom) == ("fw", vdom_list.vdom)
        assert type(offense.created) is int and type(offense.ip) in (
            ipaddress.IPv4Address,
            ipaddress.IPv6Address,
        )
        if isinstance(offense.ip, ipaddress.IPv6Address):
            assert offense.ip.ipv4_mapped is None and offense.ip.scope_id is None
    rejected = [index for index, e in want if e.ip is None]
    assert [r.index for r in vdom_list.rejected] == rejected
    for reason in vdom_list.rejected:
        assert safe_text(reason.reason, 600), f"unsafe reason {reason.reason[:400]!r}"


def check_diffed(before: list[Any], after: list[Any], now: int = NOW) -> int:
    """Parse ``after`` against the keys of ``before``: the entries equal to one accepted
    before are counted unchanged, every other one is judged as in a full parse."""
    from banfeed.fortios.parse import diffed_lists

    def parse(items: list[Any], known: Any) -> tuple[Any, Any]:
        document = {"vdom": VDOM, "results": json.loads(json.dumps(items, allow_nan=True))}
        [vdom_list], keys = diffed_lists("fw", VDOM, document, now=now, known=known)
        return vdom_list, keys

    first, known = parse(before, None)
    judge(first, before, range(len(before)), now)
    seen = {values(item) for item in before if expected(item, now).ip is not None}
    again = json.loads(json.dumps(after, allow_nan=True))  # what the parser is given
    unchanged = [i for i, item in enumerate(again) if _hashable(values(item)) in seen]
    second, _ = parse(after, known)
    assert second.unchanged == len(unchanged)
    judge(second, again, [i for i in range(len(again)) if i not in unchanged], now)
    return len(before) + len(after)


def _hashable(value: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
    try:
        hash(value)
    except TypeError:
        return None  # an entry holding a list or an object is never counted unchanged
    return value


@st.composite
def answer_pair(draw: st.DrawFn, max_entries: int = 40, now: int = NOW) -> Any:
    """Two successive answers of one VDOM: the second re-lists some entries of the first, as
    given or with values equal to Python (``1.8e9`` for ``1800000000``, ``True`` for ``1``)."""
    before = draw(entries(max_entries, now))
    after = draw(entries(max_entries // 2, now))
    for item in draw(st.lists(st.sampled_from(before), max_size=max_entries)) if before else []:
        if isinstance(item, dict) and draw(st.booleans()):
            item = dict(item)
            key = draw(st.sampled_from(["created", "expires", "ipv6"]))
            if type(item.get(key)) is int:
                item[key] = draw(st.sampled_from([float(item[key]), bool(item[key] % 2)]))
        after.insert(draw(st.integers(0, len(after))), item)
    return before, after
