"""A reset reported more than once is one reset: every ``rebooted`` it causes is credited to it.

QEMU reports one reset as two REBOOT events (the reset, then the firmware's
own reset as it starts); a guest's genuine reboot later, past the
operation's grace, stays unattributed. ``reports_resets`` may differ from
one driver instance to another (it depends on the hypervisor behind the URI).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable
from inspect import signature
from typing import ClassVar

from powerdrivers import (
    Capability,
    Driver,
    Event,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    NativeMapping,
    NativeStateTable,
    Operation,
    PowerState,
)
from powerdrivers._tracking import OperationTracker

#: How long after an operation returned its events are still credited to it.
GRACE_S: float = signature(OperationTracker).parameters["grace_s"].default
TABLE = NativeStateTable("resetting", [NativeMapping("up", None, PowerState.RUNNING, None)])


class TestTracker:
    def test_repeats_of_a_received_reboot_are_the_operations_own_within_its_grace(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT

    def test_a_reboot_past_the_grace_is_not_ours(self) -> None:
        tracker = OperationTracker(grace_s=0.05)
        with tracker.track("i", Operation.REBOOT):
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.REBOOT
        time.sleep(0.1)
        assert tracker.cause("i", EventKind.REBOOTED) is None

    def test_an_operation_never_rebooted_has_no_repeats(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            pass
        # Its reset came as a stop and a start: a reboot afterwards is the guest's.
        assert tracker.cause("i", EventKind.STOPPED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.STARTED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        with tracker.track("j", Operation.PAUSE):
            pass
        assert tracker.cause("j", EventKind.REBOOTED) is None

    def test_an_operation_owed_a_reboot_gets_it_before_an_older_ones_repeat(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.REBOOT):
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.REBOOT
        with tracker.track("i", Operation.HARD_REBOOT):
            pass
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        # Now the newest operation that received one takes the repeats.
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT

    def test_a_later_operations_event_ends_the_repeats(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        with tracker.track("i", Operation.PAUSE):
            pass
        # The hypervisor reports the pause: its stream has moved past the reset.
        heard: list[Operation | None] = []
        worker = threading.Thread(target=lambda: heard.append(tracker.cause("i", EventKind.PAUSED)))
        worker.start()
        worker.join()
        assert heard == [Operation.PAUSE]
        assert tracker.cause("i", EventKind.REBOOTED) is None


class ResettingDriver(Driver):
    """A hypervisor whose event thread reports every reset twice, after the reset call returned."""

    name: ClassVar[str] = "resetting"
    interface_version: ClassVar[str] = "1.1"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.HARD_REBOOT, Capability.NATIVE_EVENTS}
    )
    native_states = TABLE

    def __init__(self, reports_resets: bool) -> None:
        super().__init__(None)
        # Per instance: it depends on what the URI connects to.
        self.reports_resets = reports_resets
        self._resets: queue.Queue[bool] = queue.Queue()
        self._thread: threading.Thread | None = None

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one("m")]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref != "m":
            raise InstanceNotFound(ref)
        return TABLE.reading("m", "machine", "up")

    def _start(self, instance: InstanceReading) -> None:
        return None

    def _power_off(self, instance: InstanceReading) -> None:
        return None

    def _hard_reboot(self, instance: InstanceReading) -> None:
        self._resets.put(True)

    def _start_native_events(self) -> None:
        self._thread = threading.Thread(target=self._deliver, daemon=True)
        self._thread.start()

    def _stop_native_events(self) -> None:
        self._resets.put(False)

    def _deliver(self) -> None:
        while self._resets.get():
            for delay in (0.02, 0.1):  # the reset, then the firmware's own
                time.sleep(delay)
                self.event_reporter.report(EventKind.REBOOTED, self._read_one("m"))


def _rebooted_causes(driver: Driver, *, guest_reboot_after_s: float | None = None) -> list[Operation | None]:
    events: list[Event] = []
    with driver.subscribe(events.append):
        driver.reboot("m", hard=True)
        time.sleep(0.5)
        if guest_reboot_after_s is not None:
            time.sleep(guest_reboot_after_s)
            driver.event_reporter.report(EventKind.REBOOTED, driver.get_instance("m"))
    return [event.caused_by_operation for event in events if event.kind is EventKind.REBOOTED]


def test_reports_resets_is_per_instance() -> None:
    with ResettingDriver(reports_resets=True) as reporting, ResettingDriver(reports_resets=False) as silent:
        assert (reporting.reports_resets, silent.reports_resets, Driver.reports_resets) == (
            True,
            False,
            False,
        )


def test_a_driver_reporting_a_reset_twice_has_both_credited_and_the_core_reports_none() -> None:
    with ResettingDriver(reports_resets=True) as driver:
        assert _rebooted_causes(driver) == [Operation.HARD_REBOOT, Operation.HARD_REBOOT]


def test_when_the_core_reports_the_reset_the_drivers_reports_are_credited_too() -> None:
    with ResettingDriver(reports_resets=False) as driver:
        assert _rebooted_causes(driver) == [Operation.HARD_REBOOT] * 3


def test_a_guest_reboot_after_the_grace_is_the_guests_own() -> None:
    with ResettingDriver(reports_resets=True) as driver:
        causes = _rebooted_causes(driver, guest_reboot_after_s=GRACE_S)
    assert causes == [Operation.HARD_REBOOT, Operation.HARD_REBOOT, None]
