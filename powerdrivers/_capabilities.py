"""What a driver declares it can do."""

from __future__ import annotations

import enum

from powerdrivers._operations import Operation


class Capability(enum.StrEnum):
    """A feature a driver declares in ``Driver.capabilities``.

    One capability per :class:`Operation` (``pause`` covers ``unpause``
    and ``suspend`` covers ``resume``, since one without the other would
    strand an instance), plus ``vcpu_stats`` and ``native_events``. A driver
    without ``native_events`` still delivers events: the core polls it.
    """

    SPAWN = "spawn"
    START = "start"
    SHUTDOWN = "shutdown"
    POWER_OFF = "power_off"
    REBOOT = "reboot"
    HARD_REBOOT = "hard_reboot"
    PAUSE = "pause"
    SUSPEND = "suspend"
    DELETE = "delete"
    VCPU_STATS = "vcpu_stats"
    NATIVE_EVENTS = "native_events"

    @classmethod
    def for_operation(cls, operation: Operation) -> Capability:
        """Return the capability a driver must declare to perform ``operation``."""
        return _OPERATION_CAPABILITY[operation]


_OPERATION_CAPABILITY = {
    Operation.SPAWN: Capability.SPAWN,
    Operation.START: Capability.START,
    Operation.SHUTDOWN: Capability.SHUTDOWN,
    Operation.POWER_OFF: Capability.POWER_OFF,
    Operation.REBOOT: Capability.REBOOT,
    Operation.HARD_REBOOT: Capability.HARD_REBOOT,
    Operation.PAUSE: Capability.PAUSE,
    Operation.UNPAUSE: Capability.PAUSE,
    Operation.SUSPEND: Capability.SUSPEND,
    Operation.RESUME: Capability.SUSPEND,
    Operation.DELETE: Capability.DELETE,
}

#: Capabilities every driver must declare: without them a driver cannot
#: even bring an instance up and down.
REQUIRED_CAPABILITIES = frozenset({Capability.START, Capability.POWER_OFF})
