"""VCPU samples: how each VCPU of a running instance spent each sampling window.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

The keeper samples the VCPUs of its hosts' running instances every ``vcpu_sample_interval``
seconds and keeps the samples for ``vcpu_retention`` seconds (trimmed by ``at``).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _id() -> sa.types.TypeEngine[int]:
    """Return the autoincrementing key type: BIGINT, but SQLite's rowid must be INTEGER."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    """Create ``vcpu_samples`` and its indexes (by instance and time, and by time for trimming)."""
    op.create_table(
        "vcpu_samples",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("vcpu", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("window_s", sa.Float(), nullable=False),
        sa.Column("running", sa.Float(), nullable=False),
        sa.Column("blocked", sa.Float(), nullable=False),
        sa.Column("waiting", sa.Float(), nullable=False),
        sa.Column("halted", sa.Float(), nullable=True),
        sa.Column("halt_exits", sa.Float(), nullable=True),
        sa.Column("io_exits", sa.Float(), nullable=True),
        sa.Column("mmio_exits", sa.Float(), nullable=True),
    )
    op.create_index("ix_vcpu_samples_instance_id_at", "vcpu_samples", ["instance_id", "at"])
    op.create_index("ix_vcpu_samples_at", "vcpu_samples", ["at"])


def downgrade() -> None:
    """Drop ``vcpu_samples`` (and its indexes with it)."""
    op.drop_table("vcpu_samples")
