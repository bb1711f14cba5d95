"""net: parsing at the edge, canonical form, sort keys, longest-prefix match, never-block ranges."""

from __future__ import annotations

from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    collapse_addresses,
    ip_address,
    ip_network,
)

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from banfeed.errors import BanfeedError, InputError
from banfeed.net import (
    NEVER_BLOCK,
    NetworkSet,
    Special,
    address_from_sort_key,
    aggregate,
    canonical,
    family,
    never_block_reason,
    parse_address,
    parse_network,
    sort_key,
)

PROPERTY = settings(max_examples=200, deadline=None)

# --------------------------------------------------------------------------- strategies

ipv4_addresses = st.integers(0, 2**32 - 1).map(IPv4Address)
ipv6_addresses = st.integers(0, 2**128 - 1).map(IPv6Address)
any_addresses = st.one_of(ipv4_addresses, ipv6_addresses)


@st.composite
def networks(draw: st.DrawFn, version: int | None = None) -> IPv4Network | IPv6Network:
    if version is None:
        version = draw(st.sampled_from([4, 6]))
    bits = 32 if version == 4 else 128
    prefix = draw(st.integers(0, bits))
    value = draw(st.integers(0, 2**bits - 1))
    if version == 4:
        return IPv4Network((value, prefix), strict=False)
    return IPv6Network((value, prefix), strict=False)


# --------------------------------------------------------------------------- parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8.8.8.8", IPv4Address("8.8.8.8")),
        ("0.0.0.0", IPv4Address("0.0.0.0")),
        ("255.255.255.255", IPv4Address("255.255.255.255")),
        ("2a00:1450::1", IPv6Address("2a00:1450::1")),
        ("2A00:1450::1", IPv6Address("2a00:1450::1")),
        ("::", IPv6Address("::")),
        ("::1", IPv6Address("::1")),
        ("0000:0000:0000:0000:0000:0000:0000:0001", IPv6Address("::1")),
        ("2001:0db8:0000:0000:0000:0000:0000:0001", IPv6Address("2001:db8::1")),
        ("::ffff:8.8.8.8", IPv4Address("8.8.8.8")),
        ("::FFFF:8.8.8.8", IPv4Address("8.8.8.8")),
        ("::ffff:808:808", IPv4Address("8.8.8.8")),
        # The longest accepted text (45 characters): expanded mapped form with an IPv4 tail.
        ("0000:0000:0000:0000:0000:ffff:255.255.255.255", IPv4Address("255.255.255.255")),
    ],
)
def test_parse_address_valid(text: str, expected: IPv4Address | IPv6Address) -> None:
    parsed = parse_address(text)
    assert parsed == expected
    assert type(parsed) is type(expected)


def test_parse_address_canonical_text() -> None:
    assert str(parse_address("0000:0000:0000:0000:0000:0000:0000:0001")) == "::1"
    assert str(parse_address("2001:0DB8:0:0:0:0:0:1")) == "2001:db8::1"
    mapped = parse_address("::ffff:8.8.8.8")
    assert isinstance(mapped, IPv4Address)
    assert str(mapped) == "8.8.8.8"


@pytest.mark.parametrize(
    "text",
    [
        "999.1.1.1",
        "256.0.0.1",
        "01.02.03.04",
        "1.2.3.04",
        "1.2.3.4\n",
        "1.2.3.4\n5.6.7.8",
        "1.2.3.4\x00",
        "",
        " 1.2.3.4",
        "1.2.3.4 ",
        "\t1.2.3.4",
        "fe80::1%eth0",
        "fe80::1%1",
        "a" * 300,
        "1" * 46,
        "1.2.3",
        "1.2.3.4.5",
        "1.2.3.4.",
        "1.2.3.4/32",
        "2001:db8::/32",
        "::ffff:01.2.3.4",
        ":::",
        "1::2::3",
        "12345::1:2:3:4:5:6",
        "g::1",
        "example.com",
        "１.２.３.４",  # fullwidth digits
        "0x7f.0.0.1",
    ],
)
def test_parse_address_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_address(text)


@pytest.mark.parametrize(
    "value", [None, 12345, 3.5, b"1.2.3.4", IPv4Address("1.2.3.4"), ["1.2.3.4"]]
)
def test_parse_address_rejects_non_strings(value: object) -> None:
    with pytest.raises(InputError, match="not a string"):
        parse_address(value)


def test_input_error_is_a_banfeed_error() -> None:
    with pytest.raises(BanfeedError):
        parse_address("nope")


@PROPERTY
@given(any_addresses)
def test_parse_address_accepts_every_compressed_and_exploded_form(
    address: IPv4Address | IPv6Address,
) -> None:
    expected = canonical(address)
    assert parse_address(str(address)) == expected
    assert parse_address(address.exploded) == expected
    # The canonical form is a fixed point.
    assert parse_address(str(expected)) == expected
    assert str(parse_address(str(address))) == str(expected)


@PROPERTY
@given(ipv4_addresses)
def test_ipv4_mapped_is_the_ipv4_address(address: IPv4Address) -> None:
    mapped = IPv6Address(int(address) | (0xFFFF << 32))
    assert mapped.ipv4_mapped == address
    assert parse_address(str(mapped)) == address
    assert canonical(mapped) == address


def test_canonical_leaves_other_addresses_alone() -> None:
    for text in ("8.8.8.8", "2a00:1450::1", "::1", "64:ff9b::808:808"):
        assert canonical(ip_address(text)) == ip_address(text)


def test_family() -> None:
    assert family(IPv4Address("1.2.3.4")) == 4
    assert family(IPv6Address("::1")) == 6
    assert family(IPv4Network("10.0.0.0/8")) == 4
    assert family(IPv6Network("2001:db8::/32")) == 6


# --------------------------------------------------------------------------- parse_network


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.0/8", IPv4Network("10.0.0.0/8")),
        ("0.0.0.0/0", IPv4Network("0.0.0.0/0")),
        ("198.51.100.0/24", IPv4Network("198.51.100.0/24")),
        ("2001:db8:1::/48", IPv6Network("2001:db8:1::/48")),
        ("::/0", IPv6Network("::/0")),
        ("8.8.8.8", IPv4Network("8.8.8.8/32")),
        ("2a00:1450::1", IPv6Network("2a00:1450::1/128")),
        ("::ffff:10.0.0.0/120", IPv4Network("10.0.0.0/24")),
        ("::ffff:10.0.0.5/128", IPv4Network("10.0.0.5/32")),
        ("::ffff:10.0.0.5", IPv4Network("10.0.0.5/32")),
        ("::ffff:0.0.0.0/96", IPv4Network("0.0.0.0/0")),
    ],
)
def test_parse_network_valid(text: str, expected: IPv4Network | IPv6Network) -> None:
    parsed = parse_network(text)
    assert parsed == expected
    assert type(parsed) is type(expected)


def test_parse_network_bare_address_is_host_network() -> None:
    assert parse_network("192.0.2.7").prefixlen == 32
    assert parse_network("2001:db8::7").prefixlen == 128


@pytest.mark.parametrize(
    ("text", "suggestion"),
    [
        ("10.0.0.1/8", "10.0.0.0/8"),
        ("198.51.100.7/24", "198.51.100.0/24"),
        ("2001:db8:1::1/48", "2001:db8:1::/48"),
    ],
)
def test_parse_network_host_bits_suggests_the_network(text: str, suggestion: str) -> None:
    with pytest.raises(InputError, match="did you mean") as info:
        parse_network(text)
    assert f"did you mean {suggestion}?" in str(info.value)


@pytest.mark.parametrize(
    "text",
    [
        "",
        " 10.0.0.0/8",
        "10.0.0.0/8\n",
        "10.0.0.0/33",
        "2001:db8::/129",
        "10.0.0.0/",
        "/8",
        "10.0.0.0/8/8",
        "fe80::/10%eth0",
        "10.0.0.0/-1",
        "999.0.0.0/8",
        "a" * 300,
        "example.com/24",
    ],
)
def test_parse_network_rejects(text: str) -> None:
    with pytest.raises(InputError):
        parse_network(text)


@pytest.mark.parametrize("value", [None, 10, IPv4Network("10.0.0.0/8")])
def test_parse_network_rejects_non_strings(value: object) -> None:
    with pytest.raises(InputError, match="not a string"):
        parse_network(value)


@PROPERTY
@given(networks())
def test_parse_network_round_trips(network: IPv4Network | IPv6Network) -> None:
    assert parse_network(str(network)) == network
    assert parse_network(network.exploded) == network


@PROPERTY
@given(networks(version=4))
def test_parse_network_ipv4_mapped_is_the_ipv4_network(network: IPv4Network) -> None:
    mapped = IPv6Network(
        (int(network.network_address) | (0xFFFF << 32), network.prefixlen + 96), strict=True
    )
    assert parse_network(str(mapped)) == network


# --------------------------------------------------------------------------- sort keys


@PROPERTY
@given(st.lists(any_addresses, max_size=50))
def test_sort_key_orders_numerically_ipv4_first(addresses: list[IPv4Address | IPv6Address]) -> None:
    by_key = sorted(addresses, key=sort_key)
    by_value = sorted(addresses, key=lambda a: (a.version, int(a)))
    assert by_key == by_value


@PROPERTY
@given(any_addresses, any_addresses)
def test_sort_key_byte_order_is_address_order(
    a: IPv4Address | IPv6Address, b: IPv4Address | IPv6Address
) -> None:
    assert (sort_key(a) < sort_key(b)) == ((a.version, int(a)) < (b.version, int(b)))
    assert (sort_key(a) == sort_key(b)) == (a == b)


@PROPERTY
@given(any_addresses)
def test_address_from_sort_key_round_trips(address: IPv4Address | IPv6Address) -> None:
    key = sort_key(address)
    assert isinstance(key, bytes)
    assert len(key) == (5 if address.version == 4 else 17)
    back = address_from_sort_key(key)
    assert back == address
    assert type(back) is type(address)


def test_sort_key_examples() -> None:
    assert sort_key(IPv4Address("0.0.0.1")) == b"\x04\x00\x00\x00\x01"
    assert sort_key(IPv4Address("255.255.255.255")) < sort_key(IPv6Address("::"))
    assert sort_key(IPv4Address("9.0.0.0")) < sort_key(IPv4Address("10.0.0.0"))


# --------------------------------------------------------------------------- NetworkSet


def brute_force_match(
    members: list[tuple[IPv4Network | IPv6Network, int]], address: IPv4Address | IPv6Address
) -> tuple[IPv4Network | IPv6Network, int] | None:
    """Longest prefix wins; among equal networks the first added keeps its label."""
    best: tuple[IPv4Network | IPv6Network, int] | None = None
    for network, label in members:
        if network.version != address.version or address not in network:
            continue
        if best is None or network.prefixlen > best[0].prefixlen:
            best = (network, label)
    return best


@PROPERTY
@given(st.data())
def test_network_set_match_is_longest_prefix(data: st.DataObject) -> None:
    nets = data.draw(st.lists(networks(), max_size=30))
    members = [(network, index) for index, network in enumerate(nets)]
    nset: NetworkSet[int] = NetworkSet(members)
    assert len(nset) == len(set(nets))
    # Addresses inside member networks (so there are hits), plus arbitrary ones.
    probes = data.draw(st.lists(any_addresses, max_size=10))
    for network in nets:
        offset = data.draw(st.integers(0, network.num_addresses - 1))
        probes.append(network.network_address + offset)
        probes.append(network.network_address)
        probes.append(network.broadcast_address)
    for address in probes:
        assert nset.match(address) == brute_force_match(members, address)


@PROPERTY
@given(st.lists(networks(), max_size=30))
def test_network_set_iterates_its_members(nets: list[IPv4Network | IPv6Network]) -> None:
    nset: NetworkSet[str] = NetworkSet((n, str(n)) for n in nets)
    listed = list(nset)
    assert len(listed) == len(nset) == len(set(nets))
    assert {n for n, _ in listed} == set(nets)
    assert all(label == str(n) for n, label in listed)
    # IPv4 first, then by prefix length.
    keys = [(n.version, n.prefixlen) for n, _ in listed]
    assert keys == sorted(keys)


def test_network_set_labels_and_len() -> None:
    nset: NetworkSet[str] = NetworkSet(
        [
            (IPv4Network("10.0.0.0/8"), "wide"),
            (IPv4Network("10.1.0.0/16"), "narrow"),
            (IPv4Network("10.1.2.3/32"), "host"),
            (IPv6Network("2001:db8::/32"), "doc6"),
        ]
    )
    assert len(nset) == 4
    assert nset.match(IPv4Address("10.200.0.1")) == (IPv4Network("10.0.0.0/8"), "wide")
    assert nset.match(IPv4Address("10.1.9.9")) == (IPv4Network("10.1.0.0/16"), "narrow")
    assert nset.match(IPv4Address("10.1.2.3")) == (IPv4Network("10.1.2.3/32"), "host")
    assert nset.match(IPv4Address("11.0.0.0")) is None
    assert nset.match(IPv6Address("2001:db8:ffff::1")) == (IPv6Network("2001:db8::/32"), "doc6")
    assert nset.match(IPv6Address("2001:db9::1")) is None
    # An IPv4-mapped IPv6 address is not matched by IPv4 networks: callers canonicalise first.
    assert nset.match(IPv6Address("::ffff:10.0.0.1")) is None


def test_network_set_duplicate_keeps_first_label_and_count() -> None:
    nset: NetworkSet[str] = NetworkSet()
    assert len(nset) == 0
    assert nset.match(IPv4Address("1.2.3.4")) is None
    nset.add(IPv4Network("1.2.3.0/24"), "first")
    nset.add(IPv4Network("1.2.3.0/24"), "second")
    assert len(nset) == 1
    assert nset.match(IPv4Address("1.2.3.4")) == (IPv4Network("1.2.3.0/24"), "first")


def test_network_set_default_routes() -> None:
    nset: NetworkSet[str] = NetworkSet(
        [(IPv4Network("0.0.0.0/0"), "all4"), (IPv6Network("::/0"), "all6")]
    )
    assert nset.match(IPv4Address("0.0.0.0")) == (IPv4Network("0.0.0.0/0"), "all4")
    assert nset.match(IPv4Address("255.255.255.255")) == (IPv4Network("0.0.0.0/0"), "all4")
    assert nset.match(IPv6Address("ffff::1")) == (IPv6Network("::/0"), "all6")


def test_network_set_overlapping() -> None:
    nset: NetworkSet[str] = NetworkSet(
        [
            (IPv4Network("10.0.0.0/8"), "a"),
            (IPv4Network("10.1.0.0/16"), "b"),
            (IPv4Network("192.168.0.0/16"), "c"),
            (IPv6Network("::/0"), "d"),
        ]
    )
    assert sorted(lab for _, lab in nset.overlapping(IPv4Network("10.1.2.0/24"))) == ["a", "b"]
    assert sorted(lab for _, lab in nset.overlapping(IPv4Network("0.0.0.0/0"))) == ["a", "b", "c"]
    assert nset.overlapping(IPv4Network("11.0.0.0/8")) == []
    assert [lab for _, lab in nset.overlapping(IPv6Network("2001:db8::/32"))] == ["d"]


# --------------------------------------------------------------------------- never-block

NEVER_BLOCK_RANGES = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
    "2001:db8::/32",
    "3fff::/20",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:2::/48",
    "fec0::/10",
]


@pytest.mark.parametrize("text", NEVER_BLOCK_RANGES)
def test_never_block_covers_whole_range(text: str) -> None:
    network = ip_network(text)
    middle = network.network_address + network.num_addresses // 2
    for address in (network.network_address, middle, network.broadcast_address):
        reason = never_block_reason(address)
        assert reason is not None, address
        assert isinstance(reason, Special)
        assert reason.name and reason.rfc.startswith("RFC ")
        assert str(reason) == f"{reason.name} ({reason.rfc})"


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("10.1.2.3", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("100.100.100.100", "shared address space (CGNAT)"),
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "limited broadcast"),
        ("::", "unspecified"),
        ("fd12:3456::1", "unique local (ULA)"),
        ("2001:db8::1", "documentation"),
        ("3fff::1", "documentation"),
    ],
)
def test_never_block_reasons(text: str, name: str) -> None:
    reason = never_block_reason(parse_address(text))
    assert reason is not None
    assert reason.name == name


@pytest.mark.parametrize(
    "text",
    [
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:192.168.1.1",
        "::ffff:169.254.1.1",
        "::ffff:100.64.0.1",
        "::ffff:224.0.0.1",
        "0000:0000:0000:0000:0000:ffff:255.255.255.255",
    ],
)
def test_never_block_ipv4_mapped_after_parse(text: str) -> None:
    address = parse_address(text)
    assert isinstance(address, IPv4Address)
    assert never_block_reason(address) is not None


@pytest.mark.parametrize(
    "text",
    [
        "8.8.8.8",
        "1.1.1.1",
        "9.255.255.255",
        "11.0.0.0",
        "100.63.255.255",
        "100.128.0.0",
        "126.255.255.255",
        "128.0.0.0",
        "172.15.255.255",
        "172.32.0.0",
        "192.0.1.255",
        "192.0.3.0",
        "192.167.255.255",
        "192.169.0.0",
        "198.17.255.255",
        "198.20.0.0",
        "223.255.255.255",
        "2a00:1450::1",
        "2001:4860:4860::8888",
        "2606:4700:4700::1111",
        "2001:db9::1",
        "3fff:1000::1",
        "::ffff:8.8.8.8",
    ],
)
def test_never_block_leaves_public_addresses(text: str) -> None:
    assert never_block_reason(parse_address(text)) is None


def test_never_block_table_members_are_blocked() -> None:
    assert len(NEVER_BLOCK) >= len(NEVER_BLOCK_RANGES)
    for network, special in NEVER_BLOCK:
        assert isinstance(special, Special)
        for address in (network.network_address, network.broadcast_address):
            assert never_block_reason(address) is not None, address


# IANA special-purpose blocks (IPv4 and IPv6 registries): probes cluster at their edges.
_IANA_V4 = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.0.0/29",
    "192.0.0.8/32",
    "192.0.0.9/32",
    "192.0.0.10/32",
    "192.0.0.170/31",
    "192.0.2.0/24",
    "192.31.196.0/24",
    "192.52.193.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "192.175.48.0/24",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "255.255.255.255/32",
]
_IANA_V6 = [
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001::/32",
    "2001:1::1/128",
    "2001:1::2/128",
    "2001:2::/48",
    "2001:3::/32",
    "2001:4:112::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:30::/28",
    "2001:db8::/32",
    "2002::/16",
    "2620:4f:8000::/48",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


def _near_edges(blocks: list[str], bits: int) -> st.SearchStrategy[int]:
    edges: list[int] = []
    for text in blocks:
        network = ip_network(text)
        edges += [int(network.network_address), int(network.broadcast_address)]
    return st.builds(
        lambda edge, delta: min(max(edge + delta, 0), 2**bits - 1),
        st.sampled_from(edges),
        st.integers(-3, 3),
    )


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.integers(0, 2**32 - 1), _near_edges(_IANA_V4, 32)).map(IPv4Address))
def test_never_block_agrees_with_python_registry_ipv4(address: IPv4Address) -> None:
    """Nothing Python calls non-global slips through the never-block table."""
    if never_block_reason(address) is None:
        assert address.is_global, address


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.integers(0x2000 << 112, (0x4000 << 112) - 1),  # global unicast 2000::/3
        _near_edges(_IANA_V6, 128),
    ).map(IPv6Address)
)
def test_never_block_agrees_with_python_registry_ipv6(address: IPv6Address) -> None:
    judged = canonical(address)
    if never_block_reason(judged) is None:
        assert judged.is_global, address


# The non-global networks of current CPython's ipaddress (3.11.10+, 3.12.4+, 3.13; gh-113171),
# written out so the check does not depend on the interpreter's patch release. 3.11.7 (this
# venv) lacks 2002::/16, so the property tests above cannot see it on their own.
_CPYTHON_NON_GLOBAL = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.0.170/31",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::1/128",
    "::/128",
    # ::ffff:0:0/96 is left out on purpose: a mapped address is judged as the IPv4 it carries.
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",  # 6to4 (RFC 3056, deprecated by RFC 7526 like 192.88.99.0/24)
    "3fff::/20",
    "fc00::/7",
    "fe80::/10",
]


@pytest.mark.parametrize("text", _CPYTHON_NON_GLOBAL)
def test_never_block_covers_current_cpython_non_global(text: str) -> None:
    network = ip_network(text)
    middle = network.network_address + network.num_addresses // 2
    for address in (network.network_address, middle, network.broadcast_address):
        assert never_block_reason(canonical(address)) is not None, address


def test_never_block_outside_global_unicast_ipv6() -> None:
    # Everything outside 2000::/3 is reserved, except the ranges with their own reasons.
    for text in ("4000::1", "8000::1", "e000::1", "1::", "5f00::1"):
        assert never_block_reason(IPv6Address(text)) is not None, text


# --------------------------------------------------------------------------- aggregate


@PROPERTY
@given(st.lists(st.one_of(networks(), any_addresses), max_size=40))
def test_aggregate_equals_collapse_per_family(
    items: list[IPv4Network | IPv6Network | IPv4Address | IPv6Address],
) -> None:
    nets = [ip_network(i) for i in items]
    expected = [
        *collapse_addresses([n for n in nets if n.version == 4]),
        *collapse_addresses([n for n in nets if n.version == 6]),
    ]
    result = aggregate(items)
    assert result == expected
    versions = [n.version for n in result]
    assert versions == sorted(versions)
    # Lossless: every input is covered, and nothing overlaps.
    for n in nets:
        assert any(n.subnet_of(r) for r in result if r.version == n.version)
    for a, b in zip(result, result[1:], strict=False):
        assert a.version != b.version or not a.overlaps(b)


def test_aggregate_examples() -> None:
    assert aggregate([]) == []
    assert aggregate(
        [
            IPv6Address("2001:db8::1"),
            IPv4Address("10.0.0.1"),
            IPv4Address("10.0.0.0"),
            IPv4Network("10.0.0.2/31"),
            IPv6Address("2001:db8::"),
        ]
    ) == [IPv4Network("10.0.0.0/30"), IPv6Network("2001:db8::/127")]
