"""Each instance's JSON object, kept by the database: ``instance_json`` and its triggers.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

``GET /v1/instances`` is the service's largest read. Making each instance's JSON per request
cost more than reading its row (benchmark S1), so the database keeps it: triggers on
``instances`` write the object (``InstanceView.to_dict()`` with ``in_flight`` null, key for key)
into ``instance_json`` in the same transaction as every change of a column it shows, and a page
is then a walk of one narrow table in (host, id) order. Being triggers, they cover every writer
(every store method, an operator's own SQL) and cannot drift from the row.

The objects are frozen here, as migrations are: a later change to the instance object replaces
the triggers in a migration of its own. A migration that rebuilds ``instances`` (SQLite's batch
mode) drops its triggers and must create them again.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

#: The object's keys in ``InstanceView.to_dict()``'s order; each is its column's name.
_KEYS = (
    "id",
    "name",
    "host",
    "power_state",
    "transition",
    "native_state",
    "native_reason",
    "observed_at",
    "policy",
    "stale",
    "quarantined",
    "fault",
    "failures",
    "action_failures",
    "backoff_until",
)
_TIMES = frozenset({"observed_at", "backoff_until"})
_FLAGS = frozenset({"stale", "quarantined"})
#: An update of any other column (``records``, ``change_seq``) leaves the object as it was.
_SHOWN = ", ".join(_KEYS)


def _sqlite_object(row: str) -> str:
    """SQLite's expression of the object of ``row`` (``NEW`` in a trigger, the table in the backfill)."""
    parts = []
    for key in _KEYS:
        column = f"{row}.{key}"
        if key in _TIMES:
            # SQLAlchemy stores SQLite times as "YYYY-MM-DD HH:MM:SS.ffffff" (UTC, six digits);
            # isoformat leaves a zero fraction out, and ".000000" can only be the fraction.
            value = f"replace(replace({column}, '.000000', ''), ' ', 'T') || '+00:00'"
        elif key in _FLAGS:
            value = f"CASE WHEN {column} THEN json('true') ELSE json('false') END"
        else:
            value = column
        parts.append(f"'{key}', {value}")
    parts.append("'in_flight', NULL")
    return f"json_object({', '.join(parts)})"


def _postgresql_columns(row: str) -> str:
    """PostgreSQL's select list of the object of ``row``, for ``row_to_json`` (compact, in order)."""
    columns = []
    for key in _KEYS:
        column = f"{row}.{key}"
        if key in _TIMES:
            # to_char in UTC with the fraction, which isoformat leaves out when it is zero.
            column = (
                f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US'), "
                "'.000000', '') || '+00:00'"
            )
        columns.append(f"{column} AS {key}")
    columns.append("NULL::json AS in_flight")
    return ", ".join(columns)


def _sqlite_triggers() -> list[str]:
    # OR REPLACE: a row left over by a writer the triggers did not see is overwritten, never a
    # constraint error that would stop the store recording the instance.
    kept = "INSERT OR REPLACE INTO instance_json (host, id, power_state, policy, document) VALUES "
    values = f"(NEW.host, NEW.id, NEW.power_state, NEW.policy, {_sqlite_object('NEW')})"
    return [
        f"CREATE TRIGGER instance_json_insert AFTER INSERT ON instances BEGIN {kept}{values}; END",
        f"CREATE TRIGGER instance_json_update AFTER UPDATE OF {_SHOWN} ON instances BEGIN "
        "DELETE FROM instance_json WHERE host = OLD.host AND id = OLD.id; "
        f"{kept}{values}; END",
        "CREATE TRIGGER instance_json_delete AFTER DELETE ON instances BEGIN "
        "DELETE FROM instance_json WHERE host = OLD.host AND id = OLD.id; END",
    ]


def _postgresql_triggers() -> list[str]:
    # The functions keep the schema search path of the migration, whatever a writer's session says.
    return [
        "CREATE FUNCTION instance_json_keep() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path FROM CURRENT AS $$ BEGIN "
        "IF TG_OP <> 'INSERT' THEN "
        "DELETE FROM instance_json WHERE host = OLD.host AND id = OLD.id; "
        "END IF; "
        "IF TG_OP <> 'DELETE' THEN "
        "INSERT INTO instance_json (host, id, power_state, policy, document) "
        f"SELECT NEW.host, NEW.id, NEW.power_state, NEW.policy, row_to_json(shown)::text "
        f"FROM (SELECT {_postgresql_columns('NEW')}) AS shown "
        # A row left over by a writer the triggers did not see is overwritten (as in SQLite).
        "ON CONFLICT (host, id) DO UPDATE SET power_state = EXCLUDED.power_state, "
        "policy = EXCLUDED.policy, document = EXCLUDED.document; "
        "END IF; "
        "RETURN NULL; END $$",
        "CREATE TRIGGER instance_json_insert_delete AFTER INSERT OR DELETE ON instances "
        "FOR EACH ROW EXECUTE FUNCTION instance_json_keep()",
        f"CREATE TRIGGER instance_json_update AFTER UPDATE OF {_SHOWN} ON instances "
        "FOR EACH ROW EXECUTE FUNCTION instance_json_keep()",
        # TRUNCATE fires no row trigger: its own empties the copy too.
        "CREATE FUNCTION instance_json_clear() RETURNS trigger LANGUAGE plpgsql "
        "SET search_path FROM CURRENT AS $$ BEGIN DELETE FROM instance_json; RETURN NULL; END $$",
        "CREATE TRIGGER instance_json_truncate AFTER TRUNCATE ON instances "
        "FOR EACH STATEMENT EXECUTE FUNCTION instance_json_clear()",
    ]


def upgrade() -> None:
    """Create ``instance_json``, fill it from ``instances``, and the triggers that keep it."""
    sqlite = op.get_bind().dialect.name == "sqlite"
    op.create_table(
        "instance_json",
        sa.Column("host", sa.String(255), primary_key=True),
        sa.Column("id", sa.String(255), primary_key=True),
        sa.Column("power_state", sa.String(32), nullable=False),
        sa.Column("policy", sa.String(32), nullable=False),
        sa.Column("document", sa.Text(), nullable=False),
        # SQLite keeps the rows in (host, id) order, so a page is one range of one B-tree.
        sqlite_with_rowid=False,
    )
    if sqlite:
        op.execute(
            "INSERT INTO instance_json (host, id, power_state, policy, document) "
            f"SELECT host, id, power_state, policy, {_sqlite_object('instances')} FROM instances"
        )
        statements = _sqlite_triggers()
    else:
        # Processes of the older version may still be writing: no change of theirs may fall
        # between the fill and the triggers (writes wait; reads go on). SQLite's upgrade holds
        # the database's write lock throughout already.
        op.execute("LOCK TABLE instances IN SHARE ROW EXCLUSIVE MODE")
        op.execute(
            "INSERT INTO instance_json (host, id, power_state, policy, document) "
            "SELECT shown.host, shown.id, shown.power_state, shown.policy, row_to_json(shown)::text "
            f"FROM (SELECT {_postgresql_columns('instances')} FROM instances) AS shown"
        )
        statements = _postgresql_triggers()
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    """Drop the triggers, their functions (PostgreSQL) and ``instance_json``."""
    if op.get_bind().dialect.name == "sqlite":
        for name in ("instance_json_insert", "instance_json_update", "instance_json_delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {name}")
    else:
        op.execute("DROP TRIGGER IF EXISTS instance_json_insert_delete ON instances")
        op.execute("DROP TRIGGER IF EXISTS instance_json_update ON instances")
        op.execute("DROP TRIGGER IF EXISTS instance_json_truncate ON instances")
        op.execute("DROP FUNCTION IF EXISTS instance_json_keep()")
        op.execute("DROP FUNCTION IF EXISTS instance_json_clear()")
    op.drop_table("instance_json")
