"""What feeds are made of: one snapshot of the store's active offenders, bans and allow
entries, kept in step with the store by version (see ``read_inputs``)."""

from __future__ import annotations

import logging

from ..store import Tx
from .active import ActiveSet
from .build import FeedInputs

# A publisher keeps the active offenders in memory and applies the rows each write changed; it
# reads them whole again after this long (and whenever the store's version goes back, as after
# a restore), so nothing a missed change could leave behind outlives it.
FULL_READ_EVERY = 3600

log = logging.getLogger(__name__)


def read_inputs(tx: Tx, now: int, kept: FeedInputs | None = None) -> FeedInputs:
    """What feeds are made of now. The active set comes from ``kept`` (an earlier snapshot of
    this store) or else the store's saved snapshot (``Tx.latest_snapshot``), brought up to date
    with the offender rows written since its version; or from a full read when neither will do:
    the version went back (a restore), rows were deleted (a prune, or a store wiped behind
    banfeed's back: the mass-drop guard must see it), or the base is over ``FULL_READ_EVERY``
    old."""
    version, rows = tx.store_version(), tx.count_offenders()

    def usable(base_version: int, base_rows: int, read_at: int) -> bool:
        fresh = 0 <= now - read_at < FULL_READ_EVERY
        return version >= base_version and rows >= base_rows and fresh

    base: tuple[int, int, ActiveSet] | None = None  # the version and read time of a set
    derived_from = None
    if kept is not None and usable(kept.version, kept.rows, kept.read_at):
        base, derived_from = (kept.version, kept.read_at, kept.active), kept.version
    else:
        saved = tx.latest_snapshot(with_body=False)
        if saved is not None and usable(saved.version, saved.rows, saved.created):
            loaded = _saved_set(tx)
            if loaded is not None:
                base = (saved.version, saved.created, loaded)
    if base is None:
        active, read_at, whole = ActiveSet.read(tx.offender_columns(active_at=now)), now, True
    else:
        base_version, read_at, active = base
        whole = False
        if version > base_version:
            active = active.apply(tx.offender_columns(changed_after=base_version))
    return FeedInputs(
        version=version,
        rows=rows,
        read_at=read_at,
        now=now,
        active=active,
        bans=tx.active_bans(now),
        allow_entries=tx.allow_entries(now),
        whole=whole,
        derived_from=derived_from,
    )


def _saved_set(tx: Tx) -> ActiveSet | None:
    """The saved set, or None (and a warning) when it cannot be read: a full read then."""
    saved = tx.latest_snapshot()
    if saved is None or saved.body is None:
        return None
    try:
        return ActiveSet.from_bytes(saved.body)
    except (ValueError, KeyError, OSError, EOFError) as exc:
        log.warning("saved active set unreadable (%s); reading every offender", exc)
        return None
