"""The operation table: which operation is valid from which state.

This table is the single source of truth for the fake driver, the core's
checks in :class:`powerdrivers.Driver`, the documentation and the
conformance tests.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import NamedTuple

from powerdrivers._event_kinds import EventKind
from powerdrivers._exceptions import InvalidStateTransition
from powerdrivers._states import PowerState, Transition


class Operation(enum.StrEnum):
    """An operation a driver performs on an instance."""

    SPAWN = "spawn"
    START = "start"
    SHUTDOWN = "shutdown"
    POWER_OFF = "power_off"
    REBOOT = "reboot"
    HARD_REBOOT = "hard_reboot"
    PAUSE = "pause"
    UNPAUSE = "unpause"
    SUSPEND = "suspend"
    RESUME = "resume"
    DELETE = "delete"


class OperationRule(NamedTuple):
    """One row of the operation table.

    ``allowed_from`` are the states the operation may start from;
    ``already_done_in`` are states in which it succeeds without doing
    anything (a graceful shutdown of an instance that is already off);
    ``result`` is the state it ends in (``None``: the instance is gone);
    ``forced`` operations do not need the guest and may interrupt any
    transition in flight; every other operation is refused while another
    one runs (asking again for the one in flight is allowed: a graceful
    shutdown may be re-sent while the guest is shutting down);
    ``events`` are the event kinds the operation itself causes, which is how
    an event is attributed to it rather than read as an outage;
    ``final_events`` end what the operation causes: once one is attributed to
    it, it is owed nothing more (a hard reboot that the hypervisor carries out
    as a reset reports ``rebooted`` and owes no stop and start).
    """

    operation: Operation
    transition: Transition
    allowed_from: frozenset[PowerState]
    result: PowerState | None
    forced: bool
    events: frozenset[EventKind]
    already_done_in: frozenset[PowerState] = frozenset()
    final_events: frozenset[EventKind] = frozenset()

    @property
    def guest_dependent(self) -> bool:
        """Whether the operation's completion needs the guest's cooperation."""
        return self.transition.guest_dependent


def _rule(
    operation: Operation,
    transition: Transition,
    allowed_from: set[PowerState],
    result: PowerState | None,
    events: set[EventKind],
    *,
    forced: bool = False,
    already_done_in: frozenset[PowerState] = frozenset(),
    final_events: frozenset[EventKind] = frozenset(),
) -> OperationRule:
    return OperationRule(
        operation,
        transition,
        frozenset(allowed_from),
        result,
        forced,
        frozenset(events),
        already_done_in,
        final_events,
    )


_S = PowerState
_E = EventKind

OPERATION_TABLE: Mapping[Operation, OperationRule] = MappingProxyType(
    {
        rule.operation: rule
        for rule in (
            # Hypervisors may start a domain paused and then run it (QEMU under
            # libvirt reports started, then resumed): starting causes both.
            _rule(
                Operation.SPAWN,
                Transition.SPAWNING,
                set(),
                _S.RUNNING,
                {_E.SPAWNED, _E.STARTED, _E.UNPAUSED},
            ),
            _rule(
                Operation.START,
                Transition.POWERING_ON,
                {_S.SHUTOFF, _S.CRASHED, _S.SUSPENDED},
                _S.RUNNING,
                {_E.STARTED, _E.RESUMED, _E.UNPAUSED},
            ),
            _rule(
                Operation.SHUTDOWN,
                Transition.SHUTTING_DOWN,
                {_S.RUNNING, _S.PAUSED},
                _S.SHUTOFF,
                {_E.STOPPED, _E.TRANSITION},
                already_done_in=frozenset({_S.SHUTOFF}),
            ),
            _rule(
                Operation.POWER_OFF,
                Transition.POWERING_OFF,
                {_S.RUNNING, _S.PAUSED, _S.CRASHED, _S.UNKNOWN},
                _S.SHUTOFF,
                {_E.STOPPED},
                forced=True,
            ),
            _rule(
                Operation.REBOOT,
                Transition.REBOOTING,
                {_S.RUNNING},
                _S.RUNNING,
                # A guest rebooting itself never stops the instance.
                {_E.REBOOTED, _E.TRANSITION},
                final_events=frozenset({_E.REBOOTED}),
            ),
            _rule(
                Operation.HARD_REBOOT,
                Transition.HARD_REBOOTING,
                {_S.RUNNING, _S.PAUSED, _S.CRASHED},
                _S.RUNNING,
                # A reset (QEMU's system_reset) reports only rebooted; a stop and start
                # reports stopped and started, then rebooted last.
                {_E.REBOOTED, _E.STOPPED, _E.STARTED, _E.UNPAUSED},
                forced=True,
                final_events=frozenset({_E.REBOOTED}),
            ),
            _rule(Operation.PAUSE, Transition.PAUSING, {_S.RUNNING}, _S.PAUSED, {_E.PAUSED}),
            _rule(Operation.UNPAUSE, Transition.UNPAUSING, {_S.PAUSED}, _S.RUNNING, {_E.UNPAUSED}),
            _rule(
                Operation.SUSPEND,
                Transition.SUSPENDING,
                {_S.RUNNING},
                _S.SUSPENDED,
                {_E.SUSPENDED},
            ),
            _rule(
                Operation.RESUME,
                Transition.RESUMING,
                {_S.SUSPENDED},
                _S.RUNNING,
                {_E.RESUMED, _E.STARTED, _E.UNPAUSED},
            ),
            _rule(
                Operation.DELETE,
                Transition.DELETING,
                set(PowerState),
                None,
                {_E.DELETED, _E.STOPPED},
                forced=True,
            ),
        )
    }
)


def rule_for(operation: Operation) -> OperationRule:
    """Return the operation table's row for ``operation``."""
    return OPERATION_TABLE[operation]


def check_operation(
    instance: str,
    operation: Operation,
    state: PowerState,
    transition: Transition | None,
) -> bool:
    """Check ``operation`` against the table for an instance in ``state``.

    Returns ``True`` when the operation must be carried out and ``False``
    when its goal already holds (see ``OperationRule.already_done_in``).
    Raises :class:`InvalidStateTransition` naming the instance, the
    operation and the current state when the table forbids it.
    """
    rule = OPERATION_TABLE[operation]
    if state in rule.already_done_in and transition is None:
        return False
    if state not in rule.allowed_from:
        raise InvalidStateTransition(
            instance, operation.value, state.value, allowed=(s.value for s in rule.allowed_from)
        )
    if transition is not None and not rule.forced and transition is not rule.transition:
        raise InvalidStateTransition(
            instance,
            operation.value,
            state.value,
            transition=transition.value,
            allowed=(s.value for s in rule.allowed_from),
        )
    return True
