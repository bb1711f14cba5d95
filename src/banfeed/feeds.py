"""Feeds: which offenders a feed publishes, and its renderings.

A feed is computed from the store at ``now``: listed and active offenders, minus never-block and
allowlisted addresses (applied again here, so an allowlist change takes effect on every feed at
once), minus what the feed's filters exclude, in numeric order, IPv4 first.

``RENDERERS`` maps a format to ``(render, media type)``: a new format is one entry.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from .errors import ExportError
from .models import AllowEntry, Ban, Offender
from .net import IPAddress, IPNetwork, NetworkSet, aggregate, carve, sort_key
from .policy import (
    Allowlist,
    Escalation,
    PrefixGuard,
    holes,
    is_active,
    state,
    suppression_reason,
    with_entries,
)
from .store import queries as q
from .timeutil import iso


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """What a feed selects and how much of it it may publish; built from ``[[feeds]]``."""

    name: str
    family: str = "any"  # ipv4 | ipv6 | any
    causes: frozenset[str] = frozenset()  # lower-cased
    devices: frozenset[str] = frozenset()
    vdoms: frozenset[str] = frozenset()  # "vdom" or "device/vdom"
    min_offenses: int = 1
    seen_within: int | None = None
    max_entries: int = 131072
    aggregate: bool = False

    def excludes(self, offender: Offender, now: int) -> str | None:
        """Which filter of this feed leaves ``offender`` out, or ``None``."""
        if self.family != "any" and self.family != f"ipv{offender.ip.version}":
            return f"family is {self.family}"
        if self.causes and not self.causes.intersection(s.lower() for s in offender.sources):
            return f"causes {sorted(self.causes)} not among {list(offender.sources)}"
        if self.devices and not self.devices.intersection(offender.devices):
            return f"devices {sorted(self.devices)} not among {list(offender.devices)}"
        if self.vdoms and not any(
            v in self.vdoms or v.partition("/")[2] in self.vdoms for v in offender.vdoms
        ):
            return f"vdoms {sorted(self.vdoms)} not among {list(offender.vdoms)}"
        if offender.offense_count < self.min_offenses:
            return f"fewer than {self.min_offenses} offenses"
        if self.seen_within is not None and offender.last_offense + self.seen_within <= now:
            return f"last offense {iso(offender.last_offense)} is older than seen_within"
        return None

    def excludes_ban(self, ban: Ban) -> str | None:
        """Which filter leaves a manual or imported ban out: only family, and device-based
        filters (a ban was reported by no device) unless ``causes`` names its provenance."""
        if self.family != "any" and self.family != f"ipv{ban.network.version}":
            return f"family is {self.family}"
        if self.causes and ban.provenance not in self.causes:
            return f"causes {sorted(self.causes)} do not include {ban.provenance!r}"
        if self.devices or self.vdoms:
            return "the feed takes offenders of given devices or VDOMs only"
        return None


@dataclass(frozen=True, slots=True)
class FeedPolicy:
    """What every feed applies besides its own filters (from config; store entries added)."""

    allowlist: Allowlist  # config allowlist and protect; the store's entries are added per build
    guard: PrefixGuard = PrefixGuard()
    escalation: Escalation | None = None
    max_drop: float = 0.5  # the mass-drop guard's threshold (1.0: never hold)


@dataclass(frozen=True, slots=True)
class FeedBuild:
    """One feed computed at one moment: what it publishes and why it has that size."""

    spec: FeedSpec
    offenders: list[Offender]  # published offenders, numeric order
    bans: list[Ban]  # published manual and imported bans
    escalated: list[IPNetwork]  # prefixes published instead of their offenders
    entries: list[IPAddress | IPNetwork]  # the lines of the plain feed, numeric order
    matched: int  # offenders that matched before the cap
    overflow: int  # matching offenders (or, rarely, ban networks) left out by max_entries
    valid_until: int | None  # the feed changes by itself then (an expiry), store or not
    version: int  # the store version it was built from
    built: int
    allowlist: Allowlist  # the effective allowlist it was built with


def effective_allowlist(conn: Connection, base: Allowlist, now: int) -> Allowlist:
    """The configured allowlist and protect ranges plus the store's current allow entries."""
    return with_entries(base, q.allow_entries(conn, now))


def feed_offenders(
    conn: Connection, spec: FeedSpec, allowlist: Allowlist, now: int
) -> list[Offender]:
    family = {"ipv4": 4, "ipv6": 6}.get(spec.family)
    return [
        o
        for o in q.iter_offenders(conn, active_at=now, family=family)
        if suppression_reason(o.ip, allowlist) is None and spec.excludes(o, now) is None
    ]


def build_feed(conn: Connection, spec: FeedSpec, policy: FeedPolicy, now: int) -> FeedBuild:
    """Compute a feed in one read transaction.

    Offenders (addresses) and bans (networks) are combined; escalated prefixes replace their
    offenders; every network has the never-block, protected and allowlisted ranges carved out
    exactly, and none is broader than the prefix guard. Over ``max_entries``: first merge into
    CIDR blocks where that loses nothing; if still over, keep the bans, then the most recent,
    then most repeated, offenders, and report how many were left out.
    """
    version = q.store_version(conn)
    stored_allow = q.allow_entries(conn, now)
    allow = with_entries(policy.allowlist, stored_allow)
    matched = feed_offenders(conn, spec, allow, now)
    bans = [b for b in q.active_bans(conn, now) if spec.excludes_ban(b) is None]
    escalated = policy.escalation.prefixes(o.ip for o in matched) if policy.escalation else []
    networks = policy.guard.split(carve([b.network for b in bans] + escalated, holes(allow)))
    published = matched
    entries = _entries(published, networks, spec.aggregate, policy.guard)
    if len(entries) > spec.max_entries:
        entries = _entries(published, networks, True, policy.guard)
    dropped_networks = 0
    if len(entries) > spec.max_entries:
        room = max(0, spec.max_entries - len(networks))
        ranked = sorted(matched, key=lambda o: (o.last_offense, o.offense_count), reverse=True)
        published = sorted(ranked[:room], key=lambda o: sort_key(o.ip))
        entries = _entries(published, networks, True, policy.guard)
        if len(entries) > spec.max_entries:  # bans alone exceed the cap: say so, never silently
            dropped_networks = len(entries) - spec.max_entries
            entries = entries[: spec.max_entries]
    return FeedBuild(
        spec=spec,
        offenders=published,
        bans=bans,
        escalated=escalated,
        entries=entries,
        matched=len(matched),
        overflow=len(matched) - len(published) + dropped_networks,
        valid_until=_valid_until(matched, bans, stored_allow, spec),
        version=version,
        built=now,
        allowlist=allow,
    )


def _entries(
    offenders: list[Offender], networks: list[IPNetwork], merge: bool, guard: PrefixGuard
) -> list[IPAddress | IPNetwork]:
    if merge:
        merged = guard.split(aggregate([*(o.ip for o in offenders), *networks]))
        return [n.network_address if n.num_addresses == 1 else n for n in merged]
    covered = NetworkSet((n, True) for n in networks)
    lines: list[IPAddress | IPNetwork] = [o.ip for o in offenders if covered.match(o.ip) is None]
    if not networks:
        return lines  # offenders come in numeric order already
    lines += [n.network_address if n.num_addresses == 1 else n for n in networks]
    return sorted(lines, key=_line_key)


def _line_key(line: IPAddress | IPNetwork) -> tuple[int, int, int]:
    if isinstance(line, IPv4Network | IPv6Network):
        return (line.version, int(line.network_address), line.prefixlen)
    return (line.version, int(line), line.max_prefixlen)


def _valid_until(
    offenders: list[Offender], bans: list[Ban], allows: list[AllowEntry], spec: FeedSpec
) -> int | None:
    moments = [o.active_until for o in offenders if o.active_until is not None]
    if spec.seen_within is not None:
        moments += [o.last_offense + spec.seen_within for o in offenders]
    moments += [b.expires for b in bans if b.expires is not None]
    moments += [e.expires for e in allows if e.expires is not None]
    return min(moments, default=None)


def offender_record(offender: Offender, now: int, allowlist: Allowlist) -> dict[str, Any]:
    """The stable JSON shape of an offender (documented in docs/cli.md)."""
    return {
        "ip": str(offender.ip),
        "family": f"ipv{offender.ip.version}",
        "first_offense": iso(offender.first_offense),
        "last_offense": iso(offender.last_offense),
        "offense_count": offender.offense_count,
        "sources": list(offender.sources),
        "devices": list(offender.devices),
        "vdoms": list(offender.vdoms),
        "active_until": iso(offender.active_until),
        "state": state(offender, now, allowlist),
        "suppressed_by": suppression_reason(offender.ip, allowlist),
        "note": offender.note,
    }


def render_text(build: FeedBuild, _now: int, _allowlist: Allowlist) -> bytes:
    """One address or CIDR a line, LF, no comments: what a FortiGate threat feed reads."""
    return "".join(f"{entry}\n" for entry in build.entries).encode("ascii")


CSV_COLUMNS = (
    "ip",
    "family",
    "first_offense",
    "last_offense",
    "offense_count",
    "sources",
    "devices",
    "active_until",
)


def render_csv(build: FeedBuild, now: int, allowlist: Allowlist) -> bytes:
    return csv_bytes(build.offenders, now, allowlist)


def csv_bytes(offenders: Iterable[Offender], now: int, allowlist: Allowlist) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for offender in offenders:
        record = offender_record(offender, now, allowlist)
        record["sources"] = " ".join(record["sources"])
        record["devices"] = " ".join(record["devices"])
        writer.writerow(["" if record[c] is None else record[c] for c in CSV_COLUMNS])
    return out.getvalue().encode("utf-8")


def render_json(build: FeedBuild, now: int, allowlist: Allowlist) -> bytes:
    records = [offender_record(o, now, allowlist) for o in build.offenders]
    return (json.dumps(records, indent=1) + "\n").encode("utf-8")


Renderer = Callable[[FeedBuild, int, Allowlist], bytes]
RENDERERS: dict[str, tuple[Renderer, str]] = {
    "txt": (render_text, "text/plain; charset=us-ascii"),
    "csv": (render_csv, "text/csv; charset=utf-8"),
    "json": (render_json, "application/json"),
}


def write_atomically(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so that a reader sees the old file or the new, never half.

    Temp file in the same folder, fsync, rename over the target, fsync the folder.
    """
    folder = path.parent
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        mode = 0o644  # a web server must be able to read a feed file
    except OSError as exc:
        raise ExportError(f"{path}: {exc.strerror}") from None
    try:
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise ExportError(f"cannot write in {folder}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, mode)
        os.replace(temp, path)
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        Path(temp).unlink(missing_ok=True)
        raise ExportError(f"{path}: {exc.strerror}") from None


def fortigate_config(feed: str, base_url: str, username: str | None, refresh_minutes: int) -> str:
    """The FortiOS CLI that makes a FortiGate pull ``feed`` and deny its sources."""
    url = base_url if base_url.endswith(".txt") else f"{base_url.rstrip('/')}/feeds/{feed}.txt"
    name = f"banfeed-{feed}"[:35]  # FortiOS limits these names to 35 characters
    policy = f"deny-{name}"[:35]
    lines = [
        "config system external-resource",
        f'    edit "{name}"',
        "        set type address",
        f'        set resource "{url}"',
        f"        set refresh-rate {refresh_minutes}",
    ]
    if username:
        lines += [f'        set username "{username}"', "        set password <the feed password>"]
    if url.startswith("https://"):
        lines.append("        set server-identity-check full")
    lines += [
        "    next",
        "end",
        "config firewall policy",
        "    edit 0",
        f'        set name "{policy}"',
        '        set srcintf "any"',
        '        set dstintf "any"',
        f'        set srcaddr "{name}"',
        '        set dstaddr "all"',
        "        set action deny",
        '        set schedule "always"',
        '        set service "ALL"',
        "        set logtraffic all",
        "    next",
        "end",
    ]
    return "\n".join(lines)


def explain(
    conn: Connection,
    spec: FeedSpec,
    policy: FeedPolicy,
    ip: IPAddress,
    offender: Offender | None,
    now: int,
    *,
    allow: Allowlist,
    bans: list[Ban],
) -> tuple[bool, str | None]:
    """Whether ``ip`` is in a feed, and why (or why not), for ``banfeed show``. ``allow`` (the
    effective allowlist) and ``bans`` (the active ones) are read once by the caller."""
    reason = suppression_reason(ip, allow)
    if reason is not None:
        return False, f"suppressed — {reason}"
    for ban in bans:
        if ban.network.version == ip.version and ip in ban.network:
            if spec.excludes_ban(ban) is None:
                return True, f"covered by {ban.provenance} ban {ban.network} by {ban.actor}"
    if offender is None:
        return False, "not in the store"
    if offender.status == "unbanned":
        unbans = [e for e in q.events_of(conn, str(ip)) if e.kind == "unbanned"]
        who = f" by {unbans[-1].actor} at {iso(unbans[-1].time)}" if unbans else ""
        return False, f"unbanned{who}"
    if not is_active(offender, now):
        return False, f"expired at {iso(offender.active_until)}"
    excluded = spec.excludes(offender, now)
    if excluded is not None:
        return False, f"filtered out: {excluded}"
    if policy.escalation is not None:
        esc = policy.escalation
        prefix = ip_network((ip, esc.prefix_v4 if ip.version == 4 else esc.prefix_v6), strict=False)
        low, high = sort_key(prefix.network_address), sort_key(prefix.broadcast_address)
        count = q.count_active_between(conn, low, high, now)
        if count >= esc.min_offenders:
            return True, f"published as escalated prefix {prefix} ({count} active offenders)"
    if q.count_offenders(conn, active_at=now) > spec.max_entries:
        rank = q.count_ranked_above(conn, offender.last_offense, offender.offense_count, now)
        if rank >= spec.max_entries:
            return False, (
                f"left out by max_entries ({spec.max_entries}): {rank} active offenders are "
                "more recent or more repeated"
            )
    return True, None
