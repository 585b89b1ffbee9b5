"""The keeper's SQL store: ``KeeperStore`` on SQLAlchemy Core, for SQLite files and PostgreSQL.

Every method is one transaction. Writes that another keeper process must notice (policy,
quarantine, actions) bump the change cursor in ``keeper_state`` and stamp the instance with it;
``changes_since`` reads those stamps. On SQLite a write transaction takes the write lock first
(``BEGIN IMMEDIATE``); on PostgreSQL the cursor row's lock orders the writers the same way.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from sqlalchemy import delete, exc, insert, select, update

from powerdrivers import InstanceReading, PowerState, parse_count, redact_uri
from powerdrivers.keeper import _store_ops as ops
from powerdrivers.keeper._errors import ActionInFlight, KeeperError, UnknownAction, UnknownInstance
from powerdrivers.keeper._model import (
    Action,
    ActionStatus,
    Cause,
    HistoryRecord,
    HostView,
    InstanceView,
    Policy,
    RecordKind,
)
from powerdrivers.keeper._paths import default_store_url
from powerdrivers.keeper._schema import OPEN_STATUSES, actions, history, hosts, instances
from powerdrivers.keeper._store_db import DEFAULT_RETENTION
from powerdrivers.keeper._store_migrate import upgrade
from powerdrivers.keeper._store_rows import (
    action,
    enum_value,
    history_record,
    host_view,
    instance_view,
    record_values,
)
from powerdrivers.keeper._store_vcpu import VcpuSampleStore
from powerdrivers.keeper._store_views import StoreViews

_FINAL = frozenset({ActionStatus.DONE, ActionStatus.FAILED, ActionStatus.INTERRUPTED})
_MAX_ID: Final = 2**63 - 1


def _now() -> datetime:
    return datetime.now(UTC)


class SqlStore(StoreViews, VcpuSampleStore):
    """``KeeperStore`` in an SQL database; opening it upgrades the database's schema to this version's.

    ``url`` is an SQLAlchemy URL (``sqlite:///path/keeper.db``, ``postgresql+psycopg://...``);
    its password is never shown. ``retention`` is how many history records are kept per
    instance (the oldest are trimmed as new ones arrive). Raises ``StoreError`` (bad URL, schema
    newer than this version), ``StoreUnavailable`` (the database cannot be reached) or
    ``InvalidOption`` (a retention that is not a whole number from 1 to 1,000,000).
    """

    def __init__(self, url: str, *, retention: int = DEFAULT_RETENTION) -> None:
        super().__init__(url, retention=retention)
        try:
            upgrade(self._engine, self._location)
        except BaseException:
            self._engine.dispose()
            raise

    # -- hosts -------------------------------------------------------------------------------
    def register_host(self, name: str, driver: str, uri: str | None) -> HostView:
        """Create or update a host (the URI is stored redacted). Raises ``StoreError``."""
        values = {"driver": driver, "uri": redact_uri(uri) if uri else None}
        with self._write(f"register host {name!r}") as connection:
            if connection.execute(select(hosts.c.name).where(hosts.c.name == name)).first():
                connection.execute(update(hosts).where(hosts.c.name == name).values(values))
            else:
                owner = self._owners.get(name)
                connection.execute(
                    insert(hosts).values(name=name, reachable=True, since=_now(), owner=owner, **values)
                )
            return host_view(connection.execute(select(hosts).where(hosts.c.name == name)).one())

    def set_host_reachable(self, name: str, reachable: bool, at: datetime, error: str | None = None) -> bool:
        """Record whether the host answers; when it stops, its instances turn stale (and back).

        Each instance gets a ``host`` record. Returns whether the host's reachability changed;
        when it did not (a keeper says so after every resync), only a read was done, no write
        lock taken. Raises ``KeeperError`` for an unregistered host.
        """
        with self._read(f"read host {name!r}") as connection:
            if bool(ops.host_row(connection, name).reachable) == reachable:
                return False
        with self._write(f"record host {name!r} reachability") as connection:
            if bool(ops.host_row(connection, name).reachable) == reachable:
                return False  # another process recorded it in between
            connection.execute(
                update(hosts)
                .where(hosts.c.name == name)
                .values(reachable=reachable, since=at, error=None if reachable else error)
            )
            connection.execute(update(instances).where(instances.c.host == name).values(stale=not reachable))
            detail = "host answers again" if reachable else f"host unreachable: {error or 'no reason given'}"
            members = connection.execute(select(instances.c.id).where(instances.c.host == name)).scalars()
            for instance_id in list(members):
                ops.append(
                    connection, self._retention, instance_id, name, RecordKind.HOST, at, {"detail": detail}
                )
            return True

    def hosts(self) -> list[HostView]:
        """Every registered host, by name."""
        with self._read("read the hosts") as connection:
            return [host_view(row) for row in connection.execute(select(hosts).order_by(hosts.c.name))]

    # -- instances ---------------------------------------------------------------------------
    def instance(self, instance_id: str) -> InstanceView:
        """One instance's view, with its open action if any. Raises ``UnknownInstance``."""
        with self._read(f"read instance {instance_id!r}") as connection:
            return ops.view(connection, instance_id)

    def instances(self, host: str | None = None) -> list[InstanceView]:
        """Every instance (of one host, if given), by host then id."""
        query = select(instances).order_by(instances.c.host, instances.c.id)
        opened = select(actions).where(actions.c.status.in_(OPEN_STATUSES))
        if host is not None:
            query = query.where(instances.c.host == host)
            opened = opened.where(actions.c.host == host)
        with self._read("read the instances") as connection:
            in_flight = {row.instance_id: action(row) for row in connection.execute(opened)}
            return [instance_view(row, in_flight.get(row.id)) for row in connection.execute(query)]

    def record_observation(
        self,
        host: str,
        reading: InstanceReading,
        *,
        previous: PowerState | None,
        cause: Cause,
        operation: str | None = None,
        detail: str | None = None,
    ) -> HistoryRecord:
        """Store a changed reading and append its ``observed`` record, in one transaction.

        A new instance is created under ``manual``; the stored reading is not stale. Raises
        ``KeeperError`` when the host is not registered.
        """
        fields = record_values(
            {
                "from_state": previous,
                "to_state": reading.power_state,
                "transition": reading.transition,
                "native_state": reading.native_state,
                "native_reason": reading.native_reason,
                "cause": cause,
                "operation": operation,
                "detail": detail,
            }
        )
        with self._write(f"record an observation of {reading.id!r}") as connection:
            ops.host_row(connection, host)
            ops.store_reading(connection, host, reading)
            return ops.append(
                connection,
                self._retention,
                reading.id,
                host,
                RecordKind.OBSERVED,
                reading.observed_at,
                fields,
            )

    def record_vanished(self, host: str, instance_id: str, at: datetime) -> HistoryRecord:
        """Append a ``vanished`` record and forget the instance (its history stays readable)."""
        with self._write(f"record that {instance_id!r} vanished") as connection:
            row = ops.instance_row(connection, instance_id)
            fields = {"from_state": row.power_state, "cause": Cause.VANISHED.value}
            record = ops.append(
                connection, self._retention, instance_id, host, RecordKind.OBSERVED, at, fields
            )
            connection.execute(delete(instances).where(instances.c.id == instance_id))
            return record

    def set_policy(self, instance_id: str, policy: Policy, requested_by: str) -> InstanceView:
        """Change the desired policy and append a ``policy`` record naming who. Raises ``UnknownInstance``.

        Setting the policy an instance already has writes nothing.
        """
        wanted = enum_value(Policy, policy, "policy")
        with self._write(f"set the policy of {instance_id!r}") as connection:
            row = ops.instance_row(connection, instance_id)
            if row.policy != wanted:
                connection.execute(
                    update(instances).where(instances.c.id == instance_id).values(policy=wanted)
                )
                fields = {"requested_by": requested_by, "detail": f"{row.policy} -> {wanted}"}
                ops.append(
                    connection, self._retention, instance_id, row.host, RecordKind.POLICY, _now(), fields
                )
                ops.bump(connection, instance_id)
            return ops.view(connection, instance_id)

    def set_backoff(self, instance_id: str, failures: int, backoff_until: datetime | None) -> None:
        """Store the consecutive-failure count and the time before which no action is taken."""
        count = parse_count("failures", failures)
        with self._write(f"set the backoff of {instance_id!r}") as connection:
            ops.instance_row(connection, instance_id)
            connection.execute(
                update(instances)
                .where(instances.c.id == instance_id)
                .values(failures=count, backoff_until=backoff_until)
            )

    def set_action_failures(self, instance_id: str, count: int) -> None:
        """Store the instance's count of consecutive failed actions (kept across keeper restarts)."""
        checked = parse_count("action failures", count)
        with self._write(f"count the failed actions of {instance_id!r}") as connection:
            ops.instance_row(connection, instance_id)
            connection.execute(
                update(instances).where(instances.c.id == instance_id).values(action_failures=checked)
            )

    def quarantine(self, instance_id: str, fault: str, at: datetime) -> InstanceView:
        """Quarantine the instance (no more actions) with a fault text; appends a record."""
        with self._write(f"quarantine {instance_id!r}") as connection:
            row = ops.instance_row(connection, instance_id)
            if not (row.quarantined and row.fault == fault):
                connection.execute(
                    update(instances)
                    .where(instances.c.id == instance_id)
                    .values(quarantined=True, fault=fault)
                )
                ops.append(
                    connection,
                    self._retention,
                    instance_id,
                    row.host,
                    RecordKind.QUARANTINE,
                    at,
                    {"detail": fault},
                )
                ops.bump(connection, instance_id)
            return ops.view(connection, instance_id)

    def release_quarantine(self, instance_id: str, requested_by: str, at: datetime) -> InstanceView:
        """End a quarantine, resetting the failure count and backoff; appends a record.

        An instance not quarantined only has its failure counts and backoff reset (no record).
        Raises ``UnknownInstance``.
        """
        with self._write(f"release {instance_id!r} from quarantine") as connection:
            row = ops.instance_row(connection, instance_id)
            if row.quarantined or row.failures or row.action_failures or row.backoff_until is not None:
                connection.execute(
                    update(instances)
                    .where(instances.c.id == instance_id)
                    .values(quarantined=False, fault=None, failures=0, action_failures=0, backoff_until=None)
                )
                if row.quarantined:
                    fields = {"requested_by": requested_by, "detail": "released from quarantine"}
                    ops.append(
                        connection, self._retention, instance_id, row.host, RecordKind.QUARANTINE, at, fields
                    )
                ops.bump(connection, instance_id)
            return ops.view(connection, instance_id)

    # -- actions (intents) -------------------------------------------------------------------
    def open_action(
        self,
        instance_id: str,
        operation: str,
        options: Mapping[str, Any],
        requested_by: str,
        *,
        status: ActionStatus = ActionStatus.PENDING,
    ) -> Action:
        """Record an intent before anything is done (see ``KeeperStore.open_action``).

        Raises ``ActionInFlight`` when the instance has an open action (any process's),
        ``UnknownInstance``, ``KeeperError`` for a final status or options JSON cannot hold,
        ``StoreUnavailable`` when it cannot be written (then the caller must not act).
        """
        opening = ActionStatus(enum_value(ActionStatus, status, "status"))
        if opening in _FINAL:
            raise KeeperError(f"an action opens as pending or running, not {opening.value}")
        try:
            stored_options = json.loads(json.dumps(dict(options)))
        except (TypeError, ValueError) as problem:
            raise KeeperError(f"the options of {operation!r} cannot be stored: {problem}") from None
        with self._write(f"record an intent to {operation} {instance_id!r}") as connection:
            row = ops.instance_row(connection, instance_id)
            ops.refuse_in_flight(connection, instance_id)
            now = _now()
            values = {
                "instance_id": instance_id,
                "host": row.host,
                "operation": operation,
                "options": stored_options,
                "status": opening.value,
                "requested_by": requested_by,
                "requested_at": now,
                "started_at": now if opening is ActionStatus.RUNNING else None,
            }
            try:
                action_id = ops.inserted_id(connection.execute(insert(actions).values(values)))
            except exc.IntegrityError:
                # Another process opened one between our look and our insert (the unique index said so).
                raise ActionInFlight(f"instance {instance_id!r} already has an action in flight") from None
            ops.bump(connection, instance_id)
            return ops.action_by_id(connection, action_id)

    def start_action(self, action_id: int, at: datetime) -> Action:
        """Move a pending action to running. Raises ``KeeperError`` unless it is pending."""
        with self._write(f"start action {action_id}") as connection:
            current = ops.action_by_id(connection, action_id)
            if current.status is not ActionStatus.PENDING:
                raise KeeperError(
                    f"action {action_id} is {current.status.value}, not pending: it cannot start"
                )
            connection.execute(
                update(actions)
                .where(actions.c.id == action_id)
                .values(status=ActionStatus.RUNNING.value, started_at=at)
            )
            ops.bump(connection, current.instance_id)
            return ops.action_by_id(connection, action_id)

    def finish_action(
        self,
        action_id: int,
        status: ActionStatus,
        at: datetime,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Action:
        """Close an open action as done, failed or interrupted and append its ``action`` record.

        The record's outcome is ``outcome``, else the status; its detail is ``error``. Raises
        ``KeeperError`` for an open status, or an action already closed.
        """
        closing = ActionStatus(enum_value(ActionStatus, status, "status"))
        if closing not in _FINAL:
            raise KeeperError(f"an action closes as done, failed or interrupted, not {closing.value}")
        with self._write(f"finish action {action_id}") as connection:
            current = ops.action_by_id(connection, action_id)
            if current.status in _FINAL:
                raise KeeperError(f"action {action_id} is already {current.status.value}")
            connection.execute(
                update(actions)
                .where(actions.c.id == action_id)
                .values(status=closing.value, ended_at=at, outcome=outcome, error=error)
            )
            fields = {
                "operation": current.operation,
                "outcome": outcome or closing.value,
                "requested_by": current.requested_by,
                "detail": error,
            }
            ops.append(
                connection, self._retention, current.instance_id, current.host, RecordKind.ACTION, at, fields
            )
            ops.bump(connection, current.instance_id)
            return ops.action_by_id(connection, action_id)

    def action(self, action_id: int) -> Action:
        """One action by id. Raises ``UnknownAction`` (an unknown id, or one no action can have)."""
        if isinstance(action_id, bool) or not isinstance(action_id, int) or not 0 < action_id <= _MAX_ID:
            raise UnknownAction(action_id)
        with self._read(f"read action {action_id}") as connection:
            return ops.action_by_id(connection, action_id)

    def open_actions(self, host: str | None = None) -> list[Action]:
        """Actions still pending or running (of one host, if given), oldest first."""
        query = select(actions).where(actions.c.status.in_(OPEN_STATUSES)).order_by(actions.c.id)
        if host is not None:
            query = query.where(actions.c.host == host)
        with self._read("read the open actions") as connection:
            return [action(row) for row in connection.execute(query)]

    # -- history and changes -----------------------------------------------------------------
    def append(self, instance_id: str, kind: RecordKind, at: datetime, **fields: Any) -> HistoryRecord:
        """Append a history record of any kind (fields as in ``HistoryRecord``).

        Raises ``UnknownInstance``, or ``KeeperError`` naming a field that is unknown or of a bad value.
        """
        record_kind = RecordKind(enum_value(RecordKind, kind, "kind"))
        values = record_values(fields)
        with self._write(f"append to the history of {instance_id!r}") as connection:
            row = ops.instance_row(connection, instance_id)
            return ops.append(connection, self._retention, instance_id, row.host, record_kind, at, values)

    def history(self, instance_id: str, limit: int = 100, before: int | None = None) -> list[HistoryRecord]:
        """Return the instance's records, newest first; ``before`` (a record id) pages back.

        A vanished instance's history stays readable. Raises ``UnknownInstance`` when the store
        has neither the instance nor any record of it.
        """
        count = parse_count("limit", limit, minimum=1)
        query = select(history).where(history.c.instance_id == instance_id)
        if before is not None:
            query = query.where(history.c.id < parse_count("before", before, maximum=_MAX_ID))
        with self._read(f"read the history of {instance_id!r}") as connection:
            rows = connection.execute(query.order_by(history.c.id.desc()).limit(count)).all()
            if not rows and not ops.is_known(connection, instance_id):
                raise UnknownInstance(instance_id)
            return [history_record(row) for row in rows]

    def changes_since(self, cursor: int) -> tuple[int, list[str]]:
        """Return the new cursor and the ids of instances whose policy, quarantine or actions changed."""
        after = parse_count("cursor", cursor, maximum=_MAX_ID)
        query = select(instances.c.id, instances.c.change_seq).where(instances.c.change_seq > after)
        with self._read("read the changes") as connection:
            rows = connection.execute(query.order_by(instances.c.change_seq)).all()
        return (rows[-1].change_seq if rows else after), [row.id for row in rows]


def open_store(url: str | None = None, *, retention: int = DEFAULT_RETENTION) -> SqlStore:
    """Open the keeper's store at ``url``, else ``POWERDRIVERS_STORE``, else the default SQLite file."""
    return SqlStore(url if url is not None else default_store_url(), retention=retention)
