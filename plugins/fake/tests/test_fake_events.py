"""Lifecycle events: fan-out to many listeners, isolation, attribution, and agreement with readings."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from fake_helpers import DriverFactory, EventLog, subscribe_settled, wait_until
from powerdrivers_fake import FakeDriver, instance_id
from powerdrivers_fake._store import MemoryStore

from powerdrivers import (
    Event,
    EventKind,
    HypervisorConnectionError,
    InstanceSpec,
    Operation,
    PowerState,
)


def test_every_listener_receives_every_event(demo_driver: FakeDriver) -> None:
    logs = [EventLog() for _ in range(5)]
    subscriptions = [demo_driver.subscribe(log) for log in logs]
    demo_driver.pause("web-1")
    demo_driver.unpause("web-1")
    demo_driver.start("batch-7")
    demo_driver.spawn(InstanceSpec("fresh"))
    expected = [
        EventKind.PAUSED,
        EventKind.UNPAUSED,
        EventKind.STARTED,
        EventKind.SPAWNED,
    ]
    for log in logs:
        assert log.kinds() == expected
        assert log.events == logs[0].events
    for subscription in subscriptions:
        subscription.unsubscribe()


def test_unsubscribe_stops_delivery_to_that_listener_only(demo_driver: FakeDriver) -> None:
    kept, dropped = EventLog(), EventLog()
    demo_driver.subscribe(kept)
    subscription = demo_driver.subscribe(dropped)
    demo_driver.pause("web-1")
    subscription.unsubscribe()
    assert not subscription.active
    subscription.unsubscribe()  # twice is harmless
    demo_driver.unpause("web-1")
    assert dropped.kinds() == [EventKind.PAUSED]
    assert kept.kinds() == [EventKind.PAUSED, EventKind.UNPAUSED]


def test_subscription_as_context_manager_and_resubscribing(demo_driver: FakeDriver) -> None:
    first, second = EventLog(), EventLog()
    activity = []
    with demo_driver.subscribe(first) as subscription:
        activity.append(subscription.active)
        demo_driver.pause("web-1")
    activity.append(subscription.active)
    assert activity == [True, False]
    demo_driver.unpause("web-1")  # nobody listens
    with demo_driver.subscribe(second):
        demo_driver.pause("web-1")
    assert first.kinds() == [EventKind.PAUSED]
    assert second.kinds() == [EventKind.PAUSED]


def test_a_failing_listener_does_not_stop_the_others(
    demo_driver: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    before, after = EventLog(), EventLog()

    def broken(event: Event) -> None:
        raise RuntimeError("listener bug")

    demo_driver.subscribe(before)
    demo_driver.subscribe(broken)
    demo_driver.subscribe(after)
    with caplog.at_level(logging.ERROR, logger="powerdrivers.events"):
        reading = demo_driver.pause("web-1")
        demo_driver.unpause("web-1")
    assert reading.power_state is PowerState.PAUSED
    assert demo_driver.get_instance("web-1").power_state is PowerState.RUNNING
    assert before.kinds() == after.kinds() == [EventKind.PAUSED, EventKind.UNPAUSED]
    failures = [r for r in caplog.records if "listener" in r.getMessage()]
    assert len(failures) == 2
    assert all(r.exc_info is not None and isinstance(r.exc_info[1], RuntimeError) for r in failures)


def test_events_are_attributed_to_our_operations(demo_driver: FakeDriver, event_log: EventLog) -> None:
    calls: list[tuple[Operation, Callable[[], object]]] = [
        (Operation.PAUSE, lambda: demo_driver.pause("web-1")),
        (Operation.UNPAUSE, lambda: demo_driver.unpause("web-1")),
        (Operation.SUSPEND, lambda: demo_driver.suspend("web-1")),
        (Operation.RESUME, lambda: demo_driver.resume("web-1")),
        (Operation.POWER_OFF, lambda: demo_driver.power_off("web-1")),
        (Operation.START, lambda: demo_driver.start("web-1")),
        (Operation.REBOOT, lambda: demo_driver.reboot("web-1", timeout=10)),
        (Operation.HARD_REBOOT, lambda: demo_driver.reboot("web-1", hard=True)),
        (Operation.SHUTDOWN, lambda: demo_driver.shutdown("web-1", timeout=10)),
        (Operation.DELETE, lambda: demo_driver.delete("web-1")),
    ]
    demo_driver.subscribe(event_log)
    for operation, call in calls:
        event_log.clear()
        call()
        assert event_log.events, operation
        assert {e.caused_by_operation for e in event_log.events} == {operation}


@pytest.mark.parametrize(
    ("forced", "kind"),
    [
        (Operation.POWER_OFF, EventKind.STOPPED),
        (Operation.HARD_REBOOT, EventKind.REBOOTED),
        (Operation.DELETE, EventKind.DELETED),
    ],
)
@pytest.mark.parametrize("uri", ["memory", "file"])
def test_an_operation_beginning_meanwhile_does_not_take_the_credit(
    make_driver: DriverFactory, state_uri: str, forced: Operation, kind: EventKind, uri: str
) -> None:
    """Hardening issue, item 1: "pausing web-1 while a power_off of web-1 begins (0.3 s fake
    latency) yields paused caused_by=power_off"."""
    latency = 0.3
    driver = make_driver(state_uri if uri == "file" else None, latency=latency)
    log = EventLog()
    subscribe_settled(driver, log)
    web = instance_id("web-1")
    calls: dict[Operation, Callable[[], object]] = {
        Operation.PAUSE: lambda: driver.pause("web-1"),
        Operation.POWER_OFF: lambda: driver.power_off("web-1"),
        Operation.HARD_REBOOT: lambda: driver.reboot("web-1", hard=True),
        Operation.DELETE: lambda: driver.delete("web-1"),
    }
    errors: list[BaseException] = []

    def run(operation: Operation) -> None:
        try:
            calls[operation]()
        except BaseException as error:
            errors.append(error)

    # Each call reads (one latency), begins, then acts (another): the forced operation,
    # half a latency behind, begins while the pause is under way and acts after it.
    threads = [threading.Thread(target=run, args=(operation,)) for operation in (Operation.PAUSE, forced)]
    threads[0].start()
    time.sleep(latency / 2)
    threads[1].start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    events = log.wait_for(lambda events: len(events) >= 2)
    time.sleep(0.05)
    assert (
        [(e.instance_id, e.kind, e.caused_by_operation) for e in log.events]
        == [
            (web, EventKind.PAUSED, Operation.PAUSE),
            (web, kind, forced),
        ]
        == [(e.instance_id, e.kind, e.caused_by_operation) for e in events]
    )


def test_events_agree_with_the_next_reading(demo_driver: FakeDriver, event_log: EventLog) -> None:
    demo_driver.subscribe(event_log)
    web = demo_driver.get_instance("web-2")
    steps: list[Callable[[], object]] = [
        lambda: demo_driver.pause("web-2"),
        lambda: demo_driver.reboot("web-2", hard=True),
        lambda: demo_driver.suspend("web-2"),
        lambda: demo_driver.start("web-2"),
        lambda: demo_driver.shutdown("web-2", timeout=10),
        lambda: demo_driver.start("web-2"),
        lambda: demo_driver.crash("web-2"),
        lambda: demo_driver.power_off("web-2"),
    ]
    for step in steps:
        count = len(event_log.about(web.id))
        step()
        events = event_log.about(web.id)
        assert len(events) > count
        reading = demo_driver.get_instance("web-2")
        last = events[-1]
        assert (last.power_state, last.transition, last.native_state, last.native_reason) == (
            reading.power_state,
            reading.transition,
            reading.native_state,
            reading.native_reason,
        )
        assert (last.instance_id, last.name) == (reading.id, reading.name)
        assert last.time.tzinfo is not None


def test_crash_control_event_is_not_attributed(demo_driver: FakeDriver, event_log: EventLog) -> None:
    demo_driver.subscribe(event_log)
    demo_driver.start("batch-7")  # an operation of ours just before, within the attribution grace
    crashed = demo_driver.crash("batch-7")
    assert crashed.power_state is PowerState.CRASHED
    last = event_log.about(crashed.id)[-1]
    assert last.kind is EventKind.CRASHED
    assert last.caused_by_operation is None


def test_crash_option_crashes_a_running_instance_unattributed(make_driver: DriverFactory) -> None:
    log = EventLog()
    driver = make_driver(crash="web-1", crash_after=0.2)
    driver.subscribe(log)
    web = driver.get_instance("web-1")
    assert web.power_state is PowerState.RUNNING
    events = log.wait_for(lambda events: any(e.kind is EventKind.CRASHED for e in events))
    crash = next(e for e in events if e.kind is EventKind.CRASHED)
    assert (crash.instance_id, crash.power_state, crash.caused_by_operation) == (
        web.id,
        PowerState.CRASHED,
        None,
    )
    reading = driver.get_instance("web-1")
    assert (reading.power_state, reading.native_reason) == (PowerState.CRASHED, "panicked")
    assert driver.get_instance("web-2").power_state is PowerState.RUNNING


def test_crash_option_arms_when_the_instance_starts(make_driver: DriverFactory) -> None:
    log = EventLog()
    driver = make_driver(crash="batch-7", crash_after=0.1)
    driver.subscribe(log)
    assert driver.get_instance("batch-7").power_state is PowerState.SHUTOFF
    started = driver.start("batch-7")
    assert started.power_state is PowerState.RUNNING
    events = log.wait_for(lambda events: events[-1].kind is EventKind.CRASHED)
    assert [(e.kind, e.caused_by_operation) for e in events] == [
        (EventKind.STARTED, Operation.START),
        (EventKind.CRASHED, None),
    ]


def test_crash_option_rearms_after_unpause(make_driver: DriverFactory) -> None:
    driver = make_driver(crash="web-1", crash_after=0.1)
    driver.pause("web-1")
    driver.unpause("web-1")
    wait_until(lambda: driver.get_instance("web-1").power_state is PowerState.CRASHED, timeout=0.5)


def test_crash_option_rearms_after_resume(make_driver: DriverFactory) -> None:
    driver = make_driver(crash="web-1", crash_after=0.1)
    driver.suspend("web-1")
    driver.resume("web-1")
    wait_until(lambda: driver.get_instance("web-1").power_state is PowerState.CRASHED, timeout=1.0)


def test_a_listener_may_read_the_driver(demo_driver: FakeDriver) -> None:
    seen: list[PowerState] = []

    def reader(event: Event) -> None:
        assert event.instance_id is not None
        seen.append(demo_driver.get_instance(event.instance_id).power_state)

    demo_driver.subscribe(reader)
    worker = threading.Thread(target=demo_driver.pause, args=("web-1",), daemon=True)
    worker.start()
    worker.join(1)
    assert not worker.is_alive(), "pause() never returned: the listener deadlocked"
    assert seen == [PowerState.PAUSED]


def test_in_memory_events_from_before_subscribing_are_not_replayed(demo_driver: FakeDriver) -> None:
    demo_driver.pause("web-1")
    demo_driver.unpause("web-1")
    log = EventLog()
    demo_driver.subscribe(log)
    demo_driver.pause("web-1")
    assert log.kinds() == [EventKind.PAUSED]


def test_subscribing_while_another_thread_changes_an_instance_misses_nothing_after(
    demo_driver: FakeDriver,
) -> None:
    web = demo_driver.get_instance("web-1")
    stop = threading.Event()
    errors: list[BaseException] = []

    def churn() -> None:
        try:
            while not stop.is_set():
                demo_driver.pause("web-1")
                demo_driver.unpause("web-1")
        except BaseException as error:
            errors.append(error)

    worker = threading.Thread(target=churn, daemon=True)
    worker.start()
    log = EventLog()
    try:
        time.sleep(0.02)
        demo_driver.subscribe(log)
        log.wait_for(lambda events: len(events) >= 20)
    finally:
        stop.set()
        worker.join(5)
    assert errors == []
    kinds = log.kinds(web.id)
    # Whatever change the stream starts with, from then on it skips none.
    assert all(kind in (EventKind.PAUSED, EventKind.UNPAUSED) for kind in kinds)
    assert all(kinds[index] != kinds[index + 1] for index in range(len(kinds) - 1))
    final = demo_driver.get_instance("web-1").power_state
    assert kinds[-1] is (EventKind.PAUSED if final is PowerState.PAUSED else EventKind.UNPAUSED)


def test_subscribe_after_close_is_refused(demo_driver: FakeDriver) -> None:
    demo_driver.close()
    with pytest.raises(HypervisorConnectionError):
        demo_driver.subscribe(EventLog())


def test_in_memory_nothing_is_logged_while_no_one_listens(demo_driver: FakeDriver) -> None:
    store = demo_driver._store
    assert isinstance(store, MemoryStore)
    logged = len(store.committed["events"])
    demo_driver.pause("web-1")
    demo_driver.unpause("web-1")
    assert len(store.committed["events"]) == logged
    demo_driver.subscribe(EventLog())
    demo_driver.pause("web-1")
    assert len(store.committed["events"]) == logged + 1
