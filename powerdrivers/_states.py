"""Canonical power states and transitions.

A power state is a fact of the virtualization layer: something the
hypervisor can observe about an instance without asking the guest. What is
*happening* to an instance (being spawned, being shut down, being rebooted)
is a separate axis, the transition. An instance that is being shut down is
``RUNNING`` with transition ``SHUTTING_DOWN``; it is never "off" until the
hypervisor says it is off.
"""

from __future__ import annotations

import enum


class PowerState(enum.StrEnum):
    """The canonical power state of an instance, as the hypervisor observes it.

    There is deliberately no ``BLOCKED`` (whether a VCPU waits on I/O changes
    on millisecond scales and is per VCPU: see :class:`powerdrivers.VcpuStats`)
    and no ``SHUTDOWN`` (a shutdown in progress is a transition, not a state).
    """

    RUNNING = "running"
    PAUSED = "paused"
    SUSPENDED = "suspended"
    SHUTOFF = "shutoff"
    CRASHED = "crashed"
    UNKNOWN = "unknown"

    @property
    def description(self) -> str:
        """One sentence saying what the hypervisor observes in this state."""
        return _STATE_DESCRIPTIONS[self]


_STATE_DESCRIPTIONS = {
    PowerState.RUNNING: (
        "The instance has CPU and memory allocated and its VCPUs may be scheduled; "
        "whether any VCPU is busy, idle or blocked is a statistic, not a state."
    ),
    PowerState.PAUSED: (
        "The instance's memory is held by the hypervisor but its VCPUs are not scheduled; "
        "it resumes instantly and the guest does not notice."
    ),
    PowerState.SUSPENDED: (
        "The instance's memory has been saved outside the hypervisor (to disk or by the guest's "
        "own power management) and no VCPU runs; resuming restores it."
    ),
    PowerState.SHUTOFF: (
        "The instance exists but holds no CPU or memory on the hypervisor; starting it boots the guest."
    ),
    PowerState.CRASHED: (
        "The hypervisor stopped the instance because it crashed (a guest or emulator failure) "
        "and kept it for inspection."
    ),
    PowerState.UNKNOWN: (
        "The hypervisor reported a state this driver cannot map; the native state and reason "
        "are kept on the reading."
    ),
}


class Transition(enum.StrEnum):
    """An operation in flight on an instance.

    A driver reports one while its own operation runs on that instance, or
    when the hypervisor itself reports something in progress (libvirt's
    "being shut down" is ``RUNNING`` + ``SHUTTING_DOWN``).
    """

    SPAWNING = "spawning"
    POWERING_ON = "powering_on"
    SHUTTING_DOWN = "shutting_down"
    POWERING_OFF = "powering_off"
    REBOOTING = "rebooting"
    HARD_REBOOTING = "hard_rebooting"
    PAUSING = "pausing"
    UNPAUSING = "unpausing"
    SUSPENDING = "suspending"
    RESUMING = "resuming"
    DELETING = "deleting"

    @property
    def guest_dependent(self) -> bool:
        """Whether completing this transition needs the guest's cooperation."""
        return self in (Transition.SHUTTING_DOWN, Transition.REBOOTING)
