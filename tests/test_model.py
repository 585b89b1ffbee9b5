"""The canonical model: states, transitions, the operation table, capabilities."""

from __future__ import annotations

import pytest

from powerdrivers import (
    OPERATION_TABLE,
    REQUIRED_CAPABILITIES,
    Capability,
    EventKind,
    InvalidStateTransition,
    Operation,
    PowerState,
    Transition,
    check_operation,
    rule_for,
)


def test_no_state_means_two_things() -> None:
    names = {state.name for state in PowerState}
    assert names == {"RUNNING", "PAUSED", "SUSPENDED", "SHUTOFF", "CRASHED", "UNKNOWN"}
    assert "BLOCKED" not in names and "SHUTDOWN" not in names and "NOSTATE" not in names


def test_every_state_is_described_as_a_fact_of_the_virtualization_layer() -> None:
    for state in PowerState:
        assert state.description.endswith(".")
        assert "guest cooperat" not in state.description


def test_transitions_include_the_ones_the_old_model_could_not_express() -> None:
    for name in ("SPAWNING", "REBOOTING", "HARD_REBOOTING", "SHUTTING_DOWN", "POWERING_OFF", "DELETING"):
        assert name in Transition.__members__
    assert {t for t in Transition if t.guest_dependent} == {Transition.SHUTTING_DOWN, Transition.REBOOTING}


def test_the_table_has_one_row_per_operation_and_each_row_its_own_transition() -> None:
    assert set(OPERATION_TABLE) == set(Operation)
    transitions = [rule.transition for rule in OPERATION_TABLE.values()]
    assert len(set(transitions)) == len(transitions)
    for operation, rule in OPERATION_TABLE.items():
        assert rule.operation is operation
        assert rule_for(operation) is rule
        assert rule.allowed_from.isdisjoint(rule.already_done_in)


def test_graceful_operations_are_guest_dependent_and_forced_ones_are_not() -> None:
    for rule in OPERATION_TABLE.values():
        assert not (rule.forced and rule.guest_dependent)
    assert rule_for(Operation.SHUTDOWN).guest_dependent and rule_for(Operation.REBOOT).guest_dependent
    assert rule_for(Operation.POWER_OFF).forced and rule_for(Operation.HARD_REBOOT).forced


def test_off_is_shutoff_never_a_transition() -> None:
    assert rule_for(Operation.SHUTDOWN).result is PowerState.SHUTOFF
    assert rule_for(Operation.POWER_OFF).result is PowerState.SHUTOFF
    assert rule_for(Operation.DELETE).result is None


@pytest.mark.parametrize("operation", list(Operation))
@pytest.mark.parametrize("state", list(PowerState))
def test_check_operation_follows_the_table(operation: Operation, state: PowerState) -> None:
    rule = rule_for(operation)
    if state in rule.already_done_in:
        assert check_operation("vm", operation, state, None) is False
    elif state in rule.allowed_from:
        assert check_operation("vm", operation, state, None) is True
    else:
        with pytest.raises(InvalidStateTransition) as caught:
            check_operation("vm", operation, state, None)
        error = caught.value
        assert (error.instance, error.operation, error.state) == ("vm", operation.value, state.value)
        assert f"cannot {operation.value} instance 'vm': it is {state.value}" in str(error)


@pytest.mark.parametrize("operation", [op for op in Operation if op is not Operation.SPAWN])
def test_a_transition_in_flight_blocks_all_but_forced_operations_and_itself(operation: Operation) -> None:
    rule = rule_for(operation)
    state = next(iter(sorted(rule.allowed_from)))
    other = Transition.PAUSING if rule.transition is not Transition.PAUSING else Transition.RESUMING
    if rule.forced:
        assert check_operation("vm", operation, state, other)
    else:
        with pytest.raises(InvalidStateTransition, match=f"{other.value} in progress"):
            check_operation("vm", operation, state, other)
    assert check_operation("vm", operation, state, rule.transition)


def test_capabilities_cover_every_operation_and_required_ones_are_declared() -> None:
    assert {Capability.for_operation(op) for op in Operation} | {
        Capability.VCPU_STATS,
        Capability.NATIVE_EVENTS,
    } == set(Capability)
    assert {Capability.START, Capability.POWER_OFF} == REQUIRED_CAPABILITIES
    assert Capability.for_operation(Operation.UNPAUSE) is Capability.PAUSE
    assert Capability.for_operation(Operation.RESUME) is Capability.SUSPEND


def test_operations_attribute_only_their_own_kinds_of_event() -> None:
    for rule in OPERATION_TABLE.values():
        assert EventKind.CRASHED not in rule.events
        assert EventKind.RESYNC not in rule.events
    assert {EventKind.STOPPED, EventKind.STARTED} <= rule_for(Operation.HARD_REBOOT).events
