"""Every operation from every state the fake can reach, checked against the core's operation table."""

from __future__ import annotations

import pytest
from fake_helpers import (
    INSTANCE_OPERATIONS,
    REACHABLE_STATES,
    EventLog,
    perform,
    snapshot,
    spawn_in_state,
)
from powerdrivers_fake import FakeDriver

from powerdrivers import (
    OPERATION_TABLE,
    EventKind,
    InstanceNotFound,
    InstanceSpec,
    InvalidSpec,
    InvalidStateTransition,
    Operation,
    OperationResult,
    Outcome,
    PowerState,
    VcpuStats,
)


def test_the_fake_reaches_every_state_but_unknown() -> None:
    # If the fake's native table gains or loses a canonical state, the matrix below must follow.
    assert set(REACHABLE_STATES) == set(PowerState) - {PowerState.UNKNOWN}


@pytest.mark.parametrize("operation", INSTANCE_OPERATIONS)
def test_every_operation_on_a_missing_instance_is_instance_not_found(
    empty_driver: FakeDriver, operation: Operation
) -> None:
    # Also proves that the helper knows a public call for every row of the table.
    with pytest.raises(InstanceNotFound) as raised:
        perform(empty_driver, operation, "ghost")
    assert raised.value.ref == "ghost"


@pytest.mark.parametrize("operation", INSTANCE_OPERATIONS)
@pytest.mark.parametrize("state", REACHABLE_STATES)
def test_operation_from_state_follows_the_table(
    empty_driver: FakeDriver, event_log: EventLog, state: PowerState, operation: Operation
) -> None:
    rule = OPERATION_TABLE[operation]
    before = spawn_in_state(empty_driver, "vm", state)
    with empty_driver.subscribe(event_log):
        if state in rule.already_done_in:
            result = perform(empty_driver, operation, "vm")
            assert isinstance(result, OperationResult)
            assert result.outcome is Outcome.ALREADY_OFF
            assert snapshot(empty_driver.get_instance("vm")) == snapshot(before)
            assert event_log.events == []
        elif state in rule.allowed_from:
            perform(empty_driver, operation, "vm")
            events = event_log.about(before.id)
            assert events, f"{operation} from {state} emitted no event"
            assert all(event.caused_by_operation is operation for event in events), events
            if rule.result is None:
                with pytest.raises(InstanceNotFound):
                    empty_driver.get_instance("vm")
                assert events[-1].kind is EventKind.DELETED
            else:
                after = empty_driver.get_instance("vm")
                assert after.power_state is rule.result
                assert after.transition is None
                assert events[-1].power_state is after.power_state
                assert events[-1].native_state == after.native_state
            assert {event.kind for event in events} <= rule.events | {EventKind.TRANSITION}
        else:
            with pytest.raises(InvalidStateTransition) as raised:
                perform(empty_driver, operation, "vm")
            message = str(raised.value)
            assert "'vm'" in message
            assert operation.value in message
            assert state.value in message
            assert raised.value.state == state.value
            assert raised.value.operation == operation.value
            assert set(raised.value.allowed) == {s.value for s in rule.allowed_from}
            assert snapshot(empty_driver.get_instance("vm")) == snapshot(before)
            assert event_log.events == []


@pytest.mark.parametrize("state", REACHABLE_STATES)
def test_operations_on_another_instance_leave_this_one_alone(
    empty_driver: FakeDriver, state: PowerState
) -> None:
    bystander = spawn_in_state(empty_driver, "bystander", state)
    spawn_in_state(empty_driver, "target", PowerState.RUNNING)
    for operation in (Operation.PAUSE, Operation.UNPAUSE, Operation.SUSPEND, Operation.START):
        perform(empty_driver, operation, "target")
    empty_driver.delete("target")
    assert snapshot(empty_driver.get_instance("bystander")) == snapshot(bystander)


def test_operations_accept_the_id_as_well_as_the_name(empty_driver: FakeDriver) -> None:
    reading = spawn_in_state(empty_driver, "by-id", PowerState.RUNNING)
    assert empty_driver.pause(reading.id).power_state is PowerState.PAUSED
    assert empty_driver.get_instance(reading.id).name == "by-id"


def test_unknown_instance_is_instance_not_found(empty_driver: FakeDriver) -> None:
    with pytest.raises(InstanceNotFound) as raised:
        empty_driver.start("no-such-vm")
    assert "no-such-vm" in str(raised.value)


def test_spawn_creates_a_running_instance_with_a_spawned_event(
    empty_driver: FakeDriver, event_log: EventLog
) -> None:
    with empty_driver.subscribe(event_log):
        reading = empty_driver.spawn(InstanceSpec("new-vm", vcpus=3, memory_mib=512))
    assert reading.name == "new-vm"
    assert reading.power_state is OPERATION_TABLE[Operation.SPAWN].result is PowerState.RUNNING
    assert reading.transition is None
    assert [r.name for r in empty_driver.list_instances()] == ["new-vm"]
    events = event_log.about(reading.id)
    assert [event.kind for event in events] == [EventKind.SPAWNED]
    assert events[0].caused_by_operation is Operation.SPAWN
    assert events[0].power_state is PowerState.RUNNING
    assert events[0].name == "new-vm"


def test_spawn_of_a_duplicate_name_is_invalid_spec_and_changes_nothing(
    empty_driver: FakeDriver, event_log: EventLog
) -> None:
    first = empty_driver.spawn(InstanceSpec("twin"))
    with empty_driver.subscribe(event_log), pytest.raises(InvalidSpec) as raised:
        empty_driver.spawn(InstanceSpec("twin"))
    assert "twin" in str(raised.value)
    assert [snapshot(r) for r in empty_driver.list_instances()] == [snapshot(first)]
    assert event_log.events == []


def test_delete_removes_the_instance_with_a_deleted_event(
    demo_driver: FakeDriver, event_log: EventLog
) -> None:
    web = demo_driver.get_instance("web-1")
    with demo_driver.subscribe(event_log):
        demo_driver.delete("web-1")
    with pytest.raises(InstanceNotFound):
        demo_driver.get_instance("web-1")
    assert web.id not in {r.id for r in demo_driver.list_instances()}
    events = event_log.about(web.id)
    assert [event.kind for event in events] == [EventKind.DELETED]
    assert events[0].caused_by_operation is Operation.DELETE
    with pytest.raises(InstanceNotFound):
        demo_driver.delete("web-1")


def test_deleted_name_can_be_spawned_again(empty_driver: FakeDriver) -> None:
    old = empty_driver.spawn(InstanceSpec("phoenix"))
    empty_driver.delete("phoenix")
    new = empty_driver.spawn(InstanceSpec("phoenix"))
    assert new.id != old.id
    assert new.power_state is PowerState.RUNNING


@pytest.mark.parametrize("vcpus", [1, 3])
def test_vcpu_stats_has_one_entry_per_vcpu_with_fractions_summing_to_one(
    empty_driver: FakeDriver, vcpus: int
) -> None:
    empty_driver.spawn(InstanceSpec("stats", vcpus=vcpus))
    stats = empty_driver.vcpu_stats("stats", window=0.05)
    assert [s.vcpu for s in stats] == list(range(vcpus))
    for entry in stats:
        assert isinstance(entry, VcpuStats)
        assert entry.window_s == 0.05
        assert min(entry.running, entry.blocked, entry.waiting) >= 0
        assert entry.running + entry.blocked + entry.waiting == pytest.approx(1.0)


@pytest.mark.parametrize("state", [s for s in REACHABLE_STATES if s is not PowerState.RUNNING])
def test_vcpu_stats_refuses_an_instance_that_is_not_running(
    empty_driver: FakeDriver, state: PowerState
) -> None:
    spawn_in_state(empty_driver, "idle", state)
    with pytest.raises(InvalidStateTransition) as raised:
        empty_driver.vcpu_stats("idle", window=0.01)
    assert "'idle'" in str(raised.value)
    assert "vcpu_stats" in str(raised.value)
    assert state.value in str(raised.value)


@pytest.mark.parametrize("state", REACHABLE_STATES)
def test_crash_control_follows_the_power_off_row(
    empty_driver: FakeDriver, event_log: EventLog, state: PowerState
) -> None:
    before = spawn_in_state(empty_driver, "victim", state)
    with empty_driver.subscribe(event_log):
        if state in OPERATION_TABLE[Operation.POWER_OFF].allowed_from:
            assert empty_driver.crash("victim").power_state is PowerState.CRASHED
            assert empty_driver.get_instance("victim").native_reason == "panicked"
            expected = [] if state is PowerState.CRASHED else [EventKind.CRASHED]
            assert event_log.kinds(before.id) == expected
            assert all(event.caused_by_operation is None for event in event_log.events)
        else:
            with pytest.raises(InvalidStateTransition):
                empty_driver.crash("victim")
            assert snapshot(empty_driver.get_instance("victim")) == snapshot(before)
            assert event_log.events == []


def test_an_operation_on_a_stale_reading_is_checked_against_the_current_state(
    demo_driver: FakeDriver, event_log: EventLog
) -> None:
    # What happens when another thread or process changes the instance between the core's
    # check and the fake's own transaction: the primitive checks the table again.
    stale = demo_driver.get_instance("web-1")
    demo_driver.power_off("web-1")
    demo_driver.subscribe(event_log)
    with pytest.raises(InvalidStateTransition, match="shutoff"):
        demo_driver._pause(stale)
    assert demo_driver.get_instance("web-1").power_state is PowerState.SHUTOFF
    assert event_log.events == []
