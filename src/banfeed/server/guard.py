"""The mass-drop guard: a feed that would suddenly lose most of its entries, for no reason the
store can show, is held at its last good version until an operator approves.

A feed losing entries is normal: offenders expire, operators unban, allowlists grow. A feed
losing half of them at once *without* such reasons is what a wiped or corrupted store, a bad
restore or a bug looks like — and publishing it would unblock every attacker at once. Every
address that left the feed is classified by the store: gone from the store entirely, or still
there, active and matching, is *unexplained*; expired, unbanned, allowlisted, protected,
filtered out or over the cap is *explained*.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from ..feeds import FeedBuild
from ..policy import is_active, suppression_reason
from ..store import queries as q


@dataclass(frozen=True, slots=True)
class Verdict:
    hold: bool
    lost: int  # entries of the old build not in the new one
    unexplained: int
    before: int

    def reason(self, max_drop: float) -> str:
        return (
            f"{self.unexplained} of {self.before} published entries would disappear with no "
            f"expiry, unban or allowlist change recorded (more than {max_drop:.0%}); "
            "serving the last good version — check the store, then `banfeed feeds approve`"
        )


def judge(conn: Connection, old: FeedBuild, new: FeedBuild, max_drop: float, now: int) -> Verdict:
    """Compare two builds of one feed; hold when the unexplained loss exceeds ``max_drop``."""
    before_ips = {str(o.ip) for o in old.offenders}
    before_bans = {str(b.network) for b in old.bans}
    before = len(before_ips) + len(before_bans)
    lost_ips = before_ips - {str(o.ip) for o in new.offenders}
    lost_bans = before_bans - {str(b.network) for b in new.bans}
    lost = len(lost_ips) + len(lost_bans)
    if before == 0 or lost <= max_drop * before:
        return Verdict(False, lost, 0, before)  # small losses need no explanation
    rows = q.load_offenders(conn, lost_ips)
    unexplained = 0
    for ip in lost_ips:
        row = rows.get(ip)
        if row is None:
            unexplained += 1  # deleted behind our back
        elif (
            is_active(row, now)
            and suppression_reason(row.ip, new.allowlist) is None
            and new.spec.excludes(row, now) is None
            and new.overflow == 0
        ):
            unexplained += 1  # nothing says why it should go
    if lost_bans:
        unbanned = {e.ip for e in q.events_since(conn, old.built - 1, ("unbanned",))}
        expired = {str(b.network) for b in old.bans if b.expires is not None and b.expires <= now}
        unexplained += len(lost_bans - unbanned - expired)
    return Verdict(unexplained > max_drop * before, lost, unexplained, before)


def judge_without_history(
    conn: Connection, new: FeedBuild, state: dict[str, object], max_drop: float, now: int
) -> Verdict:
    """After a restart there is no last build in memory: compare counts with the last served
    size in feed_state, crediting expiries and unbans recorded since then."""
    before = int(str(state["entries"]))
    after = len(new.entries)
    lost = max(0, before - after)
    if before == 0 or lost <= max_drop * before:
        return Verdict(False, lost, 0, before)
    since = int(str(state["changed"]))
    explained = q.count_expired_between(conn, since, now) + len(
        q.events_since(conn, since, ("unbanned", "allowlist_added"))
    )
    unexplained = max(0, lost - explained)
    return Verdict(unexplained > max_drop * before, lost, unexplained, before)
