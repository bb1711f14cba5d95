"""Meta, events, device status, bans, allow entries and pushes (see ``Tx``)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from ipaddress import ip_network
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    Text,
    and_,
    bindparam,
    cast,
    delete,
    func,
    or_,
    select,
    update,
)

from ..models import AllowEntry, Ban, BanOrigin, DeviceStatus, Event, EventKind, OffenderStatus
from ..net import IPNetwork, sort_key
from ._common import BIG_CHUNK, _json_list, bulk_insert, chunks, update_or_insert
from .schema import allow_entries as allow_entries_table
from .schema import bans, device_status, events, meta, offenders, pushes


def _network_values(network: IPNetwork) -> dict[str, Any]:
    return {
        "network": str(network),
        "sort_key": sort_key(network.network_address),
        "prefixlen": network.prefixlen,
    }


def _ban(row: Row[Any]) -> Ban:
    return Ban(
        ip_network(row.network),
        row.created,
        row.expires,
        BanOrigin(row.provenance),
        row.actor,
        row.note,
    )


def _within(inner: IPNetwork, outer: IPNetwork) -> bool:
    return inner.version == outer.version and inner.subnet_of(outer)  # type: ignore[arg-type]


class ControlQueries:
    conn: Connection
    claimed: int | None  # the version this transaction bumped to, once it has

    def store_version(self) -> int:
        """A counter bumped by every change that can change a feed (the ETag source)."""
        value = self.conn.execute(select(meta.c.value).where(meta.c.key == "version")).scalar_one()
        return int(value)

    def get_meta(self, key: str) -> str | None:
        return self.conn.execute(select(meta.c.value).where(meta.c.key == key)).scalar_one_or_none()

    def set_meta(self, key: str, value: str) -> None:
        update_or_insert(self.conn, meta, meta.c.key == key, {"value": value}, {"key": key})

    def bump_version(self) -> int:
        """The version of this transaction's changes: bumped once per transaction, by the first
        call, in SQL, so concurrent writers (replicas) never lose a bump: the UPDATE takes the
        row lock, held to commit, so writers that change feeds commit in version order and the
        offender rows a write stamps with it are seen by the version that names them."""
        if self.claimed is None:
            bumped = cast(cast(meta.c.value, BigInteger) + 1, Text)
            self.conn.execute(update(meta).where(meta.c.key == "version").values(value=bumped))
            self.claimed = self.store_version()
        return self.claimed

    def insert_events(self, items: Sequence[Event]) -> None:
        """Append events through the driver's executemany (an unban of 100,000 targets writes
        as many, in a second)."""
        rows = ((e.time, e.kind.value, e.ip, e.actor, e.detail) for e in items)
        bulk_insert(self.conn, events, ("time", "kind", "ip", "actor", "detail"), rows)

    def events_of(self, ip: str) -> list[Event]:
        query = select(events).where(events.c.ip == ip).order_by(events.c.time, events.c.id)
        return [
            Event(r.time, EventKind(r.kind), r.ip, r.actor, r.detail)
            for r in self.conn.execute(query)
        ]

    def events_since(self, since: int, kinds: Sequence[EventKind]) -> list[Event]:
        query = (
            select(events)
            .where(events.c.time > since, events.c.kind.in_([k.value for k in kinds]))
            .order_by(events.c.time, events.c.id)
        )
        return [
            Event(r.time, EventKind(r.kind), r.ip, r.actor, r.detail)
            for r in self.conn.execute(query)
        ]

    def device_statuses(self) -> dict[tuple[str, str], DeviceStatus]:
        rows = self.conn.execute(select(device_status).order_by(device_status.c.device))
        return {(r.device, r.vdom): DeviceStatus(**r._asdict()) for r in rows}

    def save_device_status(self, status: DeviceStatus) -> None:
        """Update the row, or insert it the first time (portable upsert: one writer at a time)."""
        values = {k: getattr(status, k) for k in DeviceStatus.__dataclass_fields__}
        key = and_(device_status.c.device == status.device, device_status.c.vdom == status.vdom)
        update_or_insert(self.conn, device_status, key, values, {})

    def active_bans(self, now: int) -> list[Ban]:
        query = (
            select(bans)
            .where(or_(bans.c.expires.is_(None), bans.c.expires > now))
            .order_by(bans.c.sort_key, bans.c.prefixlen)
        )
        return [_ban(r) for r in self.conn.execute(query)]

    def save_ban(self, ban: Ban) -> None:
        values = {
            **_network_values(ban.network),
            "created": ban.created,
            "expires": ban.expires,
            "provenance": str(ban.provenance),
            "actor": ban.actor,
            "note": ban.note,
        }
        update_or_insert(self.conn, bans, bans.c.network == values["network"], values, {})

    def delete_bans_within(self, network: IPNetwork) -> list[str]:
        """Remove the bans equal to or inside ``network``; returns what was removed."""
        rows = self.conn.execute(select(bans.c.network)).scalars().all()
        inside = [n for n in rows if _within(ip_network(n), network)]
        for chunk in chunks(inside):
            self.conn.execute(delete(bans).where(bans.c.network.in_(chunk)))
        return inside

    def allow_entries(self, now: int) -> list[AllowEntry]:
        query = (
            select(allow_entries_table)
            .where(
                or_(allow_entries_table.c.expires.is_(None), allow_entries_table.c.expires > now)
            )
            .order_by(allow_entries_table.c.sort_key, allow_entries_table.c.prefixlen)
        )
        return [
            AllowEntry(ip_network(r.network), r.created, r.expires, r.actor, r.note)
            for r in self.conn.execute(query)
        ]

    def save_allow_entry(self, entry: AllowEntry) -> None:
        values = {
            **_network_values(entry.network),
            "created": entry.created,
            "expires": entry.expires,
            "actor": entry.actor,
            "note": entry.note,
        }
        key = allow_entries_table.c.network == values["network"]
        update_or_insert(self.conn, allow_entries_table, key, values, {})

    def delete_allow_entry(self, network: str) -> bool:
        query = delete(allow_entries_table).where(allow_entries_table.c.network == network)
        return self.conn.execute(query).rowcount > 0

    def record_pushes(self, device: str, ips: Sequence[str], now: int, expires: int) -> None:
        """Remember quarantines banfeed placed on ``device`` (replacing older records)."""
        for chunk in chunks(list(ips)):
            self.conn.execute(
                delete(pushes).where(pushes.c.device == device, pushes.c.ip.in_(chunk))
            )
        bulk_insert(
            self.conn,
            pushes,
            ("device", "ip", "pushed", "expires"),
            [(device, ip, now, expires) for ip in ips],
        )
        self.conn.execute(delete(pushes).where(pushes.c.expires < now))

    def pushed_to(self, device: str, since: int) -> dict[str, tuple[int, int]]:
        """``ip -> (pushed, expires)`` for quarantines banfeed placed on ``device`` that were still
        running at ``since``: bounded by what was pushed, not by what the device lists."""
        query = select(pushes).where(pushes.c.device == device, pushes.c.expires >= since)
        return {r.ip: (r.pushed, r.expires) for r in self.conn.execute(query)}

    def bans_by_network(self, networks: Sequence[str]) -> dict[str, Ban]:
        """Ban rows (expired ones too) for these network texts."""
        found: dict[str, Ban] = {}
        for chunk in chunks(list(networks)):
            for r in self.conn.execute(select(bans).where(bans.c.network.in_(chunk))):
                found[r.network] = _ban(r)
        return found

    # -- unban, many at once: set-based, a bounded number of statements per 5,000 targets --

    def unban_offenders(self, ips: Sequence[str], now: int) -> list[str]:
        """Mark the offenders of ``ips`` (address texts) ``unbanned``; returns those the store
        holds (already unbanned ones included), in the order given."""
        found: set[str] = set()
        exists = select(offenders.c.ip).where(offenders.c.ip.in_(bindparam("ips", expanding=True)))
        for chunk in chunks(sorted(set(ips)), BIG_CHUNK):
            found.update(self.conn.execute(exists, {"ips": list(chunk)}).scalars())
        self._mark_unbanned(sorted(found), now)
        return [ip for ip in dict.fromkeys(ips) if ip in found]

    def _mark_unbanned(self, ips: Sequence[str], now: int) -> None:
        if not ips:
            return
        statement = (
            update(offenders)
            .where(offenders.c.ip.in_(bindparam("ips", expanding=True)))
            .values(status=OffenderStatus.UNBANNED.value, updated=now, changed=self.bump_version())
        )
        for chunk in chunks(list(ips), BIG_CHUNK):
            self.conn.execute(statement, {"ips": list(chunk)})

    def delete_bans_of(self, targets: Sequence[IPNetwork]) -> dict[str, list[str]]:
        """Remove the bans equal to or inside each target; returns ``target text -> bans
        removed``. A host target is an exact match (one ``IN`` list per 5,000); a network target
        a range of the ban index, a hundred targets a statement."""
        removed: dict[str, list[str]] = {}
        hosts = [str(n) for n in targets if n.prefixlen == n.max_prefixlen]
        by_text = select(bans.c.network).where(bans.c.network.in_(bindparam("n", expanding=True)))
        for chunk in chunks(sorted(set(hosts)), BIG_CHUNK):
            for network in self.conn.execute(by_text, {"n": list(chunk)}).scalars():
                removed[network] = [network]
        wide = [n for n in dict.fromkeys(targets) if n.prefixlen < n.max_prefixlen]
        for chunk in chunks(wide, 100):
            ranges = [
                and_(
                    bans.c.sort_key >= sort_key(n.network_address),
                    bans.c.sort_key <= sort_key(n.broadcast_address),
                    bans.c.prefixlen >= n.prefixlen,
                )
                for n in chunk
            ]
            query = select(bans.c.network).where(or_(*ranges)).order_by(bans.c.sort_key)
            inside = [ip_network(text) for text in self.conn.execute(query).scalars()]
            for target in chunk:
                hits = [str(b) for b in inside if _within(b, target)]
                if hits:
                    removed[str(target)] = hits
        gone = sorted({ban for hits in removed.values() for ban in hits})
        statement = delete(bans).where(bans.c.network.in_(bindparam("n", expanding=True)))
        for chunk in chunks(gone, BIG_CHUNK):
            self.conn.execute(statement, {"n": list(chunk)})
        return removed

    def delete_bans_of_origin(self, origin: BanOrigin) -> list[str]:
        """Remove every ban of ``origin``; returns them in numeric order."""
        where = bans.c.provenance == origin.value
        query = select(bans.c.network).where(where).order_by(bans.c.sort_key, bans.c.prefixlen)
        gone = list(self.conn.execute(query).scalars())
        self.conn.execute(delete(bans).where(where))
        return gone

    def unban_offenders_only_of(self, device: str, now: int) -> tuple[list[str], int]:
        """Mark ``unbanned`` the listed offenders ``device`` alone reported (an import's); returns
        them in numeric order, and how many listed offenders it reported with other devices
        (left as they are: a device reported them too)."""
        only = offenders.c.devices == _json_list((device,))
        listed = offenders.c.status == OffenderStatus.LISTED.value
        query = select(offenders.c.ip).where(only, listed).order_by(offenders.c.sort_key)
        ips = list(self.conn.execute(query).scalars())
        self._mark_unbanned(ips, now)
        shared = (
            select(func.count())
            .select_from(offenders)
            .where(listed, ~only, offenders.c.devices.contains(json.dumps(device), autoescape=True))
        )
        return ips, int(self.conn.execute(shared).scalar_one())
