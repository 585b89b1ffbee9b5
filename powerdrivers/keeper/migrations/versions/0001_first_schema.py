"""The keeper's first schema: hosts, instances, actions (intents), history and the change cursor.

Revision ID: 0001
Revises:
Create Date: 2026-12-02

Spelled out here rather than built from ``_schema.metadata``: a migration is a fixed step, and
the metadata moves on with later revisions. A test checks that head matches the metadata.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_OPEN = ("pending", "running")


def _id() -> sa.types.TypeEngine[int]:
    """Return the autoincrementing key type: BIGINT, but SQLite's rowid must be INTEGER."""
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _time() -> sa.DateTime:
    """Return the time type (the store keeps UTC)."""
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    """Create the tables and indexes, and the change cursor's one row."""
    state = op.create_table(
        "keeper_state",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
    )
    op.bulk_insert(state, [{"id": 1, "change_seq": 0}])
    op.create_table(
        "hosts",
        sa.Column("name", sa.String(255), primary_key=True),
        sa.Column("driver", sa.String(255), nullable=False),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("reachable", sa.Boolean(), nullable=False),
        sa.Column("since", _time(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
    )
    op.create_table(
        "instances",
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("host", sa.String(255), sa.ForeignKey("hosts.name"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("power_state", sa.String(32), nullable=False),
        sa.Column("transition", sa.String(32), nullable=True),
        sa.Column("native_state", sa.Text(), nullable=False),
        sa.Column("native_reason", sa.Text(), nullable=True),
        sa.Column("observed_at", _time(), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("stale", sa.Boolean(), nullable=False),
        sa.Column("quarantined", sa.Boolean(), nullable=False),
        sa.Column("fault", sa.Text(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("backoff_until", _time(), nullable=True),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("change_seq", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_instances_host", "instances", ["host"])
    op.create_index("ix_instances_change_seq", "instances", ["change_seq"])
    op.create_table(
        "actions",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("operation", sa.String(255), nullable=False),
        sa.Column("options", sa.JSON(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("requested_by", sa.String(255), nullable=False),
        sa.Column("requested_at", _time(), nullable=False),
        sa.Column("started_at", _time(), nullable=True),
        sa.Column("ended_at", _time(), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
    )
    op.create_index("ix_actions_instance_id", "actions", ["instance_id"])
    status = sa.column("status", sa.String(32))
    op.create_index(
        "ux_actions_one_open",
        "actions",
        ["instance_id"],
        unique=True,
        sqlite_where=status.in_(_OPEN),
        postgresql_where=status.in_(_OPEN),
    )
    op.create_table(
        "history",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("instance_id", sa.String(255), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("time", _time(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_state", sa.String(32), nullable=True),
        sa.Column("to_state", sa.String(32), nullable=True),
        sa.Column("native_state", sa.Text(), nullable=True),
        sa.Column("native_reason", sa.Text(), nullable=True),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("operation", sa.String(255), nullable=True),
        sa.Column("outcome", sa.Text(), nullable=True),
        sa.Column("requested_by", sa.String(255), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
    )
    op.create_index("ix_history_instance_id_id", "history", ["instance_id", "id"])


def downgrade() -> None:
    """Drop everything the upgrade created."""
    op.drop_table("history")
    op.drop_table("actions")
    op.drop_table("instances")
    op.drop_table("hosts")
    op.drop_table("keeper_state")
