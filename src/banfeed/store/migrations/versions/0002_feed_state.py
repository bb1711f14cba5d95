"""Feed state (ETag and when it changed) and the last fetch of each feed consumer.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feed_state",
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("etag", sa.String(80), nullable=False),
        sa.Column("entries", sa.Integer(), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("overflow", sa.Integer(), nullable=False),
        sa.Column("changed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("feed", name="pk_feed_state"),
    )
    op.create_table(
        "feed_consumers",
        sa.Column("feed", sa.String(64), nullable=False),
        sa.Column("address", sa.String(45), nullable=False),
        sa.Column("user_agent", sa.String(200), nullable=False),
        sa.Column("first_fetch", sa.BigInteger(), nullable=False),
        sa.Column("last_fetch", sa.BigInteger(), nullable=False),
        sa.Column("etag", sa.String(80), nullable=True),
        sa.Column("status", sa.SmallInteger(), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("feed", "address", "user_agent", name="pk_feed_consumers"),
    )


def downgrade() -> None:
    op.drop_table("feed_consumers")
    op.drop_table("feed_state")
