"""Reporting events from outside the driver, and the one REBOOTED a hard reboot owes."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from typing import ClassVar

import pytest

from powerdrivers import (
    Capability,
    Driver,
    Event,
    EventKind,
    EventReporter,
    InstanceNotFound,
    InstanceReading,
    NativeMapping,
    NativeStateTable,
    Operation,
    PowerState,
)

TABLE = NativeStateTable(
    "watched",
    [
        NativeMapping("up", None, PowerState.RUNNING, None),
        NativeMapping("down", None, PowerState.SHUTOFF, None),
    ],
)


class Watcher:
    """A third party's event thread: it knows the reporter, never the driver."""

    def __init__(self, reporter: EventReporter) -> None:
        self._reporter = reporter
        self.changes: queue.Queue[tuple[InstanceReading, InstanceReading] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (change := self.changes.get()) is not None:
            self._reporter.report_change(*change)

    def stop(self) -> None:
        self.changes.put(None)
        if self._thread is not threading.current_thread():
            self._thread.join(5)


class WatchedDriver(Driver):
    """One machine whose changes reach listeners through a Watcher thread, as a hypervisor's would."""

    name: ClassVar[str] = "watched"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.HARD_REBOOT, Capability.NATIVE_EVENTS}
    )
    native_states = TABLE

    def __init__(self, tells_of_resets: bool = False) -> None:
        super().__init__(None)
        self.state = "up"
        self.tells_of_resets = tells_of_resets
        self.watcher: Watcher | None = None
        self.resets = 0

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one("m")]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref != "m":
            raise InstanceNotFound(ref)
        return TABLE.reading("m", "machine", self.state)

    def _become(self, state: str) -> None:
        before = self._read_one("m")
        self.state = state
        if self.watcher is not None:
            self.watcher.changes.put((before, self._read_one("m")))

    def _start(self, instance: InstanceReading) -> None:
        self._become("up")

    def _power_off(self, instance: InstanceReading) -> None:
        self._become("down")

    def _hard_reboot(self, instance: InstanceReading) -> None:
        self.resets += 1
        if self.tells_of_resets:
            self.event_reporter.report(EventKind.REBOOTED, self._read_one("m"))

    def _start_native_events(self) -> None:
        self.watcher = Watcher(self.event_reporter)

    def _stop_native_events(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None


def _wait_for(events: list[Event], count: int) -> list[Event]:
    deadline = time.monotonic() + 5
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)  # anything more that was coming
    return list(events)


def test_a_helper_thread_reports_through_the_public_reporter_with_the_cause() -> None:
    with WatchedDriver() as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            driver.power_off("m")
            driver.start("m")
            seen = _wait_for(events, 2)
    assert [(e.kind, e.caused_by_operation) for e in seen] == [
        (EventKind.STOPPED, Operation.POWER_OFF),
        (EventKind.STARTED, Operation.START),
    ]


def test_unchanged_readings_report_nothing_and_resync_is_an_event() -> None:
    with WatchedDriver() as driver:
        events: list[Event] = []
        reading = driver.get_instance("m")
        with driver.subscribe(events.append):
            listening_while_subscribed = driver.event_reporter.listening
            driver.event_reporter.report_change(reading, reading)
            driver.event_reporter.report_resync()
        assert listening_while_subscribed and not driver.event_reporter.listening
    assert [e.kind for e in events] == [EventKind.RESYNC]


def test_an_event_reported_as_not_ours_is_not_credited_to_an_operation_owed_it() -> None:
    with WatchedDriver() as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            driver.watcher = None  # the change below is reported by hand instead
            driver.power_off("m")
            driver.event_reporter.report(EventKind.STOPPED, driver.get_instance("m"), caused_by=None)
            driver.event_reporter.report(EventKind.STOPPED, driver.get_instance("m"))
    assert [e.caused_by_operation for e in events] == [None, Operation.POWER_OFF]


def test_reporting_while_nobody_listens_is_dropped_without_error() -> None:
    with WatchedDriver() as driver:
        driver.event_reporter.report(EventKind.STOPPED, driver.get_instance("m"))
        driver.event_reporter.report_resync()
        assert not driver.event_reporter.listening


@pytest.mark.parametrize("tells_of_resets", [False, True], ids=["silent-reset", "reported-reset"])
def test_a_hard_reboot_is_reported_rebooted_exactly_once(tells_of_resets: bool) -> None:
    with WatchedDriver(tells_of_resets=tells_of_resets) as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            driver.reboot("m", hard=True)
            seen = _wait_for(events, 1)
    assert driver.resets == 1
    assert [(e.kind, e.caused_by_operation) for e in seen] == [(EventKind.REBOOTED, Operation.HARD_REBOOT)]
