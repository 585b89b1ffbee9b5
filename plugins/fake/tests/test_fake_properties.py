"""Property tests: random operation sequences always follow the table, and events replay to the truth."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

from fake_helpers import INSTANCE_OPERATIONS, EventLog, load_fake, snapshot
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from powerdrivers_fake import FakeDriver

from powerdrivers import (
    OPERATION_TABLE,
    Event,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    InvalidSpec,
    InvalidStateTransition,
    Operation,
    OperationResult,
    Outcome,
    PowerDriversError,
    PowerState,
)

CRASH = "crash"  # the FakeDriver control, mixed in with the operations
NAMES = ("vm-0", "vm-1", "vm-2")
UNCOOPERATIVE = "vm-2"
QUICK = 0.01  # the timeout where the guest will not answer
AMPLE = 5.0  # the timeout where it will (it answers in about GUEST_DELAY)
GUEST_DELAY = 0.001

ACTIONS: list[Operation | str] = [*INSTANCE_OPERATIONS, Operation.SPAWN, CRASH]


@dataclass(frozen=True)
class Step:
    action: Operation | str
    name: str
    force: bool
    via_second_driver: bool


PROPERTY_SETTINGS = settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _times_out(step: Step, state: PowerState | None) -> bool:
    """Whether a guest-dependent step ends timed_out: the guest will not answer and forcing is refused."""
    guest_ignores = step.name == UNCOOPERATIVE or state is PowerState.PAUSED
    return step.action in (Operation.SHUTDOWN, Operation.REBOOT) and guest_ignores and not step.force


def _expect(step: Step, state: PowerState | None) -> tuple[type[PowerDriversError] | None, PowerState | None]:
    """Return the error the step must raise (or None) and the state it must leave the instance in."""
    if step.action is Operation.SPAWN:
        return (None, PowerState.RUNNING) if state is None else (InvalidSpec, state)
    if state is None:
        return InstanceNotFound, None
    if step.action == CRASH:
        if state in OPERATION_TABLE[Operation.POWER_OFF].allowed_from:
            return None, PowerState.CRASHED
        return InvalidStateTransition, state
    assert isinstance(step.action, Operation)
    rule = OPERATION_TABLE[step.action]
    if state in rule.already_done_in:
        return None, state
    if state not in rule.allowed_from:
        return InvalidStateTransition, state
    return None, state if _times_out(step, state) else rule.result


def _run(driver: FakeDriver, step: Step, state: PowerState | None) -> object:
    guest_ignores = step.name == UNCOOPERATIVE or state is PowerState.PAUSED
    timeout = QUICK if guest_ignores else AMPLE
    if step.action is Operation.SPAWN:
        reading = driver.spawn(InstanceSpec(step.name))
        if step.name == UNCOOPERATIVE:
            driver.set_cooperative(step.name, False)
        return reading
    if step.action == CRASH:
        return driver.crash(step.name)
    if step.action is Operation.SHUTDOWN:
        return driver.shutdown(step.name, timeout=timeout, retry_interval=timeout, force=step.force)
    if step.action is Operation.REBOOT:
        return driver.reboot(step.name, timeout=timeout, force=step.force)
    if step.action is Operation.HARD_REBOOT:
        return driver.reboot(step.name, hard=True)
    if step.action is Operation.DELETE:
        driver.delete(step.name)
        return None
    return getattr(driver, str(step.action))(step.name)


def _replay(events: list[Event]) -> dict[str, PowerState]:
    states: dict[str, PowerState] = {}
    for event in events:
        assert event.instance_id is not None and event.power_state is not None
        if event.kind is EventKind.DELETED:
            del states[event.instance_id]
        else:
            if event.kind is not EventKind.SPAWNED:
                assert event.instance_id in states, f"{event} about an instance that does not exist"
            states[event.instance_id] = event.power_state
    return states


def _draw_step(data: st.DataObject, model: dict[str, PowerState], two_drivers: bool) -> Step:
    """Draw a step; half the time among the actions the table permits, so that long paths get explored."""
    name = data.draw(st.sampled_from(NAMES), label="name")
    state = model.get(name)
    permitted = [action for action in ACTIONS if _expect(Step(action, name, True, False), state)[0] is None]
    pool = permitted if data.draw(st.booleans(), label="permitted only") else ACTIONS
    action = data.draw(st.sampled_from(pool), label="action")
    force = data.draw(st.booleans(), label="force")
    via_second = two_drivers and data.draw(st.booleans(), label="via second driver")
    return Step(action, name, force, via_second)


def _check_sequence(first: FakeDriver, second: FakeDriver, data: st.DataObject) -> None:
    """Run random steps against the model through either driver; ``first`` records the events.

    Every call of ``first`` delivers the events committed so far (whoever committed them), so after a
    read through it the replayed stream must equal the readings exactly.
    """
    log = EventLog()
    first.subscribe(log)
    model: dict[str, PowerState] = {}

    def replay_matches() -> bool:
        readings = first.list_instances()
        return _replay(log.events) == {r.id: r.power_state for r in readings}

    for name in NAMES:
        _run(first, Step(Operation.SPAWN, name, True, False), None)
        model[name] = PowerState.RUNNING
    for _ in range(data.draw(st.integers(3, 30), label="steps")):
        step = _draw_step(data, model, two_drivers=first is not second)
        driver = second if step.via_second_driver else first
        state = model.get(step.name)
        before: InstanceReading | None = driver.get_instance(step.name) if state is not None else None
        error, expected = _expect(step, state)
        first.list_instances()
        events_before = len(log.events)
        try:
            result = _run(driver, step, state)
        except PowerDriversError as raised:
            assert error is not None, f"{step} from {state} raised {raised!r}"
            assert isinstance(raised, error), f"{step} from {state} raised {raised!r}, not {error.__name__}"
            if before is not None:
                assert snapshot(driver.get_instance(step.name)) == snapshot(before)
            first.list_instances()
            assert len(log.events) == events_before, f"refused {step} emitted events"
            continue
        assert error is None, f"{step} from {state} did not raise {error.__name__}"
        if isinstance(result, OperationResult):
            if state in OPERATION_TABLE[result.operation].already_done_in:
                assert result.outcome is Outcome.ALREADY_OFF
            elif _times_out(step, state):
                assert result.outcome is Outcome.TIMED_OUT
            elif (
                step.name == UNCOOPERATIVE
                or state is PowerState.PAUSED
                or step.action is Operation.HARD_REBOOT
            ):
                assert result.outcome is Outcome.FORCED
            else:
                assert result.outcome is Outcome.GRACEFUL
        if expected is None:
            del model[step.name]
        else:
            model[step.name] = expected
        for reader in (first, second):
            actual = {r.name: (r.power_state, r.transition) for r in reader.list_instances()}
            assert actual == {name: (s, None) for name, s in model.items()}, f"after {step}"
        assert replay_matches(), f"the event stream disagrees with the readings after {step}"


@PROPERTY_SETTINGS
@given(data=st.data())
def test_random_sequences_follow_the_table_in_memory(data: st.DataObject) -> None:
    with load_fake("fake:///", seed="empty", guest_delay=GUEST_DELAY) as driver:
        assert isinstance(driver, FakeDriver)
        _check_sequence(driver, driver, data)


@settings(PROPERTY_SETTINGS, max_examples=40)
@given(data=st.data())
def test_random_sequences_through_two_drivers_sharing_a_file(data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory() as directory:
        uri = f"fake://{Path(directory) / 'state.json'}"
        options = {"seed": "empty", "guest_delay": GUEST_DELAY, "poll_interval": 0.005}
        with load_fake(uri, **options) as first, load_fake(uri, **options) as second:
            assert isinstance(first, FakeDriver) and isinstance(second, FakeDriver)
            _check_sequence(first, second, data)
