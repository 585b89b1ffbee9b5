"""Instances indexed by (host, id): the order the instance listing pages in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02

A page of instances (``instances_page``) is a keyset walk ordered by host then id, after the
previous page's last (host, id); this index makes each page a short range scan, with or without
a host filter. It replaces the index on host alone, whose lookups it serves as well.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Replace ``ix_instances_host`` by ``ix_instances_host_id`` on (host, id)."""
    op.create_index("ix_instances_host_id", "instances", ["host", "id"])
    op.drop_index("ix_instances_host", table_name="instances")


def downgrade() -> None:
    """Bring back the index on host alone."""
    op.create_index("ix_instances_host", "instances", ["host"])
    op.drop_index("ix_instances_host_id", table_name="instances")
