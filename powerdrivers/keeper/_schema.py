"""The store's tables, as SQLAlchemy Core metadata: what the migrations build, and what queries use.

Written for SQLite and PostgreSQL alike: enums are stored as their text values (no database enum
types, no CHECK constraints to migrate), times as UTC, and the one-open-action rule is a partial
unique index, which both databases enforce across processes. What a hypervisor or a driver says
(names, native states and reasons, outcomes) is unbounded text: PostgreSQL enforces a VARCHAR's
length where SQLite does not, and a long VM name must not fail on one database only.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from powerdrivers.keeper._errors import KeeperError

#: The Alembic revision the tables below are at; the store upgrades any older database to it.
SCHEMA_REVISION: Final = "0006"

#: The action statuses that count as open (at most one such action per instance).
OPEN_STATUSES: Final = ("pending", "running")

#: SQLite's integer primary keys are only its rowid (hence autoincrementing) when declared INTEGER.
_Id = BigInteger().with_variant(Integer(), "sqlite")
_NAME = 255
_ENUM = 32


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC time in any database (SQLite keeps no zone: UTC is written and assumed)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse a naive time (its zone would be a guess); store it converted to UTC."""
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise KeeperError(f"times given to the keeper's store must be timezone-aware, not {value}")
        converted = value.astimezone(UTC)
        return converted.replace(tzinfo=None) if dialect.name == "sqlite" else converted

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return the stored time as timezone-aware UTC."""
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

#: One row: the change cursor, bumped (under the row's lock) by every write another keeper must see.
store_state = Table(
    "keeper_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("change_seq", BigInteger, nullable=False),
)

hosts = Table(
    "hosts",
    metadata,
    Column("name", String(_NAME), primary_key=True),
    Column("driver", String(_NAME), nullable=False),
    Column("uri", Text, nullable=True),
    Column("reachable", Boolean, nullable=False),
    Column("since", UtcDateTime, nullable=False),
    Column("error", Text, nullable=True),
    Column("owner", String(_NAME), nullable=True),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(_NAME), primary_key=True),
    Column("host", String(_NAME), ForeignKey("hosts.name"), nullable=False),
    Column("name", Text, nullable=False),
    Column("power_state", String(_ENUM), nullable=False),
    Column("transition", String(_ENUM), nullable=True),
    Column("native_state", Text, nullable=False),
    Column("native_reason", Text, nullable=True),
    Column("observed_at", UtcDateTime, nullable=False),
    Column("policy", String(_ENUM), nullable=False),
    Column("stale", Boolean, nullable=False),
    Column("quarantined", Boolean, nullable=False),
    Column("fault", Text, nullable=True),
    Column("failures", Integer, nullable=False),
    Column("backoff_until", UtcDateTime, nullable=True),
    # Consecutive failed actions (not crashes): quarantine comes at the keeper's threshold.
    Column("action_failures", Integer, nullable=False, server_default="0"),
    # How many history records the instance has: retention trims from the oldest end in O(1).
    Column("records", Integer, nullable=False),
    Column("change_seq", BigInteger, nullable=False),
    # Pages of instances walk (host, id) in order; lookups by host use it too.
    Index("ix_instances_host_id", "host", "id"),
    Index("ix_instances_change_seq", "change_seq"),
)

# Each instance's JSON object (``InstanceView.to_dict()``, ``in_flight`` null), written by the
# database's own triggers on ``instances`` (migration 0006) in the transaction of every change:
# a page of ``GET /v1/instances`` reads it in (host, id) order and makes no JSON (benchmark S1).
# The filters' columns are copied too, so a filtered page reads this table alone.
instance_json = Table(
    "instance_json",
    metadata,
    Column("host", String(_NAME), primary_key=True),
    Column("id", String(_NAME), primary_key=True),
    Column("power_state", String(_ENUM), nullable=False),
    Column("policy", String(_ENUM), nullable=False),
    Column("document", Text, nullable=False),
    sqlite_with_rowid=False,
)

# No foreign key to instances: an instance's actions and history outlive it (it may vanish).
actions = Table(
    "actions",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("instance_id", String(_NAME), nullable=False),
    Column("host", String(_NAME), nullable=False),
    Column("operation", String(_NAME), nullable=False),
    Column("options", JSON, nullable=False),
    Column("status", String(_ENUM), nullable=False),
    Column("requested_by", String(_NAME), nullable=False),
    Column("requested_at", UtcDateTime, nullable=False),
    Column("started_at", UtcDateTime, nullable=True),
    Column("ended_at", UtcDateTime, nullable=True),
    Column("outcome", Text, nullable=True),
    Column("error", Text, nullable=True),
    Index("ix_actions_instance_id", "instance_id"),
)

history = Table(
    "history",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("instance_id", String(_NAME), nullable=False),
    Column("host", String(_NAME), nullable=False),
    Column("time", UtcDateTime, nullable=False),
    Column("kind", String(_ENUM), nullable=False),
    Column("from_state", String(_ENUM), nullable=True),
    Column("to_state", String(_ENUM), nullable=True),
    Column("native_state", Text, nullable=True),
    Column("native_reason", Text, nullable=True),
    Column("cause", String(_ENUM), nullable=True),
    Column("operation", String(_NAME), nullable=True),
    Column("outcome", Text, nullable=True),
    Column("requested_by", String(_NAME), nullable=True),
    Column("detail", Text, nullable=True),
    # Last, as migration 0004 added it: rows are unpacked by position in the table's order.
    Column("transition", String(_ENUM), nullable=True),
    # One instance's records newest first, and paging back by id, are walks of this index.
    Index("ix_history_instance_id_id", "instance_id", "id"),
)

# One row per VCPU per sampling round. No foreign key: samples outlive their instance, as history
# does; retention is by age (``at``), trimmed from the oldest end through ``ix_vcpu_samples_at``.
vcpu_samples = Table(
    "vcpu_samples",
    metadata,
    Column("id", _Id, primary_key=True, autoincrement=True),
    Column("instance_id", String(_NAME), nullable=False),
    Column("host", String(_NAME), nullable=False),
    Column("vcpu", Integer, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Column("window_s", Float, nullable=False),
    Column("running", Float, nullable=False),
    Column("blocked", Float, nullable=False),
    Column("waiting", Float, nullable=False),
    # NULL: the driver cannot measure it (never a made-up 0).
    Column("halted", Float, nullable=True),
    Column("halt_exits", Float, nullable=True),
    Column("io_exits", Float, nullable=True),
    Column("mmio_exits", Float, nullable=True),
    # One instance's samples over a period, in time order, are a walk of this index.
    Index("ix_vcpu_samples_instance_id_at", "instance_id", "at"),
    Index("ix_vcpu_samples_at", "at"),
)

# The partial unique index: one open action per instance, enforced by the database itself, so two
# processes racing to act on one instance cannot both record an intent.
Index(
    "ux_actions_one_open",
    actions.c.instance_id,
    unique=True,
    sqlite_where=actions.c.status.in_(OPEN_STATUSES),
    postgresql_where=actions.c.status.in_(OPEN_STATUSES),
)
