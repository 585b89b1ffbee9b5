"""The conformance checks. Collected by the plugin; see :mod:`powerdrivers.conformance`."""

from __future__ import annotations

import itertools
import logging
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC

import pytest

from powerdrivers._capabilities import REQUIRED_CAPABILITIES, Capability
from powerdrivers._driver import Driver
from powerdrivers._event_kinds import EventKind
from powerdrivers._exceptions import InstanceNotFound, InvalidStateTransition, UnsupportedOperation
from powerdrivers._operations import Operation, rule_for
from powerdrivers._outcomes import OperationResult, Outcome
from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState, Transition
from powerdrivers._version import is_compatible
from powerdrivers.conformance._harness import bring_to, guarded
from powerdrivers.conformance._recorder import EventRecorder
from powerdrivers.conformance._settings import KitSettings

_BOGUS = "powerdrivers-kit-no-such-instance-" + uuid.uuid4().hex
_rotation = itertools.count()


def _perform(driver: Driver, operation: Operation, ref: str, settings: KitSettings) -> object:
    timeout = settings.timeout_s
    retry = max(0.5, min(10.0, timeout / 5))
    calls: dict[Operation, Callable[[], object]] = {
        Operation.START: lambda: driver.start(ref),
        Operation.SHUTDOWN: lambda: driver.shutdown(ref, timeout=timeout, retry_interval=retry),
        Operation.POWER_OFF: lambda: driver.power_off(ref),
        Operation.REBOOT: lambda: driver.reboot(ref, timeout=timeout),
        Operation.HARD_REBOOT: lambda: driver.reboot(ref, hard=True, timeout=timeout),
        Operation.PAUSE: lambda: driver.pause(ref),
        Operation.UNPAUSE: lambda: driver.unpause(ref),
        Operation.SUSPEND: lambda: driver.suspend(ref),
        Operation.RESUME: lambda: driver.resume(ref),
        Operation.DELETE: lambda: driver.delete(ref),
    }
    return guarded(f"{operation.value}({ref!r})", calls[operation])


def _check_reading(driver: Driver, reading: InstanceReading) -> None:
    where = f"reading of {reading.name!r}"
    assert isinstance(reading, InstanceReading), f"{where} is a {type(reading).__name__}"
    assert reading.id and reading.name, f"{where} lacks an id or a name"
    assert isinstance(reading.power_state, PowerState), f"{where}: power_state is not a PowerState"
    assert reading.transition is None or isinstance(reading.transition, Transition), (
        f"{where}: bad transition"
    )
    assert isinstance(reading.native_state, str) and reading.native_state, f"{where} has no native state"
    assert reading.observed_at.tzinfo is not None and reading.observed_at.utcoffset() == UTC.utcoffset(None)
    assert driver.native_states.covers(reading.native_state, reading.native_reason), (
        f"{where}: native state {reading.native_state!r} (reason {reading.native_reason!r}) is not in "
        f"the driver's native-state table, so it reads as {reading.power_state.value}"
    )


def _check_gone(driver: Driver, settings: KitSettings, operation: Operation, ref: str) -> None:
    """Fail unless neither ``driver`` nor a fresh connection finds the instance ``operation`` removed.

    The connection that deleted it may only have forgotten it; another one
    asks the hypervisor.
    """
    done = f"{operation.value}({ref!r}) returned"
    left = _found(driver, ref)
    if left is not None:
        pytest.fail(f"{done}, but the instance is still {_state_of(left)}", pytrace=False)
    with guarded("connecting again", settings.connect) as fresh:
        left = _found(fresh, ref)
    if left is not None:
        pytest.fail(
            f"{done} and the connection that ran it no longer finds the instance, but a fresh "
            f"connection does: it is still {_state_of(left)} on the hypervisor",
            pytrace=False,
        )


def _found(driver: Driver, ref: str) -> InstanceReading | None:
    try:
        return guarded("get_instance", driver.get_instance, ref)
    except InstanceNotFound:
        return None


def _state_of(reading: InstanceReading) -> str:
    return f"{reading.power_state.value} (native {reading.native_state!r})"


@pytest.fixture(autouse=True)
def _no_contract_breach(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a check during which the core caught the driver breaking its contract.

    The core hides some breaches from callers (a primitive returning a
    stale reading is re-read), so they show only in its contract log.
    """
    with caplog.at_level(logging.WARNING, logger="powerdrivers.contract"):
        yield
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    breaches = [record.getMessage() for record in records if record.name == "powerdrivers.contract"]
    if breaches:
        pytest.fail("the driver broke its contract: " + "; ".join(dict.fromkeys(breaches)), pytrace=False)


@pytest.fixture
def instance(kit_driver: Driver, kit_settings: KitSettings) -> Iterator[str]:
    """Yield an instance id the test may change: spawned for it, or one the kit was given."""
    if not kit_settings.spawn:
        ref = kit_settings.instances[next(_rotation) % len(kit_settings.instances)]
        yield guarded("get_instance", kit_driver.get_instance, ref).id
        return
    spec = kit_settings.instance_spec(f"pdkit-{uuid.uuid4().hex[:10]}")
    reading = guarded("spawn", kit_driver.spawn, spec)
    yield reading.id
    try:
        if Capability.DELETE in kit_driver.capabilities:
            kit_driver.delete(reading.id)
        elif kit_driver.get_instance(reading.id).power_state is not PowerState.SHUTOFF:
            kit_driver.power_off(reading.id)
    except InstanceNotFound:
        pass


def test_the_driver_declares_a_usable_contract(kit_settings: KitSettings) -> None:
    """The loader's validation, plus a compatible interface version and a native-state table."""
    driver_class = kit_settings.driver_class()
    assert is_compatible(driver_class.interface_version)
    assert driver_class.capabilities >= REQUIRED_CAPABILITIES
    assert len(driver_class.native_states) > 0, "the native-state table is empty"


def test_every_reading_carries_canonical_and_native_values(kit_driver: Driver, instance: str) -> None:
    """``list_instances`` readings are complete and covered by the native-state table."""
    readings = guarded("list_instances", kit_driver.list_instances)
    assert instance in {reading.id for reading in readings}
    for reading in readings:
        _check_reading(kit_driver, reading)


def test_instances_are_found_by_id_and_by_name(kit_driver: Driver, instance: str) -> None:
    """``get_instance`` accepts the id and the name and they agree."""
    by_id = guarded("get_instance", kit_driver.get_instance, instance)
    by_name = guarded("get_instance", kit_driver.get_instance, by_id.name)
    assert (by_name.id, by_name.name) == (by_id.id, by_id.name)


def test_a_bogus_instance_is_not_found(
    kit_driver: Driver, kit_settings: KitSettings, any_operation: Operation
) -> None:
    """Every operation on an unknown id raises ``InstanceNotFound`` (or, undeclared, unsupported)."""
    declared = Capability.for_operation(any_operation) in kit_driver.capabilities
    expected: type[Exception] = InstanceNotFound if declared else UnsupportedOperation
    with pytest.raises(expected):
        _perform(kit_driver, any_operation, _BOGUS, kit_settings)
    with pytest.raises(InstanceNotFound):
        guarded("get_instance", kit_driver.get_instance, _BOGUS)


def test_declared_operation_follows_the_table(
    kit_driver: Driver,
    kit_settings: KitSettings,
    instance: str,
    declared_operation: Operation,
    start_state: PowerState,
) -> None:
    """From each reachable state: the table's result, ``already_off``, or a refusal that changes nothing."""
    rule = rule_for(declared_operation)
    bring_to(kit_driver, instance, start_state)
    before = guarded("get_instance", kit_driver.get_instance, instance)
    if start_state in rule.already_done_in:
        result = _perform(kit_driver, declared_operation, instance, kit_settings)
        assert isinstance(result, OperationResult) and result.outcome is Outcome.ALREADY_OFF
        return
    if start_state not in rule.allowed_from:
        with pytest.raises(InvalidStateTransition) as caught:
            _perform(kit_driver, declared_operation, instance, kit_settings)
        assert caught.value.operation == declared_operation.value, str(caught.value)
        after = guarded("get_instance", kit_driver.get_instance, instance)
        assert (after.power_state, after.native_state, after.native_reason) == (
            before.power_state,
            before.native_state,
            before.native_reason,
        ), f"a refused {declared_operation.value} changed the instance"
        return
    result = _perform(kit_driver, declared_operation, instance, kit_settings)
    if rule.result is None:
        _check_gone(kit_driver, kit_settings, declared_operation, instance)
        return
    if rule.guest_dependent or declared_operation is Operation.HARD_REBOOT:
        assert isinstance(result, OperationResult), (
            f"{declared_operation.value} must return an OperationResult"
        )
        assert isinstance(result.outcome, Outcome)
    after = guarded("get_instance", kit_driver.get_instance, instance)
    _check_reading(kit_driver, after)
    assert after.power_state is rule.result, (
        f"{declared_operation.value} from {start_state.value} should end {rule.result.value}, "
        f"but the instance is {after.power_state.value} (native {after.native_state!r})"
    )


def test_an_undeclared_capability_is_unsupported(
    kit_driver: Driver, kit_settings: KitSettings, instance: str, undeclared_capability: Capability
) -> None:
    """A feature the driver does not declare raises ``UnsupportedOperation``, never anything else."""
    operations = [op for op in Operation if Capability.for_operation(op) is undeclared_capability]
    calls: list[Callable[[], object]] = [
        lambda op=op: _perform(kit_driver, op, instance, kit_settings)  # type: ignore[misc]
        for op in operations
        if op is not Operation.SPAWN
    ]
    if undeclared_capability is Capability.SPAWN:
        calls.append(
            lambda: guarded("spawn", kit_driver.spawn, kit_settings.instance_spec("pdkit-undeclared"))
        )
    if undeclared_capability is Capability.VCPU_STATS:
        calls.append(lambda: guarded("vcpu_stats", kit_driver.vcpu_stats, instance, 0.1))
    for call in calls:
        with pytest.raises(UnsupportedOperation):
            call()


def test_graceful_shutdown_reports_an_outcome(
    kit_driver: Driver, kit_settings: KitSettings, instance: str
) -> None:
    """A graceful shutdown of a running instance ends off, saying how, within its bound."""
    if Capability.SHUTDOWN not in kit_driver.capabilities:
        with pytest.raises(UnsupportedOperation):
            _perform(kit_driver, Operation.SHUTDOWN, instance, kit_settings)
        return
    bring_to(kit_driver, instance, PowerState.RUNNING)
    result = _perform(kit_driver, Operation.SHUTDOWN, instance, kit_settings)
    assert isinstance(result, OperationResult)
    assert result.outcome in (Outcome.GRACEFUL, Outcome.FORCED)
    assert 0 <= result.elapsed_s <= kit_settings.timeout_s + 30
    assert result.reading.power_state is PowerState.SHUTOFF
    again = _perform(kit_driver, Operation.SHUTDOWN, instance, kit_settings)
    assert isinstance(again, OperationResult) and again.outcome is Outcome.ALREADY_OFF


def test_events_follow_state_changes_and_name_their_cause(
    kit_driver: Driver, kit_settings: KitSettings, instance: str
) -> None:
    """Stopping and starting produce events, attributed to the operation that caused them."""
    bring_to(kit_driver, instance, PowerState.RUNNING)
    events = EventRecorder()
    timeout = kit_settings.event_timeout_s
    with guarded("subscribe", kit_driver.subscribe, events):
        _perform(kit_driver, Operation.POWER_OFF, instance, kit_settings)
        # By kind too: the instance's own spawn (a shut-off definition) may be told after subscribing.
        stopped = events.wait_for_event(
            kind=EventKind.STOPPED, instance_id=instance, power_state=PowerState.SHUTOFF, timeout=timeout
        )
        events.clear()
        _perform(kit_driver, Operation.START, instance, kit_settings)
        started = events.wait_for_event(instance_id=instance, power_state=PowerState.RUNNING, timeout=timeout)
    assert stopped.kind is EventKind.STOPPED and stopped.caused_by_operation is Operation.POWER_OFF, stopped
    assert started.caused_by_operation is Operation.START, started
    assert started.kind in rule_for(Operation.START).events, started


def test_vcpu_statistics_are_fractions_of_the_window(
    kit_driver: Driver, kit_settings: KitSettings, instance: str
) -> None:
    """Declared VCPU statistics give each VCPU's running/blocked/waiting fractions."""
    if Capability.VCPU_STATS not in kit_driver.capabilities:
        with pytest.raises(UnsupportedOperation):
            guarded("vcpu_stats", kit_driver.vcpu_stats, instance, 0.1)
        return
    bring_to(kit_driver, instance, PowerState.RUNNING)
    stats = guarded("vcpu_stats", kit_driver.vcpu_stats, instance, 0.2)
    assert stats, "no VCPU statistics for a running instance"
    for sample in stats:
        assert sample.running + sample.blocked + sample.waiting <= 1 + 1e-6
    bring_to(kit_driver, instance, PowerState.SHUTOFF)
    with pytest.raises(InvalidStateTransition):
        guarded("vcpu_stats", kit_driver.vcpu_stats, instance, 0.1)
