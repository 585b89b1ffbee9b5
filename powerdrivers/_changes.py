"""Which event a change between two readings amounts to."""

from __future__ import annotations

from powerdrivers._event_kinds import EventKind
from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState, Transition

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
    return state_change_kind(
        (before.power_state, before.transition) if before is not None else None,
        (after.power_state, after.transition) if after is not None else None,
    )


def state_change_kind(
    before: tuple[PowerState, Transition | None] | None,
    after: tuple[PowerState, Transition | None] | None,
) -> EventKind | None:
    """Like :func:`change_kind`, from (power state, transition) pairs."""
    if before is None:
        return None if after is None else EventKind.SPAWNED
    if after is None:
        return EventKind.DELETED
    if before[0] is not after[0]:
        if after[0] is PowerState.RUNNING:
            return _RUNNING_AGAIN.get(before[0], EventKind.STARTED)
        return _ARRIVALS[after[0]]
    if before[1] is not after[1]:
        return EventKind.TRANSITION
    return None
