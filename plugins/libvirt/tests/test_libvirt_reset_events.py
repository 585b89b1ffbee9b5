"""A hard reboot's ``rebooted`` events on libvirt: every one credited to it, none left unattributed.

QEMU reports one ``virDomainReset`` as two REBOOT events (the reset, then the
firmware's own reset as it starts, about 0.1 s later), and the driver says
it reports resets itself there; libvirt's test driver reports none, so the
core reports the one ``rebooted``. An unattributed ``rebooted`` right after
our own hard reboot would read as "the guest rebooted itself"; a reset by
another client after the attribution window must still read so.
"""

from __future__ import annotations

import time
import uuid
from inspect import signature

import libvirt

from powerdrivers import Driver, EventKind, InstanceSpec, Operation
from powerdrivers._tracking import OperationTracker
from powerdrivers.conformance import EventRecorder

#: How long after an operation returned its events are still credited to it.
GRACE_S: float = signature(OperationTracker).parameters["grace_s"].default
#: Long enough for QEMU's second REBOOT event (about 0.1 s after the reset) to arrive.
SETTLE_S = 1.0


def _rebooted(recorder: EventRecorder, name: str) -> list[EventKind | Operation | None]:
    return [
        event.caused_by_operation
        for event in recorder.events
        if event.kind is EventKind.REBOOTED and event.name == name
    ]


def test_a_hard_reboot_on_qemu_credits_every_rebooted_event_to_itself(qemu: Driver) -> None:
    name = f"pdtest-{uuid.uuid4().hex[:8]}"
    qemu.spawn(InstanceSpec(name, memory_mib=64))
    time.sleep(SETTLE_S)  # the firmware is running: its own reset follows ours
    assert qemu.reports_resets, "QEMU reports a reset as REBOOT events: the driver reports resets itself"
    recorder = EventRecorder()
    with qemu.subscribe(recorder):
        qemu.reboot(name, hard=True)
        recorder.wait_for_event(kind=EventKind.REBOOTED, name=name)
        time.sleep(SETTLE_S)
        causes = _rebooted(recorder, name)
        assert causes and all(cause is Operation.HARD_REBOOT for cause in causes), causes
        # Another client's reset, once our hard reboot's events are settled, is not ours.
        recorder.clear()
        time.sleep(GRACE_S)
        other = libvirt.open(qemu.uri)
        try:
            other.lookupByName(name).reset(0)
        finally:
            other.close()
        recorder.wait_for_event(kind=EventKind.REBOOTED, name=name)
        time.sleep(SETTLE_S)
        causes = _rebooted(recorder, name)
        assert causes and all(cause is None for cause in causes), causes


def test_a_hard_reboot_on_the_test_driver_yields_exactly_one_rebooted_event(driver: Driver) -> None:
    assert not driver.reports_resets, "libvirt's test driver sends no REBOOT event on a reset"
    recorder = EventRecorder()
    with driver.subscribe(recorder):
        driver.reboot("vm-running", hard=True)
        recorder.wait_for_event(kind=EventKind.REBOOTED, name="vm-running")
        time.sleep(SETTLE_S)
    assert _rebooted(recorder, "vm-running") == [Operation.HARD_REBOOT]


def test_a_hard_reboot_that_power_cycles_is_reported_by_a_driver_reporting_resets(driver: Driver) -> None:
    # A crashed domain is stopped and started, which sends no REBOOT event even on QEMU:
    # a driver that reports resets itself (as on QEMU) reports this one too, once.
    driver.reports_resets = True
    recorder = EventRecorder()
    with driver.subscribe(recorder):
        driver.reboot("vm-crashed", hard=True)
        recorder.wait_for_event(kind=EventKind.REBOOTED, name="vm-crashed")
        time.sleep(SETTLE_S)
    assert _rebooted(recorder, "vm-crashed") == [Operation.HARD_REBOOT]
