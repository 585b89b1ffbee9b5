"""Rows of the store's tables as the keeper's values, and history fields checked before writing."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import Row

from powerdrivers import PowerState, Transition
from powerdrivers.keeper._errors import KeeperError
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

#: The fields a history record is appended with (id, instance, host, time and kind are given apart).
_RECORD_ENUMS: Final[dict[str, type[StrEnum]]] = {
    "from_state": PowerState,
    "to_state": PowerState,
    "cause": Cause,
}
_STATES: Final = {state.value: state for state in PowerState}
_KINDS: Final = {kind.value: kind for kind in RecordKind}
_CAUSES: Final = {cause.value: cause for cause in Cause}
RECORD_FIELDS: Final = frozenset(
    f.name
    for f in dataclasses.fields(HistoryRecord)
    if f.name not in {"id", "instance_id", "host", "time", "kind"}
)


def record_values(fields: Mapping[str, Any]) -> dict[str, str | None]:
    """Return a history record's extra fields as column values. Raises ``KeeperError`` naming a bad one."""
    unknown = sorted(set(fields) - RECORD_FIELDS)
    if unknown:
        raise KeeperError(
            f"a history record has no field {unknown[0]!r} (it has {', '.join(sorted(RECORD_FIELDS))})"
        )
    values: dict[str, str | None] = {}
    for name, value in fields.items():
        if value is None:
            values[name] = None
        elif name in _RECORD_ENUMS:
            values[name] = enum_value(_RECORD_ENUMS[name], value, name)
        elif isinstance(value, str):
            values[name] = value
        else:
            raise KeeperError(f"a history record's {name} must be text, not {type(value).__name__}")
    return values


def enum_value(kind: type[StrEnum], value: object, name: str) -> str:
    """Return ``value`` (a member or its text) as the member's value. Raises ``KeeperError``."""
    try:
        return kind(str(value)).value
    except ValueError:
        choices = ", ".join(member.value for member in kind)
        raise KeeperError(f"{name} must be one of {choices}, not {value!r}") from None


def host_view(row: Row[Any]) -> HostView:
    """Return a ``hosts`` row as a ``HostView``."""
    return HostView(
        name=row.name,
        driver=row.driver,
        uri=row.uri,
        reachable=bool(row.reachable),
        since=row.since,
        error=row.error,
        owner=row.owner,
    )


def action(row: Row[Any]) -> Action:
    """Return an ``actions`` row as an ``Action``."""
    return Action(
        id=row.id,
        instance_id=row.instance_id,
        host=row.host,
        operation=row.operation,
        options=dict(row.options or {}),
        status=ActionStatus(row.status),
        requested_by=row.requested_by,
        requested_at=row.requested_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        outcome=row.outcome,
        error=row.error,
    )


def instance_view(row: Row[Any], open_action: Action | None) -> InstanceView:
    """Return an ``instances`` row (and its open action, if any) as an ``InstanceView``."""
    return InstanceView(
        id=row.id,
        host=row.host,
        name=row.name,
        power_state=PowerState(row.power_state),
        transition=Transition(row.transition) if row.transition else None,
        native_state=row.native_state,
        native_reason=row.native_reason,
        observed_at=row.observed_at,
        policy=Policy(row.policy),
        stale=bool(row.stale),
        quarantined=bool(row.quarantined),
        fault=row.fault,
        failures=row.failures,
        backoff_until=row.backoff_until,
        in_flight=open_action,
        action_failures=row.action_failures,
    )


def history_record(row: Sequence[Any]) -> HistoryRecord:
    """Return a ``history`` row (all its columns, in the table's order) as a ``HistoryRecord``.

    Unpacked by position and with the enums looked up in plain dicts: a history page builds
    hundreds of these, and this is most of the time it takes.
    """
    (
        record_id,
        instance_id,
        host,
        time,
        kind,
        from_state,
        to_state,
        native_state,
        native_reason,
        cause,
        operation,
        outcome,
        requested_by,
        detail,
    ) = row
    return HistoryRecord(
        id=record_id,
        instance_id=instance_id,
        host=host,
        time=time,
        kind=_KINDS[kind],
        from_state=_STATES[from_state] if from_state else None,
        to_state=_STATES[to_state] if to_state else None,
        native_state=native_state,
        native_reason=native_reason,
        cause=_CAUSES[cause] if cause else None,
        operation=operation,
        outcome=outcome,
        requested_by=requested_by,
        detail=detail,
    )
