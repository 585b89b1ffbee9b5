"""Guest-dependent operations: graceful shutdown and verified soft reboot, with their fallbacks."""

from __future__ import annotations

import itertools
import threading

import pytest
from fake_helpers import DriverFactory, EventLog, counting, snapshot, spawn_in_state
from powerdrivers_fake import FakeDriver

from powerdrivers import (
    ConfigurationError,
    EventKind,
    InvalidStateTransition,
    Operation,
    OperationResult,
    Outcome,
    PowerState,
    Transition,
)

GUEST_DELAY = 0.05
LONG_TIMEOUT = 30.0


@pytest.fixture
def driver(make_driver: DriverFactory) -> FakeDriver:
    """The demo instances: web-1/web-2 cooperate, legacy-db ignores ACPI, cache-1 is paused, batch-7 off."""
    return make_driver(guest_delay=GUEST_DELAY)


# -- shutdown -----------------------------------------------------------------


def test_cooperative_shutdown_is_graceful_and_ends_on_the_stopped_event(
    driver: FakeDriver, event_log: EventLog
) -> None:
    web = driver.get_instance("web-1")
    with driver.subscribe(event_log), counting(driver, "_request_shutdown") as requests:
        result = driver.shutdown("web-1", timeout=LONG_TIMEOUT, retry_interval=LONG_TIMEOUT)
    assert result.outcome is Outcome.GRACEFUL
    assert result.succeeded
    assert result.operation is Operation.SHUTDOWN
    # It took about the guest's delay, not a retry interval or the timeout: the event ended the wait.
    assert GUEST_DELAY * 0.9 <= result.elapsed_s < 2.0
    assert len(requests) == 1
    assert result.reading.power_state is PowerState.SHUTOFF
    assert result.reading.transition is None
    assert result.reading.native_reason == "shutdown"
    events = event_log.about(web.id)
    assert [(e.kind, e.power_state, e.transition) for e in events] == [
        (EventKind.TRANSITION, PowerState.RUNNING, Transition.SHUTTING_DOWN),
        (EventKind.STOPPED, PowerState.SHUTOFF, None),
    ]
    assert all(e.caused_by_operation is Operation.SHUTDOWN for e in events)


def test_reading_mid_shutdown_is_running_and_shutting_down(make_driver: DriverFactory) -> None:
    driver = make_driver(guest_delay=0.3)
    began = threading.Event()
    driver.subscribe(lambda e: began.set() if e.transition is Transition.SHUTTING_DOWN else None)
    results: list[OperationResult] = []
    worker = threading.Thread(
        target=lambda: results.append(driver.shutdown("web-1", timeout=LONG_TIMEOUT, retry_interval=10))
    )
    worker.start()
    try:
        assert began.wait(5)
        middle = driver.get_instance("web-1")
        listed = {r.name: r for r in driver.list_instances()}["web-1"]
    finally:
        worker.join(10)
    for reading in (middle, listed):
        assert reading.power_state is PowerState.RUNNING
        assert reading.transition is Transition.SHUTTING_DOWN
        assert reading.native_state == "shutting_down"
    assert [r.outcome for r in results] == [Outcome.GRACEFUL]


def test_uncooperative_shutdown_resends_the_request_then_forces(
    driver: FakeDriver, event_log: EventLog
) -> None:
    legacy = driver.get_instance("legacy-db")
    with driver.subscribe(event_log), counting(driver, "_request_shutdown") as requests:
        result = driver.shutdown("legacy-db", timeout=0.25, retry_interval=0.1)
    assert result.outcome is Outcome.FORCED
    assert result.succeeded
    assert result.elapsed_s >= 0.25
    assert result.reading.power_state is PowerState.SHUTOFF
    assert result.reading.native_reason == "destroyed"
    # Sent at 0, 0.1 and 0.2 s (a fourth only if the last wait ended a hair early).
    assert 3 <= len(requests) <= 4
    gaps = [later - earlier for earlier, later in itertools.pairwise(requests)]
    assert all(gap >= 0.09 for gap in gaps[:2]), gaps
    events = event_log.about(legacy.id)
    assert [e.kind for e in events] == [EventKind.STOPPED]
    assert events[0].caused_by_operation is Operation.SHUTDOWN


def test_shutdown_without_force_times_out_and_leaves_it_running(
    driver: FakeDriver, event_log: EventLog
) -> None:
    with driver.subscribe(event_log):
        result = driver.shutdown("legacy-db", timeout=0.1, retry_interval=0.05, force=False)
    assert result.outcome is Outcome.TIMED_OUT
    assert not result.succeeded
    assert result.elapsed_s >= 0.1
    assert result.reading.power_state is PowerState.RUNNING
    after = driver.get_instance("legacy-db")
    assert (after.power_state, after.transition) == (PowerState.RUNNING, None)
    assert event_log.events == []


def test_shutdown_of_an_instance_that_is_off_is_already_off(driver: FakeDriver, event_log: EventLog) -> None:
    with driver.subscribe(event_log), counting(driver, "_request_shutdown") as requests:
        result = driver.shutdown("batch-7", timeout=LONG_TIMEOUT)
    assert result.outcome is Outcome.ALREADY_OFF
    assert result.succeeded
    assert result.elapsed_s < 1
    assert result.reading.power_state is PowerState.SHUTOFF
    assert requests == []
    assert event_log.events == []


def test_shutdown_of_a_paused_instance_is_forced_after_the_timeout(driver: FakeDriver) -> None:
    result = driver.shutdown("cache-1", timeout=0.1, retry_interval=0.05)
    assert result.outcome is Outcome.FORCED
    assert result.reading.power_state is PowerState.SHUTOFF


def test_shutdown_can_be_repeated_while_one_is_in_flight(make_driver: DriverFactory) -> None:
    driver = make_driver(guest_delay=0.3)
    began = threading.Event()
    driver.subscribe(lambda e: began.set() if e.transition is Transition.SHUTTING_DOWN else None)
    results: list[OperationResult] = []
    worker = threading.Thread(target=lambda: results.append(driver.shutdown("web-1", timeout=LONG_TIMEOUT)))
    worker.start()
    try:
        assert began.wait(5)
        with pytest.raises(InvalidStateTransition) as raised:
            driver.pause("web-1")
        assert "shutting_down" in str(raised.value)
        second = driver.shutdown("web-1", timeout=LONG_TIMEOUT)
    finally:
        worker.join(10)
    assert second.outcome is Outcome.GRACEFUL
    assert [r.outcome for r in results] == [Outcome.GRACEFUL]


def test_set_cooperative_switches_the_guest(driver: FakeDriver) -> None:
    driver.set_cooperative("web-1", False)
    assert driver.shutdown("web-1", timeout=0.1, retry_interval=0.05).outcome is Outcome.FORCED
    driver.start("web-1")
    driver.set_cooperative("web-1", True)
    assert driver.shutdown("web-1", timeout=LONG_TIMEOUT).outcome is Outcome.GRACEFUL
    driver.set_cooperative("legacy-db", True)
    assert driver.reboot("legacy-db", timeout=LONG_TIMEOUT).outcome is Outcome.GRACEFUL


def test_uncooperative_option_makes_a_guest_ignore_acpi(make_driver: DriverFactory) -> None:
    driver = make_driver(guest_delay=GUEST_DELAY, uncooperative="web-1, web-2")
    for name in ("web-1", "web-2"):
        assert driver.shutdown(name, timeout=0.1, retry_interval=0.05).outcome is Outcome.FORCED


@pytest.mark.parametrize(("timeout", "retry_interval"), [(-1.0, 1.0), (1.0, -1.0), (float("nan"), 1.0)])
def test_shutdown_rejects_bad_durations_and_changes_nothing(
    driver: FakeDriver, event_log: EventLog, timeout: float, retry_interval: float
) -> None:
    before = driver.get_instance("web-1")
    with driver.subscribe(event_log), pytest.raises(ConfigurationError):
        driver.shutdown("web-1", timeout=timeout, retry_interval=retry_interval)
    assert snapshot(driver.get_instance("web-1")) == snapshot(before)
    assert event_log.events == []


# -- reboot -------------------------------------------------------------------


def test_cooperative_soft_reboot_is_graceful_with_a_rebooted_event(
    driver: FakeDriver, event_log: EventLog
) -> None:
    web = driver.get_instance("web-2")
    with driver.subscribe(event_log):
        result = driver.reboot("web-2", timeout=LONG_TIMEOUT)
    assert result.outcome is Outcome.GRACEFUL
    assert result.operation is Operation.REBOOT
    assert GUEST_DELAY * 0.9 <= result.elapsed_s < 2.0
    assert (result.reading.power_state, result.reading.transition) == (PowerState.RUNNING, None)
    assert result.reading.native_reason == "rebooted"
    events = event_log.about(web.id)
    assert [(e.kind, e.transition) for e in events] == [
        (EventKind.TRANSITION, Transition.REBOOTING),
        (EventKind.REBOOTED, None),
    ]
    assert all(e.caused_by_operation is Operation.REBOOT for e in events)
    assert events[-1].power_state is PowerState.RUNNING


def test_uncooperative_soft_reboot_falls_back_to_a_hard_reboot(
    driver: FakeDriver, event_log: EventLog
) -> None:
    legacy = driver.get_instance("legacy-db")
    with driver.subscribe(event_log):
        result = driver.reboot("legacy-db", timeout=0.1)
    assert result.outcome is Outcome.FORCED
    assert result.operation is Operation.REBOOT
    assert result.elapsed_s >= 0.1
    assert result.reading.power_state is PowerState.RUNNING
    assert result.reading.native_reason == "reset"
    events = event_log.about(legacy.id)
    assert [e.kind for e in events] == [EventKind.REBOOTED]
    assert events[0].caused_by_operation is Operation.REBOOT


def test_soft_reboot_without_force_times_out(driver: FakeDriver, event_log: EventLog) -> None:
    with driver.subscribe(event_log):
        result = driver.reboot("legacy-db", timeout=0.1, force=False)
    assert result.outcome is Outcome.TIMED_OUT
    assert not result.succeeded
    assert driver.get_instance("legacy-db").native_reason == "booted"
    assert event_log.events == []


def test_slow_guest_reboot_is_forced_when_the_timeout_is_shorter(make_driver: DriverFactory) -> None:
    driver = make_driver(guest_delay=5)
    result = driver.reboot("web-1", timeout=0.05)
    assert result.outcome is Outcome.FORCED
    assert (result.reading.power_state, result.reading.transition) == (PowerState.RUNNING, None)
    assert result.reading.native_reason == "reset"


@pytest.mark.parametrize("name", ["web-1", "legacy-db", "cache-1"])
def test_hard_reboot_is_forced(driver: FakeDriver, event_log: EventLog, name: str) -> None:
    instance = driver.get_instance(name)
    with driver.subscribe(event_log):
        result = driver.reboot(name, hard=True)
    assert result.outcome is Outcome.FORCED
    assert result.operation is Operation.HARD_REBOOT
    assert result.reading.power_state is PowerState.RUNNING
    events = event_log.about(instance.id)
    assert [e.kind for e in events] == [EventKind.REBOOTED]
    assert events[0].caused_by_operation is Operation.HARD_REBOOT


def test_hard_reboot_recovers_a_crashed_instance(empty_driver: FakeDriver) -> None:
    spawn_in_state(empty_driver, "wreck", PowerState.CRASHED)
    result = empty_driver.reboot("wreck", hard=True)
    assert result.outcome is Outcome.FORCED
    assert result.reading.power_state is PowerState.RUNNING
