"""XenAPI power states and in-flight operations, and their canonical meaning.

A reading's native state is the VM's ``power_state`` exactly as xapi sends
it; its native reason is the power operation in the VM's
``current_operations``, if any, which is what the transition is read from.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from powerdrivers import NativeMapping, NativeStateTable, PowerState, Transition

#: Every value of the XenAPI ``vm_power_state`` enumeration, plus ``Crashed``,
#: which older xapi versions report.
VM_POWER_STATES = ("Halted", "Paused", "Running", "Suspended", "Crashed")

NATIVE_STATES = NativeStateTable(
    "xen",
    [
        NativeMapping("Running", None, PowerState.RUNNING, None, "The domain exists and its VCPUs run."),
        NativeMapping(
            "Paused", None, PowerState.PAUSED, None, "The domain exists; its VCPUs are not scheduled."
        ),
        NativeMapping(
            "Suspended",
            None,
            PowerState.SUSPENDED,
            None,
            "Memory saved to a suspend image; resuming restores it, like libvirt's managed save.",
        ),
        NativeMapping("Halted", None, PowerState.SHUTOFF, None, "No domain: the VM holds no CPU or memory."),
        NativeMapping(
            "Crashed",
            None,
            PowerState.CRASHED,
            None,
            "Older xapi: the domain crashed and was kept (actions_after_crash=preserve).",
        ),
    ],
)

#: XenAPI ``vm_operations`` that move power state -> the transition they show.
#: Other operations (snapshot, clone, migrate_send...) are kept as the native
#: reason but are no power transition.
POWER_OPERATIONS: Mapping[str, Transition] = MappingProxyType(
    {
        "start": Transition.POWERING_ON,
        "start_on": Transition.POWERING_ON,
        "clean_shutdown": Transition.SHUTTING_DOWN,
        "shutdown": Transition.SHUTTING_DOWN,
        "hard_shutdown": Transition.POWERING_OFF,
        "clean_reboot": Transition.REBOOTING,
        "hard_reboot": Transition.HARD_REBOOTING,
        "pause": Transition.PAUSING,
        "unpause": Transition.UNPAUSING,
        "suspend": Transition.SUSPENDING,
        "resume": Transition.RESUMING,
        "resume_on": Transition.RESUMING,
        "destroy": Transition.DELETING,
    }
)


def in_flight(current_operations: Mapping[str, str]) -> str | None:
    """Return the power operation among a VM's ``current_operations``, else any operation, else None."""
    operations = list(current_operations.values())
    for operation in operations:
        if operation in POWER_OPERATIONS:
            return operation
    return operations[0] if operations else None
