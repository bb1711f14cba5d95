"""Addresses and networks, with Python's ``ipaddress`` only (pure).

Everything that comes from a device or a user passes :func:`parse_address` or
:func:`parse_network` once, at the edge; inner code handles typed values. No regexes.

- canonical text: ``ipaddress``'s compressed form; IPv4-mapped IPv6 (``::ffff:a.b.c.d``) is the
  IPv4 address it carries, so it is judged, stored and published as that address.
- sort key: one family byte (4 or 6) then the packed address, so byte order is numeric order with
  IPv4 before IPv6, in SQLite and PostgreSQL alike.
- never-block: the special-purpose ranges that must never reach a blocklist, each with a reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Generic, TypeVar

from .errors import InputError

IPAddress = IPv4Address | IPv6Address
IPNetwork = IPv4Network | IPv6Network

MAX_ADDRESS_TEXT = 45  # the longest IPv6 text form, with an embedded IPv4 tail
_ADDRESS_CHARS = frozenset("0123456789abcdefABCDEF:.")
_NETWORK_CHARS = _ADDRESS_CHARS | {"/"}


def parse_address(text: object) -> IPAddress:
    """Parse one address exactly as given: no whitespace, zone index, leading zeros or padding.

    Raises :class:`InputError` with the reason; the caller adds where the text came from.
    """
    if not isinstance(text, str):
        raise InputError(f"not a string: {type(text).__name__}")
    if not text:
        raise InputError("empty address")
    if len(text) > MAX_ADDRESS_TEXT:
        raise InputError(f"address text too long ({len(text)} characters)")
    if not _ADDRESS_CHARS.issuperset(text):
        raise InputError(f"{text!r} has characters no address has")
    try:
        address = ip_address(text)
    except ValueError as exc:
        raise InputError(f"{text!r} is not an IP address ({exc})") from None
    return canonical(address)


def canonical(address: IPAddress) -> IPAddress:
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: object) -> IPNetwork:
    """Parse ``a.b.c.d/len`` or a bare address (a host network). Host bits must be zero."""
    if not isinstance(text, str):
        raise InputError(f"not a string: {type(text).__name__}")
    if not text or len(text) > MAX_ADDRESS_TEXT + 4 or not _NETWORK_CHARS.issuperset(text):
        raise InputError(f"{text!r} is not an IP network")
    try:
        network = ip_network(text, strict=True)
    except ValueError as exc:
        hint = ""
        if "has host bits set" in str(exc):
            hint = f"; did you mean {ip_network(text, strict=False)}?"
        raise InputError(f"{text!r} is not an IP network ({exc}){hint}") from None
    if isinstance(network, IPv6Network) and network.network_address.ipv4_mapped is not None:
        if network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            return IPv4Network((mapped, network.prefixlen - 96))
    return network


def family(address: IPAddress | IPNetwork) -> int:
    return address.version


def sort_key(address: IPAddress) -> bytes:
    """Bytes whose byte-wise order is numeric order, IPv4 before IPv6."""
    if address.version == 4:
        return b"\x04" + int(address).to_bytes(4, "big")
    return b"\x06" + int(address).to_bytes(16, "big")


def address_from_sort_key(key: bytes) -> IPAddress:
    return IPv4Address(key[1:]) if key[0] == 4 else IPv6Address(key[1:])


_L = TypeVar("_L")


# The top bits an address is screened by before the per-length probes: most addresses fall in
# no member network's /8 (IPv4) or /16 (IPv6), and are answered with one set lookup.
_SCREEN = {4: 8, 6: 16}


class NetworkSet(Generic[_L]):
    """Longest-prefix match of an address against labelled networks.

    One dict per (family, prefix length), keyed by the network's high bits: a lookup costs one
    shift and one dict probe per distinct prefix length, whatever the number of networks. A
    screen of the top bits any member touches answers most misses with a single probe.
    """

    def __init__(self, networks: Iterable[tuple[IPNetwork, _L]] = ()) -> None:
        self._tables: dict[int, dict[int, dict[int, tuple[IPNetwork, _L]]]] = {4: {}, 6: {}}
        self._probes: dict[int, list[tuple[int, dict[int, tuple[IPNetwork, _L]]]]] = {4: [], 6: []}
        self._screen: dict[int, set[int]] = {4: set(), 6: set()}
        self._wide: dict[int, bool] = {4: False, 6: False}  # a member shorter than the screen
        self._count = 0
        for network, label in networks:
            self.add(network, label)

    def add(self, network: IPNetwork, label: _L) -> None:
        version, bits = network.version, network.max_prefixlen
        tables = self._tables[version]
        table = tables.setdefault(network.prefixlen, {})
        key = int(network.network_address) >> (bits - network.prefixlen)
        if key not in table:
            self._count += 1
            table[key] = (network, label)
        screen = _SCREEN[version]
        first = int(network.network_address) >> (bits - screen)
        if network.prefixlen >= screen:
            self._screen[version].add(first)
        elif screen - network.prefixlen <= 16:  # e.g. 224.0.0.0/4: 16 screen values
            self._screen[version].update(range(first, first + 2 ** (screen - network.prefixlen)))
        else:
            self._wide[version] = True
        self._probes[version] = [
            (bits - length, tables[length]) for length in sorted(tables, reverse=True)
        ]

    def match(self, address: IPAddress) -> tuple[IPNetwork, _L] | None:
        """The most specific network containing ``address``, with its label, or ``None``."""
        version = address.version
        value = int(address)
        if not self._wide[version]:
            shift = (32 if version == 4 else 128) - _SCREEN[version]
            if value >> shift not in self._screen[version]:
                return None
        for shift, table in self._probes[version]:
            hit = table.get(value >> shift)
            if hit is not None:
                return hit
        return None

    def overlapping(self, network: IPNetwork) -> list[tuple[IPNetwork, _L]]:
        """Every member network that overlaps ``network`` (contains it or lies inside it)."""
        return [(n, lab) for n, lab in self if n.version == network.version and n.overlaps(network)]

    def __iter__(self) -> Iterator[tuple[IPNetwork, _L]]:
        for version in (4, 6):
            for length in sorted(self._tables[version]):
                yield from self._tables[version][length].values()

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True, slots=True)
class Special:
    name: str
    rfc: str

    def __str__(self) -> str:
        return f"{self.name} ({self.rfc})"


# From the IANA IPv4 and IPv6 Special-Purpose Address Registries, plus the documentation
# ranges: none of these is a real attacker on the Internet, and several are your own networks.
_NEVER_BLOCK: list[tuple[str, Special]] = [
    ("0.0.0.0/8", Special("this network / unspecified", "RFC 791")),
    ("10.0.0.0/8", Special("private", "RFC 1918")),
    ("100.64.0.0/10", Special("shared address space (CGNAT)", "RFC 6598")),
    ("127.0.0.0/8", Special("loopback", "RFC 1122")),
    ("169.254.0.0/16", Special("link-local", "RFC 3927")),
    ("172.16.0.0/12", Special("private", "RFC 1918")),
    ("192.0.0.0/24", Special("IETF protocol assignments", "RFC 6890")),
    ("192.0.2.0/24", Special("documentation TEST-NET-1", "RFC 5737")),
    ("192.88.99.0/24", Special("6to4 relay anycast (deprecated)", "RFC 7526")),
    ("192.168.0.0/16", Special("private", "RFC 1918")),
    ("198.18.0.0/15", Special("benchmarking", "RFC 2544")),
    ("198.51.100.0/24", Special("documentation TEST-NET-2", "RFC 5737")),
    ("203.0.113.0/24", Special("documentation TEST-NET-3", "RFC 5737")),
    ("224.0.0.0/4", Special("multicast", "RFC 5771")),
    ("240.0.0.0/4", Special("reserved", "RFC 1112")),
    ("255.255.255.255/32", Special("limited broadcast", "RFC 919")),
    ("::/128", Special("unspecified", "RFC 4291")),
    ("::1/128", Special("loopback", "RFC 4291")),
    ("::/3", Special("reserved (outside global unicast 2000::/3)", "RFC 4291")),
    ("100::/64", Special("discard-only", "RFC 6666")),
    ("64:ff9b:1::/48", Special("local-use IPv4/IPv6 translation", "RFC 8215")),
    ("2001::/23", Special("IETF protocol assignments", "RFC 2928")),
    ("2001:2::/48", Special("benchmarking", "RFC 5180")),
    ("2001:db8::/32", Special("documentation", "RFC 3849")),
    ("2002::/16", Special("6to4 (deprecated; embeds an IPv4 address)", "RFC 7526")),
    ("3fff::/20", Special("documentation", "RFC 9637")),
    ("4000::/2", Special("reserved (outside global unicast 2000::/3)", "RFC 4291")),
    ("8000::/1", Special("reserved (outside global unicast 2000::/3)", "RFC 4291")),
    ("fc00::/7", Special("unique local (ULA)", "RFC 4193")),
    ("fe80::/10", Special("link-local", "RFC 4291")),
    ("fec0::/10", Special("site-local (deprecated)", "RFC 3879")),
    ("ff00::/8", Special("multicast", "RFC 4291")),
]

NEVER_BLOCK: NetworkSet[Special] = NetworkSet((ip_network(n), s) for n, s in _NEVER_BLOCK)


def never_block_reason(address: IPAddress) -> Special | None:
    """Why ``address`` must never be published, or ``None`` if it is an ordinary public one."""
    hit = NEVER_BLOCK.match(address)
    return None if hit is None else hit[1]


def aggregate(items: Iterable[IPAddress | IPNetwork]) -> list[IPNetwork]:
    """Lossless CIDR merge per family, IPv4 first, in numeric order.

    The same result as ``ipaddress.collapse_addresses`` (a property test checks it), computed
    on integers: sort the ranges, merge overlapping and adjacent ones, then cut each range into
    the fewest aligned blocks. Objects are made only for the output — collapse_addresses on a
    million address objects is twenty times slower.
    """
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for item in items:
        if isinstance(item, IPv4Network | IPv6Network):
            first = int(item.network_address)
            ranges[item.version].append((first, first + item.num_addresses - 1))
        else:
            value = int(item)
            ranges[item.version].append((value, value))
    result: list[IPNetwork] = []
    for version, bits, make in ((4, 32, IPv4Network), (6, 128, IPv6Network)):
        merged: list[list[int]] = []
        for first, last in sorted(ranges[version]):
            if merged and first <= merged[-1][1] + 1:
                if last > merged[-1][1]:
                    merged[-1][1] = last
            else:
                merged.append([first, last])
        for first, last in merged:
            while first <= last:
                # the largest block aligned at ``first`` that does not pass ``last``
                size = (first & -first) if first else 1 << bits
                while size > last - first + 1:
                    size >>= 1
                result.append(make((first, bits - size.bit_length() + 1)))
                first += size
    return result


def carve(networks: Iterable[IPAddress | IPNetwork], holes: Iterable[IPNetwork]) -> list[IPNetwork]:
    """The minimal CIDR set covering ``networks`` minus ``holes``, per family, IPv4 first.

    ``address_exclude`` splits a network around one hole into the fewest networks; holes are
    applied one after another, and the result is collapsed again.
    """
    remaining = aggregate(networks)
    hole_list = aggregate(holes)
    for hole in hole_list:
        next_round: list[IPNetwork] = []
        for network in remaining:
            if network.version != hole.version or not network.overlaps(hole):
                next_round.append(network)
            elif hole.supernet_of(network):  # type: ignore[arg-type]
                continue  # wholly inside the hole: gone
            else:
                next_round.extend(network.address_exclude(hole))  # type: ignore[arg-type]
        remaining = next_round
    return aggregate(remaining)


def split_to_prefix(network: IPNetwork, max_prefix: int) -> list[IPNetwork]:
    """``network`` itself, or its subnets of length ``max_prefix`` if it is broader."""
    if network.prefixlen >= max_prefix:
        return [network]
    return list(network.subnets(new_prefix=max_prefix))
