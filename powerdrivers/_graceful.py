"""The guest-dependent operations: a graceful shutdown's wait, a soft reboot's verification.

Both ask the guest, wait for the hypervisor to report that it acted, and
fall back to forcing when it does not; both decide their outcome from what
actually happened, not from what was asked.
"""

from __future__ import annotations

import logging
import threading
import time
from types import TracebackType
from typing import TYPE_CHECKING

from powerdrivers._capabilities import Capability
from powerdrivers._event_kinds import EventKind
from powerdrivers._events import Event
from powerdrivers._exceptions import (
    AuthenticationError,
    HypervisorConnectionError,
    InvalidStateTransition,
    OperationTimeout,
)
from powerdrivers._operations import Operation, check_operation, rule_for
from powerdrivers._outcomes import OperationResult, Outcome
from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState

if TYPE_CHECKING:
    from powerdrivers._driver import Driver

_LOG = logging.getLogger("powerdrivers.driver")


def graceful_shutdown(
    driver: Driver, ref: str, timeout: float, retry_interval: float, force: bool
) -> OperationResult:
    """Carry out :meth:`powerdrivers.Driver.shutdown` on checked arguments."""
    began = time.monotonic()
    instance = driver.get_instance(ref)
    if not check_operation(instance.name, Operation.SHUTDOWN, instance.power_state, instance.transition):
        return OperationResult(Operation.SHUTDOWN, Outcome.ALREADY_OFF, time.monotonic() - began, instance)
    off = threading.Event()
    off_causes: list[Operation | None] = []

    def notice_off(event: Event) -> None:
        if event.instance_id == instance.id and (
            event.power_state is PowerState.SHUTOFF or event.kind is EventKind.DELETED
        ):
            off_causes.append(event.caused_by_operation)
            off.set()

    deadline = began + timeout
    mark = driver._tracker.now()
    with driver._track(instance, Operation.SHUTDOWN), driver._hub.add(notice_off):
        current = instance
        reading = Transient("")
        # Only a running guest can act on the request: a paused one is forced
        # (or left, without force) at once rather than after a pointless wait.
        while current.power_state is PowerState.RUNNING:
            # Closing the driver ends the wait; it is no passing fault to ride out.
            driver._check_open()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            # A hypervisor that is briefly unreachable (a restarting daemon, a stalled
            # xapi) is asked again at the next interval, until the deadline.
            with Transient(f"asking {instance.name} to shut down"):
                driver._request_shutdown(current)
            if reading.failed:
                # The "off" event may have come already; wait the interval regardless.
                time.sleep(min(retry_interval, remaining))
            else:
                off.wait(min(retry_interval, remaining))
            reading = Transient(f"reading {instance.name} during its shutdown")
            with reading:
                current = driver._read_one(instance.id)
        if reading.failed:
            # Decide from what the hypervisor says now, not from a reading gone stale.
            current = driver._read_one(instance.id)
        stopped = current.power_state is PowerState.SHUTOFF
        if not stopped and force:
            try:
                force_off(driver, current)
            except InvalidStateTransition:
                # It went off between the last look and the force: see how.
                current = driver._read_one(instance.id)
                if current.power_state is not PowerState.SHUTOFF:
                    raise
                stopped = True
        # "Off" is not "the guest shut down": someone may have forced it meanwhile (another
        # thread or process, or the shutdown this call joined when its timeout ran out).
        forced_elsewhere = stopped and (
            driver.native_states.forced(current.native_state, current.native_reason)
            or driver._tracker.forced_since(instance.id, mark)
            or any(cause is not None and rule_for(cause).forced for cause in off_causes)
        )
    if stopped and not forced_elsewhere:
        outcome = Outcome.GRACEFUL
    else:
        outcome = Outcome.FORCED if stopped or force else Outcome.TIMED_OUT
    return OperationResult(
        Operation.SHUTDOWN, outcome, time.monotonic() - began, driver.get_instance(instance.id)
    )


def verified_reboot(driver: Driver, ref: str, hard: bool, timeout: float, force: bool) -> OperationResult:
    """Carry out :meth:`powerdrivers.Driver.reboot` on checked arguments."""
    operation = Operation.HARD_REBOOT if hard else Operation.REBOOT
    driver._require(operation)
    began = time.monotonic()
    instance = driver.get_instance(ref)
    check_operation(instance.name, operation, instance.power_state, instance.transition)
    rebooted = threading.Event()

    def notice_reboot(event: Event) -> None:
        if event.instance_id == instance.id and event.kind is EventKind.REBOOTED:
            rebooted.set()

    with driver._track(instance, operation):
        if hard:
            reset(driver, instance)
            outcome = Outcome.FORCED
        else:
            with driver._hub.add(notice_reboot):
                driver._request_reboot(instance)
                graceful = rebooted.wait(timeout)
            if graceful:
                outcome = Outcome.GRACEFUL
            elif force:
                reset(driver, driver._read_one(instance.id))
                outcome = Outcome.FORCED
            else:
                outcome = Outcome.TIMED_OUT
    return OperationResult(operation, outcome, time.monotonic() - began, driver.get_instance(instance.id))


def force_off(driver: Driver, instance: InstanceReading) -> None:
    """Power ``instance`` off as part of the graceful operation the calling thread runs."""
    # Not tracked on its own: what it causes belongs to the shutdown or reboot it completes.
    if instance.power_state is not PowerState.SHUTOFF:
        driver._tracker.forcing(instance.id)
        driver._power_off(instance)


def reset(driver: Driver, instance: InstanceReading) -> None:
    """Hard-reboot ``instance``: the driver's reset, or a forced stop and a start."""
    if Capability.HARD_REBOOT not in driver.capabilities:
        force_off(driver, instance)
        driver._start(driver._read_one(instance.id))
        return
    driver._tracker.forcing(instance.id)
    if driver.reports_resets or not driver.event_reporter.listening:
        driver._hard_reboot(instance)
        return
    # A reset leaves the power state as it was, so no lifecycle event need show it: unless
    # the driver reported it while resetting, the core reports it, once, for every driver.
    reported = threading.Event()

    def notice_reset(event: Event) -> None:
        if event.instance_id == instance.id and event.kind is EventKind.REBOOTED:
            reported.set()

    with driver._hub.add(notice_reset):
        after = driver._hard_reboot(instance)
    if not reported.is_set():
        if after is None or after.id != instance.id or after.power_state is not PowerState.RUNNING:
            after = driver._read_one(instance.id)
        driver.event_reporter.report(EventKind.REBOOTED, after)


class Transient:
    """Log and swallow an error that may pass by itself: a lost connection or a timeout.

    Refused credentials are not transient, and neither is anything else.
    """

    __slots__ = ("_what", "failed")

    def __init__(self, what: str) -> None:
        self._what = what
        #: Whether the block failed with an error that was let pass.
        self.failed = False

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc_type is None or issubclass(exc_type, AuthenticationError):
            return False
        if issubclass(exc_type, (HypervisorConnectionError, OperationTimeout)):
            _LOG.warning("%s failed, trying again: %s", self._what, exc)
            self.failed = True
            return True
        return False
