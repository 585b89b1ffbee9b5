"""The keeper's judgement, as pure functions: why a change happened, and what, if anything, to do.

Nothing here reads a clock, a driver or a store, so every rule is tested on its own.
"""

from __future__ import annotations

from typing import NamedTuple

from powerdrivers import EventKind, Operation, PowerState, Transition
from powerdrivers.keeper._model import Cause, Policy

#: Native reasons with which hypervisors report a crash (libvirt's ``shutoff``/``crashed`` with
#: ``on_crash=destroy``, ``crashed``/``panicked``), whatever canonical state they map to.
CRASH_REASONS = frozenset({"crashed", "panicked"})

_RESTARTABLE = frozenset({PowerState.SHUTOFF, PowerState.CRASHED})


class Decision(NamedTuple):
    """What the keeper should do about one instance now.

    ``operation`` ``None`` means nothing; ``await_reboot`` says to wait the reboot window first
    (an unexplained clean stop that the start of a guest reboot may follow).
    """

    operation: Operation | None
    reason: str
    await_reboot: bool = False


def is_crash(kind: EventKind | None, power_state: PowerState, native_reason: str | None) -> bool:
    """Whether an event or reading says the instance crashed."""
    return (
        kind is EventKind.CRASHED
        or power_state is PowerState.CRASHED
        or (native_reason or "").lower() in CRASH_REASONS
    )


def classify(
    kind: EventKind | None,
    power_state: PowerState,
    native_reason: str | None,
    caused_by: Operation | None,
    *,
    follows_quick_stop: bool = False,
) -> Cause:
    """Return why a change happened.

    ``kind`` is ``None`` for a change found by a resync (out of band unless it is a crash: the
    detail of the record says a resync found it); ``caused_by`` is the operation the
    driver attributed the event to; ``follows_quick_stop`` says an unexplained stop of this
    instance came less than the reboot window before this start.
    """
    if caused_by is not None:
        return Cause.OPERATION
    if is_crash(kind, power_state, native_reason):
        return Cause.CRASH
    if kind is EventKind.REBOOTED or (follows_quick_stop and power_state is PowerState.RUNNING):
        return Cause.GUEST_REBOOT
    # A change no operation explains is someone else's, whether an event or a resync found it.
    return Cause.OUT_OF_BAND


def decide(
    policy: Policy,
    power_state: PowerState,
    transition: Transition | None,
    cause: Cause | None,
    *,
    own: bool = False,
) -> Decision:
    """Return what ``policy`` calls for, given the instance's state and why it got there.

    ``cause`` ``None`` means no change prompted the look (a policy change, a released
    quarantine, the end of a backoff): the state alone decides. ``own`` says the keeper's own
    action caused the change, which is never corrected.
    """
    if own:
        return Decision(None, "the keeper's own action")
    if cause is Cause.GUEST_REBOOT:
        return Decision(None, "a guest reboot is not a failure")
    if power_state is PowerState.UNKNOWN:
        return Decision(None, "an unknown state is never read as off")
    if transition is not None:
        return Decision(None, f"{transition.value} in progress")
    crashed = cause is Cause.CRASH or power_state is PowerState.CRASHED
    if policy is Policy.ALWAYS and power_state in _RESTARTABLE:
        if crashed:
            return Decision(Operation.START, "policy always: crashed")
        return Decision(
            Operation.START, f"policy always: {power_state.value}", await_reboot=cause is Cause.OUT_OF_BAND
        )
    if policy is Policy.ON_FAILURE and power_state in _RESTARTABLE:
        if crashed:
            return Decision(Operation.START, "policy on_failure: crashed")
        return Decision(None, "policy on_failure: a clean stop is adopted")
    if policy is Policy.HALTED:
        if power_state is PowerState.CRASHED:
            return Decision(Operation.POWER_OFF, "policy halted: crashed, still held")
        if power_state in (PowerState.RUNNING, PowerState.PAUSED):
            return Decision(Operation.SHUTDOWN, f"policy halted: {power_state.value}")
    return Decision(None, f"policy {policy.value}: {power_state.value} is kept")


def is_desired(policy: Policy, power_state: PowerState) -> bool:
    """Whether ``power_state`` is what ``policy`` keeps (what releases a quarantine by itself)."""
    if power_state is PowerState.UNKNOWN:
        return False
    if policy is Policy.ALWAYS:
        return power_state is PowerState.RUNNING
    if policy is Policy.HALTED:
        return power_state is PowerState.SHUTOFF
    if policy is Policy.ON_FAILURE:
        return power_state is not PowerState.CRASHED
    return True
