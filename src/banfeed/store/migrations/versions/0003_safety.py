"""Manual bans, and the mass-drop guard's hold on feed_state.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "bans",
        sa.Column("network", sa.String(49), nullable=False),
        sa.Column("sort_key", sa.LargeBinary(17), nullable=False),
        sa.Column("prefixlen", sa.SmallInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("expires", sa.BigInteger(), nullable=True),
        sa.Column("provenance", sa.String(16), nullable=False),
        sa.Column("actor", sa.String(128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("network", name="pk_bans"),
    )
    op.create_index("ix_bans_sort_key", "bans", ["sort_key"])
    with op.batch_alter_table("feed_state") as batch:
        batch.add_column(sa.Column("held_since", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("hold_reason", sa.Text(), nullable=True))
        batch.add_column(sa.Column("approved", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("feed_state") as batch:
        batch.drop_column("approved")
        batch.drop_column("hold_reason")
        batch.drop_column("held_since")
    op.drop_index("ix_bans_sort_key", "bans")
    op.drop_table("bans")
