"""Helpers shared by the fake driver's tests (imported by them; not a test module)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from powerdrivers_fake import FAKE_NATIVE_STATES, FakeDriver

import powerdrivers
from powerdrivers import (
    OPERATION_TABLE,
    Event,
    EventKind,
    InstanceReading,
    InstanceSpec,
    Operation,
    OperationResult,
    PowerState,
    Subscription,
)
from powerdrivers.conformance import EventRecorder

#: Canonical states the fake can report, derived from its native-state table.
REACHABLE_STATES: tuple[PowerState, ...] = tuple(
    sorted({row.power_state for row in FAKE_NATIVE_STATES}, key=list(PowerState).index)
)

#: Every operation of the table that acts on an existing instance.
INSTANCE_OPERATIONS: tuple[Operation, ...] = tuple(op for op in OPERATION_TABLE if op is not Operation.SPAWN)

#: Short bounds so that guest-dependent operations end quickly in tests.
GUEST_DELAY = 0.02
SHORT_TIMEOUT = 0.15


class DriverFactory(Protocol):
    """Loads the fake driver through the public loader and closes it after the test."""

    def __call__(self, uri: str | None = None, **options: Any) -> FakeDriver: ...


def load_fake(uri: str | None = None, **options: Any) -> FakeDriver:
    """Load the fake driver the way users do, and return it typed as what it is."""
    driver = powerdrivers.load_driver("fake", uri, **options)
    assert isinstance(driver, FakeDriver)
    return driver


class EventLog(EventRecorder):
    """The core's recording listener, with views by instance."""

    def about(self, instance_id: str) -> list[Event]:
        return [event for event in self.events if event.instance_id == instance_id]

    def kinds(self, instance_id: str | None = None) -> list[EventKind]:
        events = self.events if instance_id is None else self.about(instance_id)
        return [event.kind for event in events]

    def wait_for(self, predicate: Callable[[list[Event]], bool], timeout: float = 5.0) -> list[Event]:
        """Wait until ``predicate(events)`` holds; fail the test if it does not within ``timeout``."""
        return self.wait_until(predicate, timeout)


def subscribe_settled(driver: FakeDriver, listener: Callable[[Event], None]) -> Subscription:
    """Subscribe, then let a file-store watcher take its first look before the test changes anything.

    Works around the start-up race that test_a_change_right_after_subscribing_is_delivered exposes.
    """
    subscription = driver.subscribe(listener)
    time.sleep(0.05)
    return subscription


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005) -> None:
    """Poll ``predicate`` until it holds; fail the test if it does not within ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def spawn_in_state(driver: FakeDriver, name: str, state: PowerState) -> InstanceReading:
    """Create an instance called ``name`` and bring it into ``state`` through public calls."""
    reading = driver.spawn(InstanceSpec(name, vcpus=2))
    if state is PowerState.PAUSED:
        reading = driver.pause(name)
    elif state is PowerState.SUSPENDED:
        reading = driver.suspend(name)
    elif state is PowerState.SHUTOFF:
        reading = driver.power_off(name)
    elif state is PowerState.CRASHED:
        reading = driver.crash(name)
    assert reading.power_state is state, f"could not set {name} up as {state}"
    return reading


def perform(
    driver: FakeDriver, operation: Operation, ref: str, timeout: float = SHORT_TIMEOUT
) -> InstanceReading | OperationResult | None:
    """Call the public method that carries out ``operation`` on ``ref``."""
    if operation is Operation.START:
        return driver.start(ref)
    if operation is Operation.SHUTDOWN:
        return driver.shutdown(ref, timeout=timeout, retry_interval=timeout / 3)
    if operation is Operation.POWER_OFF:
        return driver.power_off(ref)
    if operation is Operation.REBOOT:
        return driver.reboot(ref, timeout=timeout)
    if operation is Operation.HARD_REBOOT:
        return driver.reboot(ref, hard=True)
    if operation is Operation.PAUSE:
        return driver.pause(ref)
    if operation is Operation.UNPAUSE:
        return driver.unpause(ref)
    if operation is Operation.SUSPEND:
        return driver.suspend(ref)
    if operation is Operation.RESUME:
        return driver.resume(ref)
    if operation is Operation.DELETE:
        driver.delete(ref)
        return None
    raise AssertionError(f"no public call known for {operation}")


def snapshot(reading: InstanceReading) -> tuple[object, ...]:
    """What must not change when an operation is refused."""
    return (
        reading.id,
        reading.name,
        reading.power_state,
        reading.transition,
        reading.native_state,
        reading.native_reason,
    )


@contextmanager
def counting(driver: FakeDriver, method: str) -> Iterator[list[float]]:
    """Record the monotonic time of every call of the driver's ``method`` inside the block."""
    original = getattr(driver, method)
    calls: list[float] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(time.monotonic())
        return original(*args, **kwargs)

    setattr(driver, method, wrapper)
    try:
        yield calls
    finally:
        delattr(driver, method)
