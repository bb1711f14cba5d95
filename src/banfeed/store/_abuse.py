"""Reports sent to AbuseIPDB (see ``Tx``): when each address was last reported, today's count."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Row, delete, exists, func, select

from ..models import Offender
from ._common import active, offender_from_row
from .schema import abuseipdb_reports, offenders


class ReportStatus(StrEnum):
    REPORTED = "reported"  # the API took it: counts towards the daily limit
    REJECTED = "rejected"  # the API refused it (422, 403…): not sent again before repeat_after


@dataclass(frozen=True, slots=True)
class AbuseReport:
    ip: str  # canonical text of the address
    reported_at: int
    categories: tuple[int, ...]
    status: ReportStatus


def _report(row: Row[Any]) -> AbuseReport:
    numbers = tuple(int(n) for n in row.categories.split(",") if n)
    return AbuseReport(row.ip, row.reported_at, numbers, ReportStatus(row.status))


# A bound on the addresses of one IN (…): SQLite allows 32,766 parameters, PostgreSQL 65,535.
_CHUNK = 5000


class AbuseQueries:
    conn: Connection

    def insert_abuse_report(self, report: AbuseReport) -> None:
        self.conn.execute(
            abuseipdb_reports.insert().values(
                ip=report.ip,
                reported_at=report.reported_at,
                categories=",".join(map(str, report.categories)),
                status=report.status.value,
            )
        )

    def last_abuse_reports(self, ips: Iterable[str]) -> dict[str, int]:
        """When each of ``ips`` was last reported (or refused), for those ever reported."""
        wanted = list(dict.fromkeys(ips))
        found: dict[str, int] = {}
        table = abuseipdb_reports
        for start in range(0, len(wanted), _CHUNK):
            query = (
                select(table.c.ip, func.max(table.c.reported_at))
                .where(table.c.ip.in_(wanted[start : start + _CHUNK]))
                .group_by(table.c.ip)
            )
            found.update((ip, int(at)) for ip, at in self.conn.execute(query))
        return found

    def abuse_reports_since(self, since: int) -> int:
        """Reports the API took at or after ``since`` (the daily limit's count)."""
        table = abuseipdb_reports
        query = (
            select(func.count())
            .select_from(table)
            .where(table.c.reported_at >= since)
            .where(table.c.status == ReportStatus.REPORTED.value)
        )
        return int(self.conn.execute(query).scalar_one())

    def recent_abuse_reports(self, limit: int) -> list[AbuseReport]:
        table = abuseipdb_reports
        query = select(table).order_by(table.c.reported_at.desc(), table.c.id.desc()).limit(limit)
        return [_report(row) for row in self.conn.execute(query)]

    def prune_abuse_reports(self, before: int) -> int:
        """Forget reports older than ``before`` (the caller keeps more than ``repeat_after``)."""
        query = delete(abuseipdb_reports).where(abuseipdb_reports.c.reported_at < before)
        return int(self.conn.execute(query).rowcount)

    def unreported_offenders(
        self, *, offended_since: int, reported_since: int, now: int, limit: int
    ) -> list[Offender]:
        """Active offenders whose last offense is at or after ``offended_since`` and that were
        not reported (nor refused) at or after ``reported_since``, oldest offense first, at
        most ``limit``: what a reporter that stopped with a queue had still to send."""
        table = abuseipdb_reports
        reported = exists().where(
            table.c.ip == offenders.c.ip, table.c.reported_at >= reported_since
        )
        query = (
            select(offenders)
            .where(offenders.c.last_offense >= offended_since, active(now), ~reported)
            .order_by(offenders.c.last_offense, offenders.c.sort_key)
            .limit(limit)
        )
        return [offender_from_row(row) for row in self.conn.execute(query)]
