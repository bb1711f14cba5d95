"""Reports sent to AbuseIPDB: which address, when, with which categories, and the outcome.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-20
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "abuseipdb_reports",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("ip", sa.String(45), nullable=False),
        sa.Column("reported_at", sa.BigInteger(), nullable=False),
        sa.Column("categories", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_abuseipdb_reports"),
    )
    op.create_index(
        "ix_abuseipdb_reports_ip_reported_at", "abuseipdb_reports", ["ip", "reported_at"]
    )
    op.create_index("ix_abuseipdb_reports_reported_at", "abuseipdb_reports", ["reported_at"])


def downgrade() -> None:
    op.drop_table("abuseipdb_reports")
