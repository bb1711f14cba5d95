"""The store version of each offender row's last change, indexed: in-memory active sets read the
rows changed since the version they reflect instead of every active offender; the newest active
set a full read found, as arrays, for new processes to start from.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "offenders",
        sa.Column("changed", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.create_index("ix_offenders_changed", "offenders", ["changed"])
    op.create_table(
        "active_snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_active_snapshots"),
    )


def downgrade() -> None:
    op.drop_table("active_snapshots")
    op.drop_index("ix_offenders_changed", table_name="offenders")
    with op.batch_alter_table("offenders") as batch:
        batch.drop_column("changed")
