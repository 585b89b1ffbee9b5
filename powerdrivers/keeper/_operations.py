"""The operations the keeper carries out through a driver, and the options each accepts."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from powerdrivers import (
    Driver,
    InstanceReading,
    InvalidOption,
    Operation,
    parse_boolean,
    parse_duration,
)

#: Operations a keeper carries out on request: everything but creating and deleting instances.
REQUESTABLE = frozenset(Operation) - {Operation.SPAWN, Operation.DELETE}

_OPTIONS: Mapping[Operation, frozenset[str]] = {
    Operation.SHUTDOWN: frozenset({"timeout", "force"}),
    Operation.REBOOT: frozenset({"timeout", "force"}),
}


def check_request(operation: Operation | str, options: Mapping[str, Any]) -> tuple[Operation, dict[str, Any]]:
    """Return the operation and its checked options, JSON-ready.

    Raises ``InvalidOption`` for an operation the keeper does not carry out, an option the
    operation does not take, or a bad value.
    """
    try:
        checked_operation = Operation(operation)
    except ValueError:
        checked_operation = None
    if checked_operation not in REQUESTABLE:
        allowed = ", ".join(sorted(op.value for op in REQUESTABLE))
        raise InvalidOption(f"the keeper carries out {allowed}, not {str(operation)[:40]!r}")
    assert checked_operation is not None
    unknown = sorted(set(options) - _OPTIONS.get(checked_operation, frozenset()))
    if unknown:
        raise InvalidOption(f"{checked_operation.value} takes no option {', '.join(unknown)}")
    checked: dict[str, Any] = {}
    if "timeout" in options:
        checked["timeout"] = parse_duration("timeout", options["timeout"])
    if "force" in options:
        checked["force"] = parse_boolean("force", options["force"])
    return checked_operation, checked


def perform(
    driver: Driver, instance_id: str, operation: Operation, options: Mapping[str, Any]
) -> tuple[InstanceReading, str]:
    """Carry out ``operation`` and return the reading after it and its outcome text.

    Raises what the driver's method raises (every one a ``PowerDriversError``).
    """
    if operation is Operation.SHUTDOWN:
        result = driver.shutdown(instance_id, **options)
        return result.reading, result.outcome.value
    if operation in (Operation.REBOOT, Operation.HARD_REBOOT):
        result = driver.reboot(instance_id, hard=operation is Operation.HARD_REBOOT, **options)
        return result.reading, result.outcome.value
    reading: InstanceReading = getattr(driver, operation.value)(instance_id)
    return reading, "done"
