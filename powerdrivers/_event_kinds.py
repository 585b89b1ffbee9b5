"""What an event says happened to an instance."""

from __future__ import annotations

import enum


class EventKind(enum.StrEnum):
    """The kind of a lifecycle event.

    Most kinds name a change of power state; ``TRANSITION`` says a
    transition began or ended while the power state stayed the same;
    ``REBOOTED`` says the guest restarted without the power state changing;
    ``RESYNC`` says events may have been missed (the connection to the
    hypervisor was re-established), so a listener should re-read what it
    cares about.
    """

    SPAWNED = "spawned"
    DELETED = "deleted"
    STARTED = "started"
    STOPPED = "stopped"
    PAUSED = "paused"
    UNPAUSED = "unpaused"
    SUSPENDED = "suspended"
    RESUMED = "resumed"
    CRASHED = "crashed"
    REBOOTED = "rebooted"
    TRANSITION = "transition"
    STATE_UNKNOWN = "state_unknown"
    RESYNC = "resync"
