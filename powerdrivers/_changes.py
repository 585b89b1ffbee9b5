"""Which event a change between two readings amounts to."""

from __future__ import annotations

from powerdrivers._event_kinds import EventKind
from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState

_ARRIVALS = {
    PowerState.SHUTOFF: EventKind.STOPPED,
    PowerState.PAUSED: EventKind.PAUSED,
    PowerState.SUSPENDED: EventKind.SUSPENDED,
    PowerState.CRASHED: EventKind.CRASHED,
    PowerState.UNKNOWN: EventKind.STATE_UNKNOWN,
}

_RUNNING_AGAIN = {
    PowerState.PAUSED: EventKind.UNPAUSED,
    PowerState.SUSPENDED: EventKind.RESUMED,
}


def change_kind(before: InstanceReading | None, after: InstanceReading | None) -> EventKind | None:
    """Return the event kind for a change from ``before`` to ``after``.

    ``None`` on either side means the instance did not exist. Returns
    ``None`` when nothing an event reports has changed.
    """
    if before is None and after is None:
        return None
    if before is None:
        return EventKind.SPAWNED
    if after is None:
        return EventKind.DELETED
    if before.power_state is not after.power_state:
        if after.power_state is PowerState.RUNNING:
            return _RUNNING_AGAIN.get(before.power_state, EventKind.STARTED)
        return _ARRIVALS[after.power_state]
    if before.transition is not after.transition:
        return EventKind.TRANSITION
    return None
