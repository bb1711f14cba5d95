"""Initial schema: offenders, offenses, events, allowlist entries, device status, meta.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
    )
    op.create_table(
        "offenders",
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("sort_key", sa.LargeBinary(17), nullable=False),
        sa.Column("family", sa.SmallInteger(), nullable=False),
        sa.Column("first_offense", sa.BigInteger(), nullable=False),
        sa.Column("last_offense", sa.BigInteger(), nullable=False),
        sa.Column("offense_count", sa.Integer(), nullable=False),
        sa.Column("sources", sa.Text(), nullable=False),
        sa.Column("devices", sa.Text(), nullable=False),
        sa.Column("vdoms", sa.Text(), nullable=False),
        sa.Column("active_until", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("updated", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("ip", name="pk_offenders"),
        sa.UniqueConstraint("sort_key", name="uq_offenders_sort_key"),
    )
    op.create_index("ix_offenders_active_until", "offenders", ["active_until"])
    op.create_table(
        "offenses",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("vdom", sa.String(64), nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("seen", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_offenses"),
        sa.UniqueConstraint(
            "device", "vdom", "created", "ip", name="uq_offenses_device_vdom_created_ip"
        ),
    )
    op.create_index("ix_offenses_ip", "offenses", ["ip"])
    op.create_table(
        "events",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("time", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("ip", sa.String(45), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
    )
    op.create_index("ix_events_ip", "events", ["ip"])
    op.create_index("ix_events_time", "events", ["time"])
    op.create_table(
        "allow_entries",
        sa.Column("network", sa.String(49), nullable=False),
        sa.Column("sort_key", sa.LargeBinary(17), nullable=False),
        sa.Column("prefixlen", sa.SmallInteger(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("network", name="pk_allow_entries"),
    )
    op.create_table(
        "device_status",
        sa.Column("device", sa.String(64), nullable=False),
        sa.Column("vdom", sa.String(64), nullable=False),
        sa.Column("last_attempt", sa.BigInteger(), nullable=True),
        sa.Column("last_success", sa.BigInteger(), nullable=True),
        sa.Column("error_kind", sa.String(32), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("rejected", sa.Integer(), nullable=False),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("consecutive_failures", sa.Integer(), nullable=False),
        sa.Column("backoff_until", sa.BigInteger(), nullable=True),
        sa.Column("fingerprint", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("device", "vdom", name="pk_device_status"),
    )
    op.execute(sa.text("INSERT INTO meta (key, value) VALUES ('version', '0')"))


def downgrade() -> None:
    for table in ("device_status", "allow_entries", "events", "offenses", "offenders", "meta"):
        op.drop_table(table)
