"""Tables (SQLAlchemy Core). Times are BigInteger epoch seconds (UTC).

Addresses carry ``sort_key`` (family byte + packed address): ordering by it is numeric order,
IPv4 before IPv6, in every database. Lists (sources, devices, VDOMs) are JSON text: they are
read whole with their row and filtered in Python, so they need no table of their own.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "pk": "pk_%(table_name)s",
    }
)

meta = Table(
    "meta",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

offenders = Table(
    "offenders",
    metadata,
    Column("ip", String(45), primary_key=True),
    Column("sort_key", LargeBinary(17), nullable=False, unique=True),
    Column("family", SmallInteger, nullable=False),
    Column("first_offense", BigInteger, nullable=False),
    Column("last_offense", BigInteger, nullable=False),
    Column("offense_count", Integer, nullable=False),
    Column("sources", Text, nullable=False),
    Column("devices", Text, nullable=False),
    Column("vdoms", Text, nullable=False),
    Column("active_until", BigInteger, nullable=True),  # NULL: forever
    Column("status", String(16), nullable=False),  # listed | unbanned
    Column("note", Text, nullable=True),
    Column("updated", BigInteger, nullable=False),
    # The store version of the write that last changed the row: what in-memory active sets
    # read to stay in step (``Tx.offender_columns(changed_after=...)``).
    Column("changed", BigInteger, nullable=False, server_default="0"),
    Index(None, "active_until"),
    Index(None, "changed"),
    # The dashboard's sorts (``Tx.iter_offenders_sorted``): a page is an index range, not a
    # sort of every active row (bench/search_load.py).
    Index(None, "last_offense", "sort_key"),
    Index(None, "first_offense", "sort_key"),
    Index(None, "offense_count", "sort_key"),
)

offenses = Table(
    "offenses",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("device", String(64), nullable=False),
    Column("vdom", String(64), nullable=False),
    Column("ip", String(45), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=True),  # NULL: the device set no expiry
    Column("source", String(64), nullable=False),
    Column("seen", BigInteger, nullable=False),  # when banfeed first saw it
    UniqueConstraint("device", "vdom", "created", "ip"),
    Index(None, "ip"),
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("time", BigInteger, nullable=False),
    Column("kind", String(32), nullable=False),
    Column("ip", String(45), nullable=True),
    Column("actor", String(128), nullable=False),
    Column("detail", Text, nullable=False),
    Index(None, "ip"),
    Index(None, "time"),
)

allow_entries = Table(
    "allow_entries",
    metadata,
    Column("network", String(49), primary_key=True),
    Column("sort_key", LargeBinary(17), nullable=False),
    Column("prefixlen", SmallInteger, nullable=False),
    Column("note", Text, nullable=True),
    Column("actor", String(128), nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=True),
)

device_status = Table(
    "device_status",
    metadata,
    Column("device", String(64), primary_key=True),
    Column("vdom", String(64), primary_key=True),
    Column("last_attempt", BigInteger, nullable=True),
    Column("last_success", BigInteger, nullable=True),
    Column("error_kind", String(32), nullable=True),
    Column("error_message", Text, nullable=True),
    Column("entries", Integer, nullable=False, default=0),
    Column("rejected", Integer, nullable=False, default=0),
    Column("duration_ms", Integer, nullable=False, default=0),
    Column("consecutive_failures", Integer, nullable=False, default=0),
    Column("backoff_until", BigInteger, nullable=True),
    Column("backoff_token", String(32), nullable=True),
    Column("fingerprint", String(64), nullable=True),
)

feed_state = Table(
    "feed_state",
    metadata,
    Column("feed", String(64), primary_key=True),
    Column("held_since", BigInteger, nullable=True),  # mass-drop guard: serving the last good
    Column("hold_reason", Text, nullable=True),
    Column("approved", BigInteger, nullable=True),  # an operator released the hold then
    Column("approved_by", String(128), nullable=True),
    Column("pinned", Integer, nullable=True),  # version number served until released
    Column("pinned_by", String(128), nullable=True),
)

feed_versions = Table(
    "feed_versions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("feed", String(64), nullable=False),
    Column("number", Integer, nullable=False),
    Column("created", BigInteger, nullable=False),  # first published: the Last-Modified
    Column("etag", String(80), nullable=False),
    Column("entries", Integer, nullable=False),
    Column("added", Integer, nullable=False),
    Column("removed", Integer, nullable=False),
    Column("matched", Integer, nullable=False),
    Column("overflow", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("approver", String(128), nullable=True),
    Column("store_version", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=True),  # gzip of the plain feed; NULL once pruned
    UniqueConstraint("feed", "number"),
)

# The active set a full read found, as arrays (``publish/active.py``): a new process starts from
# it and reads only the offender rows stamped since its version. Derived: never copied.
active_snapshots = Table(
    "active_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", BigInteger, nullable=False),  # the store version it was read at
    Column("rows", BigInteger, nullable=False),  # offender rows in the store then
    Column("created", BigInteger, nullable=False),
    Column("body", LargeBinary, nullable=False),
)

feed_consumers = Table(
    "feed_consumers",
    metadata,
    Column("feed", String(64), primary_key=True),
    Column("address", String(45), primary_key=True),
    Column("user_agent", String(200), primary_key=True),
    Column("first_fetch", BigInteger, nullable=False),
    Column("last_fetch", BigInteger, nullable=False),
    Column("etag", String(80), nullable=True),
    Column("status", SmallInteger, nullable=False),
    Column("requests", BigInteger, nullable=False),
)

bans = Table(
    "bans",
    metadata,
    Column("network", String(49), primary_key=True),  # an address is a /32 or /128
    Column("sort_key", LargeBinary(17), nullable=False),
    Column("prefixlen", SmallInteger, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=True),  # NULL: until unbanned
    Column("provenance", String(16), nullable=False),  # manual | imported
    Column("actor", String(128), nullable=False),
    Column("note", Text, nullable=True),
    Index(None, "sort_key"),
)

replicas = Table(
    "replicas",
    metadata,
    Column("id", String(96), primary_key=True),
    Column("started", BigInteger, nullable=False),
    Column("heartbeat", BigInteger, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("device", String(64), primary_key=True),
    Column("vdom", String(64), primary_key=True),
    Column("owner", String(96), nullable=True),
    Column("since", BigInteger, nullable=False),
)

pushes = Table(
    "pushes",
    metadata,
    Column("device", String(64), primary_key=True),
    Column("ip", String(45), primary_key=True),
    Column("pushed", BigInteger, nullable=False),
    Column("expires", BigInteger, nullable=False),
)

# Dashboard users (`banfeed user add`): argon2 hashes, never passwords. ``session_epoch`` is
# carried in every session cookie; raising it (logout, a new password) voids older cookies.
users = Table(
    "users",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # viewer | admin
    Column("password_hash", Text, nullable=False),
    Column("created", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("session_epoch", Integer, nullable=False, server_default="0"),
)

# API tokens (`banfeed token add`): the SHA-256 of each token, never the token. A token is 256
# random bits, so a fast unsalted hash is enough (a guess costs the same as a brute force of
# SHA-256 itself); the unique hash is how a presented token is found.
api_tokens = Table(
    "api_tokens",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("role", String(16), nullable=False),  # viewer | admin
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("expires", BigInteger, nullable=True),
    Column("last_used", BigInteger, nullable=True),
    Column("note", Text, nullable=True),
)

# Reports sent to AbuseIPDB (`[abuseipdb]`), one row a report: when an address was last
# reported (so a restart does not report it again) and how many were sent today (the daily
# limit). ``categories`` is the comma-separated list sent; ``status``: reported | rejected.
abuseipdb_reports = Table(
    "abuseipdb_reports",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ip", String(45), nullable=False),
    Column("reported_at", BigInteger, nullable=False),
    Column("categories", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Index(None, "ip", "reported_at"),
    Index(None, "reported_at"),
)
