"""xapi's VM operation rules: which power states allow an operation, and what may run concurrently.

A transcription of the checks in xapi's ``Xapi_vm_lifecycle.check_operation_error``, limited to
the operations the simulator knows. The checks run in xapi's order and the first failure wins:
power state, operations already in progress, template, snapshot, control domain.
"""

from __future__ import annotations

from collections.abc import Collection

from ._database import Record
from ._errors import (
    OPERATION_NOT_ALLOWED,
    OTHER_OPERATION_IN_PROGRESS,
    VM_BAD_POWER_STATE,
    VM_IS_SNAPSHOT,
    VM_IS_TEMPLATE,
    XapiError,
)

HALTED = "Halted"
PAUSED = "Paused"
RUNNING = "Running"
SUSPENDED = "Suspended"
POWER_STATES = (HALTED, PAUSED, RUNNING, SUSPENDED)
"""The power states of the current XenAPI ``vm_power_state`` enum."""

_ALL = (HALTED, PAUSED, SUSPENDED, RUNNING)

_ALLOWED_STATES: dict[str, tuple[str, ...]] = {
    "start": (HALTED,),
    "start_on": (HALTED,),
    "make_into_template": (HALTED,),
    "unpause": (PAUSED,),
    "resume": (SUSPENDED,),
    "resume_on": (SUSPENDED,),
    "clean_reboot": (RUNNING,),
    "clean_shutdown": (RUNNING,),
    "changing_VCPUs_live": (RUNNING,),
    "pause": (RUNNING,),
    "pool_migrate": (RUNNING,),
    "suspend": (RUNNING,),
    "changing_dynamic_range": (HALTED, RUNNING),
    "destroy": (HALTED, SUSPENDED),
    "export": (HALTED, SUSPENDED),
    "hard_reboot": (PAUSED, RUNNING),
    "checkpoint": (PAUSED, SUSPENDED, RUNNING),
    "hard_shutdown": (PAUSED, SUSPENDED, RUNNING),
    "migrate_send": (HALTED, SUSPENDED, RUNNING),
    "snapshot": _ALL,
    "revert": _ALL,
}

LIFECYCLE_OPERATIONS = (
    "start",
    "start_on",
    "clean_shutdown",
    "hard_shutdown",
    "clean_reboot",
    "hard_reboot",
    "pause",
    "unpause",
    "suspend",
    "resume",
    "resume_on",
)
"""The operations the simulator performs (each is also a ``VM.<op>`` and ``Async.VM.<op>`` call)."""

ADVERTISED_OPERATIONS = (
    "snapshot",
    "copy",
    "clone",
    "revert",
    "checkpoint",
    "start",
    "start_on",
    "pause",
    "unpause",
    "clean_shutdown",
    "clean_reboot",
    "hard_shutdown",
    "hard_reboot",
    "suspend",
    "resume",
    "resume_on",
    "export",
    "destroy",
    "changing_VCPUs_live",
    "pool_migrate",
    "migrate_send",
    "make_into_template",
    "changing_dynamic_range",
)
"""The operations xapi considers for ``allowed_operations`` that the simulator can judge."""

_TEMPLATE_OPERATIONS = frozenset(
    {"changing_dynamic_range", "changing_static_range", "changing_VCPUs", "clone", "copy", "export"}
)
_SNAPSHOT_OPERATIONS = frozenset({"revert", "clone", "copy", "export", "destroy", "hard_shutdown"})
_CONTROL_DOMAIN_OPERATIONS = frozenset(
    {"changing_dynamic_range", "changing_static_range", "changing_VCPUs", "start", "start_on", "destroy"}
)

CANCELLED_BY = {
    "hard_shutdown": frozenset({"clean_shutdown", "clean_reboot", "hard_reboot", "suspend", "pool_migrate"}),
    "hard_reboot": frozenset({"clean_shutdown", "clean_reboot", "suspend", "pool_migrate"}),
}
"""The in-progress operations a hard operation cancels before it acts, as xapi's forwarding layer does."""


def allowed_power_states(record: Record, operation: str) -> tuple[str, ...]:
    """List the power states in which ``operation`` may start on this VM, in xapi's order."""
    if operation in ("clone", "copy"):
        return (HALTED, SUSPENDED) if record["is_a_snapshot"] else (HALTED,)
    return _ALLOWED_STATES.get(operation, ())


def _allowed_concurrently(operation: str, current: Collection[str]) -> bool:
    for family in ({"clone", "copy", "export"}, {"snapshot", "checkpoint"}):
        if operation in family and all(other in family for other in current):
            return True
    if operation == "hard_shutdown":
        return "hard_shutdown" not in current
    if operation == "hard_reboot":
        return not {"hard_shutdown", "hard_reboot"} & set(current)
    return list(current) == ["migrate_send"] and operation in (
        "clean_shutdown",
        "clean_reboot",
        "start",
        "start_on",
    )


def operation_error(ref: str, record: Record, operation: str) -> XapiError | None:
    """Return the error xapi would raise for ``operation`` on this VM now, or None if it may proceed."""
    state = str(record["power_state"])
    allowed = allowed_power_states(record, operation)
    if state not in allowed:
        expected = ", ".join(s.lower() for s in allowed)
        return XapiError(VM_BAD_POWER_STATE, ref, expected, state.lower())
    current = list(record["current_operations"].values())
    if current and not _allowed_concurrently(operation, current):
        names = current[0] if len(current) == 1 else "{" + ",".join(current) + "}"
        return XapiError(OTHER_OPERATION_IN_PROGRESS, f"VM.{names}", ref)
    if record["is_a_template"] and not record["is_a_snapshot"]:
        default = record["is_default_template"] or record["other_config"].get("default_template") == "true"
        if operation not in _TEMPLATE_OPERATIONS and not (operation == "destroy" and not default):
            return XapiError(VM_IS_TEMPLATE, ref, operation)
    if record["is_a_snapshot"] and operation not in _SNAPSHOT_OPERATIONS:
        return XapiError(VM_IS_SNAPSHOT, ref, operation)
    if record["is_control_domain"] and operation not in _CONTROL_DOMAIN_OPERATIONS:
        return XapiError(OPERATION_NOT_ALLOWED, "This operation is not allowed on a control domain")
    return None


def allowed_operations(ref: str, record: Record) -> list[str]:
    """Compute ``allowed_operations``: every advertised operation that would pass its checks now."""
    return [op for op in ADVERTISED_OPERATIONS if operation_error(ref, record, op) is None]
