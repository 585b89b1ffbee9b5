"""Each instance's count of consecutive failed actions, kept across keeper restarts.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

Before, the count lived in the keeper's memory only, so a keeper that kept restarting never
reached quarantine. Existing instances start at 0.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``instances.action_failures`` (0 for every instance already there)."""
    with op.batch_alter_table("instances") as batch:
        batch.add_column(sa.Column("action_failures", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    """Drop ``instances.action_failures``."""
    with op.batch_alter_table("instances") as batch:
        batch.drop_column("action_failures")
