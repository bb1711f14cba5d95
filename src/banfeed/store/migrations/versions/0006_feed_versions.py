"""Published feed versions (history, diff, rollback); feed_state keeps holds, approvals, pins;
the token a 401 back-off holds for.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(80), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("added", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("overflow", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("approver", sa.String(128), nullable=True),
        sa.Column("store_version", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_feed_versions"),
        sa.UniqueConstraint("feed", "number", name="uq_feed_versions_feed_number"),
    )
    # What a feed served is now its newest version; the counts moved there. A hold and its
    # approval stay; a pin is new.
    with op.batch_alter_table("feed_state") as batch:
        for column in ("etag", "entries", "matched", "overflow", "changed"):
            batch.drop_column(column)
        batch.add_column(sa.Column("approved_by", sa.String(128), nullable=True))
        batch.add_column(sa.Column("pinned", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("pinned_by", sa.String(128), nullable=True))
    # A 401 back-off holds for the token refused, not the device.
    op.add_column("device_status", sa.Column("backoff_token", sa.String(32), nullable=True))


def downgrade() -> None:
    op.drop_column("device_status", "backoff_token")
    with op.batch_alter_table("feed_state") as batch:
        for column in ("pinned_by", "pinned", "approved_by"):
            batch.drop_column(column)
        batch.add_column(sa.Column("etag", sa.String(80), nullable=False, server_default=""))
        batch.add_column(sa.Column("entries", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("matched", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("overflow", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("changed", sa.BigInteger(), nullable=False, server_default="0"))
    op.drop_table("feed_versions")
