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
    "transition": Transition,
}
_STATES: Final = {state.value: state for state in PowerState}
_KINDS: Final = {kind.value: kind for kind in RecordKind}
_CAUSES: Final = {cause.value: cause for cause in Cause}
_TRANSITIONS: Final = {transition.value: transition for transition in Transition}
_POLICIES: Final = {policy.value: policy for policy in Policy}
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


def instance_view(row: Sequence[Any], open_action: Action | None) -> InstanceView:
    """Return an ``instances`` row (all its columns, in the table's order) as an ``InstanceView``.

    Unpacked by position, with the enums looked up in plain dicts, as ``history_record``: a page
    of the fleet's instances builds a thousand of these.
    """
    (
        instance_id,
        host,
        name,
        power_state,
        transition,
        native_state,
        native_reason,
        observed_at,
        policy,
        stale,
        quarantined,
        fault,
        failures,
        backoff_until,
        action_failures,
        _records,
        _change_seq,
    ) = row
    return InstanceView(
        id=instance_id,
        host=host,
        name=name,
        power_state=_STATES[power_state],
        transition=_TRANSITIONS[transition] if transition else None,
        native_state=native_state,
        native_reason=native_reason,
        observed_at=observed_at,
        policy=_POLICIES[policy],
        stale=bool(stale),
        quarantined=bool(quarantined),
        fault=fault,
        failures=failures,
        backoff_until=backoff_until,
        in_flight=open_action,
        action_failures=action_failures,
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
        transition,
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
        transition=_TRANSITIONS[transition] if transition else None,
    )
