"""The store's steps inside one transaction: look up rows, bump the change cursor, append history.

Each takes the transaction's connection; ``_store.py`` composes them into the ``KeeperStore``
methods, one transaction each.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, CursorResult, Row, delete, func, insert, select, update

from powerdrivers import InstanceReading, PowerState, Transition
from powerdrivers.keeper._errors import ActionInFlight, KeeperError, UnknownAction, UnknownInstance
from powerdrivers.keeper._model import Action, HistoryRecord, InstanceView, Policy, RecordKind
from powerdrivers.keeper._schema import OPEN_STATUSES, actions, history, hosts, instances, store_state
from powerdrivers.keeper._store_rows import action, enum_value, history_record, instance_view


def inserted_id(result: CursorResult[Any]) -> int:
    """Return the primary key a single-row insert gave its row."""
    key = result.inserted_primary_key
    assert key is not None, "an insert of one row always has a primary key"
    return int(key[0])


def instance_row(connection: Connection, instance_id: str) -> Row[Any]:
    """Return the instance's row. Raises ``UnknownInstance``."""
    row = connection.execute(select(instances).where(instances.c.id == instance_id)).first()
    if row is None:
        raise UnknownInstance(instance_id)
    return row


def host_row(connection: Connection, name: str) -> Row[Any]:
    """Return the host's row. Raises ``KeeperError`` for a host never registered."""
    row = connection.execute(select(hosts).where(hosts.c.name == name)).first()
    if row is None:
        raise KeeperError(f"no host named {name!r} is registered in the keeper's store")
    return row


def store_reading(connection: Connection, host: str, reading: InstanceReading) -> None:
    """Store the reading as the instance's current one (not stale); a new instance starts under ``manual``."""
    values = {
        "host": host,
        "name": reading.name,
        "power_state": enum_value(PowerState, reading.power_state, "power_state"),
        "transition": enum_value(Transition, reading.transition, "transition")
        if reading.transition
        else None,
        "native_state": reading.native_state,
        "native_reason": reading.native_reason,
        "observed_at": reading.observed_at,
        "stale": False,
    }
    if is_known(connection, reading.id):
        connection.execute(update(instances).where(instances.c.id == reading.id).values(values))
        return
    # History outlives an instance that vanished: one that comes back counts what is still kept.
    kept = select(func.count()).select_from(history).where(history.c.instance_id == reading.id)
    connection.execute(
        insert(instances).values(
            id=reading.id,
            policy=Policy.MANUAL.value,
            quarantined=False,
            failures=0,
            action_failures=0,
            records=connection.execute(kept).scalar_one(),
            change_seq=0,
            **values,
        )
    )


def is_known(connection: Connection, instance_id: str) -> bool:
    """Return whether the store has the instance (not whether it has history of it)."""
    return connection.execute(select(instances.c.id).where(instances.c.id == instance_id)).first() is not None


def open_action_row(connection: Connection, instance_id: str) -> Row[Any] | None:
    """Return the instance's open action's row, if it has one (it has at most one)."""
    return connection.execute(
        select(actions).where(actions.c.instance_id == instance_id, actions.c.status.in_(OPEN_STATUSES))
    ).first()


def view(connection: Connection, instance_id: str) -> InstanceView:
    """Return the instance's view with its open action. Raises ``UnknownInstance``."""
    row = instance_row(connection, instance_id)
    opened = open_action_row(connection, instance_id)
    return instance_view(row, action(opened) if opened else None)


def action_by_id(connection: Connection, action_id: int) -> Action:
    """Return one action. Raises ``UnknownAction`` for an unknown id."""
    row = connection.execute(select(actions).where(actions.c.id == action_id)).first()
    if row is None:
        raise UnknownAction(action_id)
    return action(row)


def refuse_in_flight(connection: Connection, instance_id: str) -> None:
    """Raise ``ActionInFlight`` (naming it) when the instance has an open action."""
    opened = open_action_row(connection, instance_id)
    if opened is not None:
        raise ActionInFlight(
            f"instance {instance_id!r} already has an action in flight: {opened.operation} "
            f"(action {opened.id}, {opened.status}, requested by {opened.requested_by})"
        )


def bump(connection: Connection, instance_id: str) -> None:
    """Advance the change cursor and stamp the instance with it.

    The cursor row's lock is held to the end of the transaction, so stamps are committed in
    cursor order and a reader never skips one committed late.
    """
    connection.execute(
        update(store_state).where(store_state.c.id == 1).values(change_seq=store_state.c.change_seq + 1)
    )
    seq = connection.execute(select(store_state.c.change_seq).where(store_state.c.id == 1)).scalar_one()
    connection.execute(update(instances).where(instances.c.id == instance_id).values(change_seq=seq))


def append(
    connection: Connection,
    retention: int,
    instance_id: str,
    host: str,
    kind: RecordKind,
    at: datetime,
    fields: Mapping[str, str | None],
) -> HistoryRecord:
    """Insert a history record, then trim the instance's oldest records beyond ``retention``.

    The instance row counts its records, so trimming deletes only the few oldest (usually one)
    through the history index instead of counting or scanning the instance's history.
    """
    values = {"instance_id": instance_id, "host": host, "time": at, "kind": kind.value, **fields}
    record_id = inserted_id(connection.execute(insert(history).values(values)))
    where = instances.c.id == instance_id
    connection.execute(update(instances).where(where).values(records=instances.c.records + 1))
    kept = connection.execute(select(instances.c.records).where(where)).scalar()
    if kept is not None and kept > retention:
        oldest = (
            select(history.c.id)
            .where(history.c.instance_id == instance_id)
            .order_by(history.c.id)
            .limit(kept - retention)
        )
        connection.execute(delete(history).where(history.c.id.in_(oldest.scalar_subquery())))
        connection.execute(update(instances).where(where).values(records=retention))
    return history_record(connection.execute(select(history).where(history.c.id == record_id)).one())
