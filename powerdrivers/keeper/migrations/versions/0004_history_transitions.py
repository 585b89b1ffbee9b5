"""Each observed history record keeps the transition the instance was in.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

Before, a reading that only began a transition (running, shutting down) was recorded with its
native state alone, so a timeline drawn from the history could not show past transitions.
Records already there have none (NULL).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add ``history.transition`` (NULL for every record already there)."""
    with op.batch_alter_table("history") as batch:
        batch.add_column(sa.Column("transition", sa.String(32), nullable=True))


def downgrade() -> None:
    """Drop ``history.transition``."""
    with op.batch_alter_table("history") as batch:
        batch.drop_column("transition")
