"""What a keeper that starts does about what the keeper before it left behind.

A keeper killed between intent and completion leaves the intent ``running``: it is closed
``interrupted`` with what a fresh read finds, and never issued again blindly (the instance is
*held* until a change read after the first resync, a new policy or a quarantine release). A
keeper stopped before correcting a change nobody asked for (inside the reboot window, say)
leaves a drift no event will announce again: the new keeper looks at it once it has resynced.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Mapping

from powerdrivers import Driver, InstanceNotFound, InstanceReading, PowerDriversError
from powerdrivers.keeper._decide import is_desired
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.keeper._model import ActionStatus, Cause, InstanceView, Policy, RecordKind
from powerdrivers.keeper._store_api import KeeperStore

_LOG = logging.getLogger("powerdrivers.keeper")


def close_interrupted(store: KeeperStore, host: str, driver: Driver) -> set[str]:
    """Close the running intents a dead keeper left on ``host``: re-read, record, never reissue.

    Returns the ids of the instances to hold. Raises ``StoreError`` (the driver's errors are
    recorded in the closed intent, not raised).
    """
    held = set()
    for action in store.open_actions(host):
        if action.status is not ActionStatus.RUNNING:
            continue
        try:
            found = driver.get_instance(action.instance_id)
            seen = f"found {found.power_state.value}" + (
                f", {found.transition.value}" if found.transition else ""
            )
        except InstanceNotFound:
            seen = "found the instance gone"
        except PowerDriversError as error:
            seen = f"could not read the instance: {error}"
        held.add(action.instance_id)
        store.finish_action(
            action.id,
            ActionStatus.INTERRUPTED,
            utcnow(),
            error=f"the keeper stopped before the {action.operation} ended; {seen}",
        )
        _LOG.warning("keeper: action %d (%s) was interrupted; %s", action.id, action.operation, seen)
    return held


def left_in_drift(store: KeeperStore, view: InstanceView, reading: InstanceReading | None) -> bool:
    """Whether a keeper before this one stopped before correcting a change nobody asked for.

    ``reading`` is the instance's last one. Raises ``StoreError``.
    """
    if reading is None or view.policy is Policy.MANUAL or is_desired(view.policy, reading.power_state):
        return False
    records = store.history(view.id, 50)
    last = next((record for record in records if record.kind is RecordKind.OBSERVED), None)
    return last is not None and last.cause in (Cause.OUT_OF_BAND, Cause.CRASH)


def to_look_at(
    store: KeeperStore,
    views: Iterable[InstanceView],
    readings: Mapping[str, InstanceReading],
    busy: Collection[str],
) -> list[str]:
    """Return the instances to look at once the first resync has ended: backing off, or left in drift.

    ``busy`` instances (an action or a reboot window under way) are looked at when that ends.
    Raises ``StoreError``.
    """
    return [
        view.id
        for view in views
        if view.id not in busy
        and (view.backoff_until is not None or left_in_drift(store, view, readings.get(view.id)))
    ]
