"""Attribution and outcomes stay true when operations run concurrently on one instance."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pytest

from powerdrivers import (
    Capability,
    Driver,
    Event,
    EventKind,
    HypervisorConnectionError,
    InstanceReading,
    InvalidStateTransition,
    NativeMapping,
    NativeStateTable,
    Operation,
    Outcome,
    PowerDriversError,
    PowerState,
)
from powerdrivers._tracking import OperationTracker


def _table(forced_reasons: bool) -> NativeStateTable:
    return NativeStateTable(
        "hyper",
        [
            NativeMapping("running", None, PowerState.RUNNING, None),
            NativeMapping("paused", None, PowerState.PAUSED, None),
            NativeMapping("shutoff", None, PowerState.SHUTOFF, None),
            NativeMapping("shutoff", "destroyed", PowerState.SHUTOFF, None, forced=forced_reasons),
        ],
    )


class HyperDriver(Driver):
    """One instance on a pretend hypervisor that reports its changes from an event thread, in order.

    Its hard reboot is a reset that reports only ``rebooted`` (as QEMU's
    system_reset does); its guest ignores shutdown requests unless
    ``cooperative``; ``delay`` seconds pass inside every primitive before
    the hypervisor acts, so operations from several threads overlap.
    """

    name: ClassVar[str] = "hyper"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.START,
            Capability.POWER_OFF,
            Capability.SHUTDOWN,
            Capability.HARD_REBOOT,
            Capability.PAUSE,
            Capability.NATIVE_EVENTS,
        }
    )
    native_states = _table(forced_reasons=True)
    # Its event thread reports the reset, after _hard_reboot returned: the core must not too.
    reports_resets = True

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri)
        self.state, self.reason = "running", "booted"
        self.cooperative = bool(options.get("cooperative", False))
        self.delay = float(options.get("delay", 0.0))
        self.stale_start = False
        self._lock = threading.Lock()
        self._queue: queue.Queue[tuple[EventKind, InstanceReading] | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one("vm")]

    def _read_one(self, ref: str) -> InstanceReading:
        with self._lock:
            return self.native_states.reading("vm", "vm", self.state, self.reason)

    def _act(self, state: str, reason: str, kind: EventKind) -> None:
        time.sleep(self.delay)
        with self._lock:
            self.state, self.reason = state, reason
            self._queue.put((kind, self.native_states.reading("vm", "vm", state, reason)))

    def _start(self, instance: InstanceReading) -> InstanceReading | None:
        self._act("running", "booted", EventKind.STARTED)
        return instance if self.stale_start else None

    def _power_off(self, instance: InstanceReading) -> None:
        self._act("shutoff", "destroyed", EventKind.STOPPED)

    def _pause(self, instance: InstanceReading) -> None:
        self._act("paused", "user", EventKind.PAUSED)

    def _hard_reboot(self, instance: InstanceReading) -> None:
        self._act("running", "reset", EventKind.REBOOTED)

    def _request_shutdown(self, instance: InstanceReading) -> None:
        if self.cooperative:
            threading.Timer(0.05, self._act, ("shutoff", "shutdown", EventKind.STOPPED)).start()

    def _start_native_events(self) -> None:
        self._thread = threading.Thread(target=self._deliver, daemon=True)
        self._thread.start()

    def _stop_native_events(self) -> None:
        self._queue.put(None)
        if self._thread is not None:
            self._thread.join(5)

    def _deliver(self) -> None:
        while (item := self._queue.get()) is not None:
            self._publish(*item)


class UntoldHyperDriver(HyperDriver):
    """The same hypervisor, but its native states do not say whether a stop was forced."""

    native_states = _table(forced_reasons=False)


@pytest.fixture
def recorded() -> Iterator[tuple[HyperDriver, list[Event]]]:
    driver = HyperDriver()
    events: list[Event] = []
    with driver, driver.subscribe(events.append):
        yield driver, events


def _settle(events: list[Event], count: int) -> list[tuple[str, str | None]]:
    deadline = time.monotonic() + 5
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return [(e.kind.value, e.caused_by_operation.value if e.caused_by_operation else None) for e in events]


def test_a_reset_only_hard_reboot_owes_no_stop_or_start(recorded: tuple[HyperDriver, list[Event]]) -> None:
    driver, events = recorded
    driver.reboot("vm", hard=True)
    driver.power_off("vm")
    driver.start("vm")
    assert _settle(events, 3) == [("rebooted", "hard_reboot"), ("stopped", "power_off"), ("started", "start")]


def test_a_forced_stop_during_a_graceful_shutdown_is_the_power_offs(
    recorded: tuple[HyperDriver, list[Event]],
) -> None:
    driver, events = recorded
    results: list[Outcome] = []
    shutdown = threading.Thread(target=lambda: results.append(driver.shutdown("vm", timeout=10).outcome))
    shutdown.start()
    time.sleep(0.2)
    driver.power_off("vm")
    shutdown.join(10)
    # Off, but not because the guest shut down.
    assert results == [Outcome.FORCED]
    assert ("stopped", "power_off") in _settle(events, 1)


@pytest.mark.parametrize("driver_class", [HyperDriver, UntoldHyperDriver])
def test_a_caller_who_joined_a_shutdown_that_was_forced_is_told_forced(
    driver_class: type[HyperDriver],
) -> None:
    with driver_class() as driver:
        results: dict[str, Outcome] = {}

        def shut(label: str, timeout: float) -> None:
            results[label] = driver.shutdown("vm", timeout=timeout, retry_interval=0.05).outcome

        first = threading.Thread(target=shut, args=("first", 0.3))
        first.start()
        time.sleep(0.1)
        second = threading.Thread(target=shut, args=("joined", 10))
        second.start()
        first.join(10)
        second.join(10)
        assert results == {"first": Outcome.FORCED, "joined": Outcome.FORCED}


def test_a_guest_that_shuts_down_is_graceful_and_credited_to_the_shutdown() -> None:
    with HyperDriver(cooperative=True) as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            assert driver.shutdown("vm", timeout=5).outcome is Outcome.GRACEFUL
            assert _settle(events, 1) == [("stopped", "shutdown")]


def test_concurrent_operations_keep_their_own_events(recorded: tuple[HyperDriver, list[Event]]) -> None:
    driver, events = recorded
    driver.delay = 0.3
    pausing = threading.Thread(target=driver.pause, args=("vm",))
    pausing.start()
    time.sleep(0.1)
    driver.power_off("vm")
    pausing.join(5)
    assert sorted(_settle(events, 2)) == [("paused", "pause"), ("stopped", "power_off")]


def test_a_refused_operation_is_owed_nothing(recorded: tuple[HyperDriver, list[Event]]) -> None:
    driver, events = recorded
    with pytest.raises(InvalidStateTransition):
        driver.start("vm")  # running already: refused by the table, nothing sent
    driver.power_off("vm")
    driver.state, driver.reason = "running", "booted"
    # A start by someone else, reported by the hypervisor: not ours.
    driver._queue.put((EventKind.STARTED, driver._read_one("vm")))
    assert _settle(events, 2) == [("stopped", "power_off"), ("started", None)]


def test_a_stale_reading_from_a_primitive_is_not_returned(
    recorded: tuple[HyperDriver, list[Event]], caplog: pytest.LogCaptureFixture
) -> None:
    driver, _ = recorded
    driver.power_off("vm")
    driver.stale_start = True
    with caplog.at_level(logging.WARNING, logger="powerdrivers.contract"):
        reading = driver.start("vm")
    assert reading.power_state is PowerState.RUNNING
    assert "hyper driver: _start returned a reading of vm in state shutoff, not running" in caplog.text


def test_subscriptions_are_inactive_once_the_driver_closes() -> None:
    driver = HyperDriver()
    subscription = driver.subscribe(lambda event: None)
    states = [subscription.active]
    driver.close()
    states.append(subscription.active)
    assert states == [True, False]
    subscription.unsubscribe()  # still harmless


class TestTrackerOrdering:
    def test_operations_reaching_the_hypervisor_out_of_order_keep_their_events(self) -> None:
        tracker = OperationTracker(grace_s=5)
        started = tracker.begin("i", Operation.START)
        # A forced power-off begins while the start is still on its way, and gets there first.
        stopped = tracker.begin("i", Operation.POWER_OFF)
        heard: list[Operation | None] = []
        worker = threading.Thread(target=lambda: heard.append(tracker.cause("i", EventKind.STOPPED)))
        worker.start()
        worker.join()
        tracker.end(stopped)
        tracker.end(started)
        assert heard == [Operation.POWER_OFF]
        # The start reached the hypervisor after the power-off: its event is still owed.
        assert tracker.cause("i", EventKind.STARTED) is Operation.START

    def test_an_event_settles_only_operations_that_ended_before_its_own_began(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            pass
        with tracker.track("i", Operation.PAUSE):
            pass
        assert tracker.cause("i", EventKind.PAUSED) is Operation.PAUSE
        assert tracker.cause("i", EventKind.STOPPED) is None

    def test_a_forced_stop_goes_to_an_operation_that_forces(self) -> None:
        tracker = OperationTracker(grace_s=5)
        shutdown = tracker.begin("i", Operation.SHUTDOWN)
        power_off = tracker.begin("i", Operation.POWER_OFF)
        assert tracker.cause("i", EventKind.STOPPED, forced=True) is Operation.POWER_OFF
        tracker.end(power_off)
        assert tracker.cause("i", EventKind.STOPPED, forced=True) is None
        tracker.forcing("i")  # the shutdown falls back to forcing, on its own thread
        assert tracker.cause("i", EventKind.STOPPED, forced=True) is Operation.SHUTDOWN
        tracker.end(shutdown)

    def test_a_refused_operation_owes_nothing(self) -> None:
        tracker = OperationTracker(grace_s=5)
        token = tracker.begin("i", Operation.START)
        tracker.end(token, reached_hypervisor=False)
        assert tracker.cause("i", EventKind.STARTED) is None

    def test_forced_since_sees_other_threads_forcing_while_an_operation_runs(self) -> None:
        tracker = OperationTracker(grace_s=5)
        shutdown = tracker.begin("i", Operation.SHUTDOWN)
        mark = tracker.now()
        assert not tracker.forced_since("i", mark)

        def power_off() -> None:
            with tracker.track("i", Operation.POWER_OFF):
                pass

        worker = threading.Thread(target=power_off)
        worker.start()
        worker.join()
        assert tracker.forced_since("i", mark)
        later = tracker.now()
        assert not tracker.forced_since("i", later)
        tracker.forcing("i")  # the shutdown's own fallback: it knows of that itself
        assert not tracker.forced_since("i", later)
        tracker.end(shutdown)
        # Kept only while an operation runs on the instance: nothing grows with instances gone by.
        assert not tracker.forced_since("i", mark)
        assert tracker._forced == {}

    def test_a_forced_operation_refused_before_it_acted_forced_nothing(self) -> None:
        tracker = OperationTracker(grace_s=5)
        shutdown = tracker.begin("i", Operation.SHUTDOWN)
        mark = tracker.now()
        refused: list[bool] = []

        def power_off() -> None:
            token = tracker.begin("i", Operation.POWER_OFF)
            tracker.end(token, reached_hypervisor=False)
            refused.append(tracker.forced_since("i", mark))

        worker = threading.Thread(target=power_off)
        worker.start()
        worker.join()
        assert refused == [False]
        tracker.end(shutdown)


class LateStopDriver(HyperDriver):
    """Stops its event source only when the test lets it: the race between a last and a first listener."""

    def __init__(self) -> None:
        super().__init__()
        self.stopping = threading.Event()
        self.let_stop = threading.Event()
        self.starts = 0

    def _start_native_events(self) -> None:
        self.starts += 1
        super()._start_native_events()

    def _events_unneeded(self) -> None:
        if not self._closed:
            self.stopping.set()
            self.let_stop.wait(5)
        super()._events_unneeded()


def test_a_new_listener_keeps_the_source_a_departing_one_was_stopping() -> None:
    with LateStopDriver() as driver:
        first = driver.subscribe(lambda event: None)
        leaving = threading.Thread(target=first.unsubscribe)
        leaving.start()
        assert driver.stopping.wait(5)
        events: list[Event] = []
        with driver.subscribe(events.append):
            driver.let_stop.set()
            leaving.join(5)
            driver.power_off("vm")
            assert _settle(events, 1) == [("stopped", "power_off")]
        assert driver.starts == 1


def test_closing_the_driver_ends_a_shutdown_waiting_on_its_guest() -> None:
    driver = HyperDriver()
    errors: list[BaseException] = []

    def shut() -> None:
        try:
            driver.shutdown("vm", timeout=30, retry_interval=0.1)
        except PowerDriversError as error:
            errors.append(error)

    waiting = threading.Thread(target=shut)
    began = time.monotonic()
    waiting.start()
    time.sleep(0.3)
    driver.close()
    waiting.join(10)
    assert time.monotonic() - began < 5  # not the 30 s deadline
    assert [type(error) for error in errors] == [HypervisorConnectionError]


class OffAtTheLastMomentDriver(HyperDriver):
    """Its guest shuts down in the instant between the core's last look and the forced power-off."""

    def _power_off(self, instance: InstanceReading) -> None:
        with self._lock:
            self.state, self.reason = "shutoff", "shutdown"
        raise InvalidStateTransition("vm", "power_off", "shutoff")


def test_a_guest_that_went_off_just_before_the_force_is_not_an_error() -> None:
    with OffAtTheLastMomentDriver() as driver:
        result = driver.shutdown("vm", timeout=0.2, retry_interval=0.1)
    assert result.outcome is Outcome.GRACEFUL
    assert result.reading.power_state is PowerState.SHUTOFF
