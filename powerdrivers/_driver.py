"""The abstract driver interface every hypervisor plugin implements."""

from __future__ import annotations

import abc
import logging
import threading
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import ClassVar, Final, Self

from powerdrivers._arguments import check_duration, check_flag, check_ref
from powerdrivers._capabilities import Capability
from powerdrivers._changes import change_kind
from powerdrivers._event_kinds import EventKind
from powerdrivers._events import Event, EventHub, Listener, Subscription
from powerdrivers._exceptions import (
    AuthenticationError,
    ConfigurationError,
    HypervisorConnectionError,
    InstanceNotFound,
    InvalidOption,
    InvalidStateTransition,
    OperationTimeout,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers._native import NativeStateTable
from powerdrivers._operations import Operation, check_operation, rule_for
from powerdrivers._outcomes import OperationResult, Outcome
from powerdrivers._polling import PollingEventSource
from powerdrivers._reading import InstanceReading
from powerdrivers._spec import InstanceSpec
from powerdrivers._states import PowerState
from powerdrivers._tracking import OperationTracker
from powerdrivers._vcpu import VcpuStats

_LOG = logging.getLogger("powerdrivers.driver")

_FROM_TRACKER: Final = object()
#: Errors that say an operation was refused before it changed anything: it caused no event.
_REFUSED: Final = (ConfigurationError, InstanceNotFound, InvalidStateTransition, UnsupportedOperation)
#: Where the core reports a driver breaking its contract; the conformance kit fails on these.
_CONTRACT_LOG = logging.getLogger("powerdrivers.contract")


class Driver(abc.ABC):
    """Base class of every powerdrivers driver.

    **Using a driver.** Load one by name with :func:`powerdrivers.load_driver`
    and use it as a context manager. Every operation takes an instance id or
    name, checks the operation table (:data:`powerdrivers.OPERATION_TABLE`),
    and raises only :class:`powerdrivers.PowerDriversError` subclasses.

    **Writing a driver.** Subclass it, declare the class attributes ``name``,
    ``interface_version``, ``capabilities`` and ``native_states``, and
    implement the primitives: ``_read_all``, ``_read_one``, ``_start`` and
    ``_power_off``, plus one primitive per declared capability
    (``_request_shutdown``, ``_request_reboot``, ``_hard_reboot``,
    ``_pause``/``_unpause``, ``_suspend``/``_resume``, ``_spawn``,
    ``_delete``, ``_vcpu_stats``, ``_start_native_events``/
    ``_stop_native_events``). What is generic is done here once: state
    checks, the graceful-shutdown loop that completes on the first "off"
    event, soft-reboot verification with a hard fallback, attributing events
    to the operation that caused them, and a polling event source for
    drivers without native events. A primitive the driver does not declare
    is never called: the public method raises
    :class:`powerdrivers.UnsupportedOperation`.
    """

    #: The name the driver is registered under (its entry-point name).
    name: ClassVar[str]
    #: The driver-interface version the driver was written for, ``MAJOR.MINOR``.
    interface_version: ClassVar[str]
    #: The optional features the driver implements.
    capabilities: ClassVar[frozenset[Capability]]
    #: Every native state (and reason) the driver can report, mapped to canonical ones.
    native_states: ClassVar[NativeStateTable]

    def __init__(self, uri: str | None = None, *, poll_interval_s: float = 0.5) -> None:
        self.uri = uri
        self._tracker = OperationTracker()
        self._hub = EventHub(on_first=self._events_needed, on_last=self._events_unneeded)
        self._poller: PollingEventSource | None = None
        self._native_events_running = False
        self._poll_interval_s = poll_interval_s
        self._closed = False
        self._close_lock = threading.Lock()
        self._source_lock = threading.RLock()

    # -- public interface -------------------------------------------------

    def supports(self, capability: Capability) -> bool:
        """Whether the driver declares ``capability``."""
        return capability in self.capabilities

    def list_instances(self) -> list[InstanceReading]:
        """Read every instance, in as few hypervisor round trips as the API allows."""
        self._check_open()
        readings = self._read_all()
        if not self._tracker.any_in_flight():
            return list(readings)
        return [self._with_own_transition(reading) for reading in readings]

    def get_instance(self, ref: str) -> InstanceReading:
        """Read one instance by id or name; raises ``InstanceNotFound``."""
        self._check_open()
        return self._with_own_transition(self._read_one(check_ref(ref)))

    def start(self, ref: str) -> InstanceReading:
        """Power the instance on (restoring saved memory if it is suspended)."""
        return self._perform(ref, Operation.START, self._start)

    def power_off(self, ref: str) -> InstanceReading:
        """Stop the instance at once, without asking the guest."""
        return self._perform(ref, Operation.POWER_OFF, self._power_off)

    def pause(self, ref: str) -> InstanceReading:
        """Stop scheduling the instance's VCPUs, keeping its memory in place."""
        return self._perform(ref, Operation.PAUSE, self._pause)

    def unpause(self, ref: str) -> InstanceReading:
        """Schedule a paused instance's VCPUs again."""
        return self._perform(ref, Operation.UNPAUSE, self._unpause)

    def suspend(self, ref: str) -> InstanceReading:
        """Save the instance's memory outside the hypervisor and stop it."""
        return self._perform(ref, Operation.SUSPEND, self._suspend)

    def resume(self, ref: str) -> InstanceReading:
        """Restore a suspended instance and run it."""
        return self._perform(ref, Operation.RESUME, self._resume)

    def shutdown(
        self,
        ref: str,
        timeout: float = 60.0,
        retry_interval: float = 10.0,
        force: bool = True,
    ) -> OperationResult:
        """Ask the guest to shut down; force it off after ``timeout`` if ``force``.

        The request is resent every ``retry_interval`` seconds, because a
        guest that is still booting can miss it. The call returns as soon as
        the hypervisor reports the instance off (from its event, not by
        polling every second). A paused guest cannot act on the request, so
        it is forced off at once. A lost connection or a timeout while
        asking or reading is retried at the next interval, until the
        deadline. The outcome says how it ended:
        ``graceful``, ``forced``, ``already_off``, or ``timed_out`` when
        forcing was not allowed.
        """
        timeout = check_duration("timeout", timeout)
        retry_interval = check_duration("retry interval", retry_interval, positive=True)
        force = check_flag("force", force)
        self._require(Operation.SHUTDOWN)
        began = time.monotonic()
        instance = self.get_instance(ref)
        if not check_operation(instance.name, Operation.SHUTDOWN, instance.power_state, instance.transition):
            return OperationResult(
                Operation.SHUTDOWN, Outcome.ALREADY_OFF, time.monotonic() - began, instance
            )
        off = threading.Event()
        off_causes: list[Operation | None] = []

        def notice_off(event: Event) -> None:
            if event.instance_id == instance.id and (
                event.power_state is PowerState.SHUTOFF or event.kind is EventKind.DELETED
            ):
                off_causes.append(event.caused_by_operation)
                off.set()

        deadline = began + timeout
        mark = self._tracker.now()
        with self._track(instance, Operation.SHUTDOWN), self._hub.add(notice_off):
            current = instance
            reading = _transient("")
            # Only a running guest can act on the request: a paused one is forced
            # (or left, without force) at once rather than after a pointless wait.
            while current.power_state is PowerState.RUNNING:
                # Closing the driver ends the wait; it is no passing fault to ride out.
                self._check_open()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                # A hypervisor that is briefly unreachable (a restarting daemon, a stalled
                # xapi) is asked again at the next interval, until the deadline.
                with _transient(f"asking {instance.name} to shut down"):
                    self._request_shutdown(current)
                if reading.failed:
                    # The "off" event may have come already; wait the interval regardless.
                    time.sleep(min(retry_interval, remaining))
                else:
                    off.wait(min(retry_interval, remaining))
                reading = _transient(f"reading {instance.name} during its shutdown")
                with reading:
                    current = self._read_one(instance.id)
            if reading.failed:
                # Decide from what the hypervisor says now, not from a reading gone stale.
                current = self._read_one(instance.id)
            stopped = current.power_state is PowerState.SHUTOFF
            if not stopped and force:
                try:
                    self._force_off(current)
                except InvalidStateTransition:
                    # It went off between the last look and the force: see how.
                    current = self._read_one(instance.id)
                    if current.power_state is not PowerState.SHUTOFF:
                        raise
                    stopped = True
            # "Off" is not "the guest shut down": someone may have forced it meanwhile (another
            # thread or process, or the shutdown this call joined when its timeout ran out).
            forced_elsewhere = stopped and (
                self.native_states.forced(current.native_state, current.native_reason)
                or self._tracker.forced_since(instance.id, mark)
                or any(cause is not None and rule_for(cause).forced for cause in off_causes)
            )
        if stopped and not forced_elsewhere:
            outcome = Outcome.GRACEFUL
        else:
            outcome = Outcome.FORCED if stopped or force else Outcome.TIMED_OUT
        return OperationResult(
            Operation.SHUTDOWN, outcome, time.monotonic() - began, self.get_instance(instance.id)
        )

    def reboot(
        self,
        ref: str,
        hard: bool = False,
        timeout: float = 60.0,
        force: bool = True,
    ) -> OperationResult:
        """Reboot the instance: softly through the guest, or ``hard`` as a reset.

        A soft reboot is verified: it succeeds when the hypervisor reports
        the guest rebooted within ``timeout``; otherwise, if ``force``, the
        instance is hard-rebooted (outcome ``forced``), else the outcome is
        ``timed_out``. A hard reboot always ends ``forced``.
        """
        timeout = check_duration("timeout", timeout)
        hard, force = check_flag("hard", hard), check_flag("force", force)
        operation = Operation.HARD_REBOOT if hard else Operation.REBOOT
        self._require(operation)
        began = time.monotonic()
        instance = self.get_instance(ref)
        check_operation(instance.name, operation, instance.power_state, instance.transition)
        rebooted = threading.Event()

        def notice_reboot(event: Event) -> None:
            if event.instance_id == instance.id and event.kind is EventKind.REBOOTED:
                rebooted.set()

        with self._track(instance, operation):
            if hard:
                self._reset(instance)
                outcome = Outcome.FORCED
            else:
                with self._hub.add(notice_reboot):
                    self._request_reboot(instance)
                    graceful = rebooted.wait(timeout)
                if graceful:
                    outcome = Outcome.GRACEFUL
                elif force:
                    self._reset(self._read_one(instance.id))
                    outcome = Outcome.FORCED
                else:
                    outcome = Outcome.TIMED_OUT
        return OperationResult(operation, outcome, time.monotonic() - began, self.get_instance(instance.id))

    def spawn(self, spec: InstanceSpec) -> InstanceReading:
        """Create an instance from ``spec`` and start it."""
        if not isinstance(spec, InstanceSpec):
            raise ConfigurationError(f"spawn takes an InstanceSpec, not a {type(spec).__name__}")
        self._require(Operation.SPAWN)
        self._check_open()
        with self._tracker.track(spec.name, Operation.SPAWN):
            reading = self._spawn(spec)
        return self.get_instance(reading.id)

    def delete(self, ref: str) -> None:
        """Stop the instance if needed and remove it, with any saved state."""
        self._require(Operation.DELETE)
        instance = self.get_instance(ref)
        check_operation(instance.name, Operation.DELETE, instance.power_state, instance.transition)
        with self._track(instance, Operation.DELETE):
            self._delete(instance)

    def vcpu_stats(self, ref: str, window: float = 1.0) -> list[VcpuStats]:
        """Sample how each VCPU of a running instance spends ``window`` seconds."""
        window = check_duration("window", window, positive=True)
        self._require_capability(Capability.VCPU_STATS, "vcpu_stats")
        instance = self.get_instance(ref)
        if instance.power_state is not PowerState.RUNNING:
            raise InvalidStateTransition(
                instance.name, "vcpu_stats", instance.power_state.value, allowed=[PowerState.RUNNING.value]
            )
        return list(self._vcpu_stats(instance, window))

    def subscribe(self, listener: Listener) -> Subscription:
        """Call ``listener`` for every lifecycle event until unsubscribed.

        Any number of listeners may subscribe; the driver's event source
        (native, or polling) runs while at least one does.
        """
        if not callable(listener):
            raise ConfigurationError(
                f"a listener is called with each event, so not a {type(listener).__name__}"
            )
        self._check_open()
        return self._hub.add(listener)

    def close(self) -> None:
        """Stop the event source and release the hypervisor connection; idempotent."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        self._hub.close()
        self._events_unneeded()
        self._close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"

    # -- primitives a driver implements -----------------------------------

    @abc.abstractmethod
    def _read_all(self) -> Iterable[InstanceReading]:
        """Read every instance; one bulk hypervisor call where the API has one."""

    @abc.abstractmethod
    def _read_one(self, ref: str) -> InstanceReading:
        """Read one instance by id or name; raise ``InstanceNotFound``."""

    @abc.abstractmethod
    def _start(self, instance: InstanceReading) -> InstanceReading | None:
        """Power the instance on; return once the hypervisor reports it running.

        May return the instance's new reading, saving the core a round trip.
        """

    @abc.abstractmethod
    def _power_off(self, instance: InstanceReading) -> InstanceReading | None:
        """Stop the instance at once; return once the hypervisor reports it off.

        May return the instance's new reading, saving the core a round trip.
        """

    def _request_shutdown(self, instance: InstanceReading) -> None:
        """Ask the guest to shut down (ACPI, agent...) and return without waiting."""
        raise UnsupportedOperation(self.name, Operation.SHUTDOWN.value)

    def _request_reboot(self, instance: InstanceReading) -> None:
        """Ask the guest to reboot and return; publish ``REBOOTED`` when it has."""
        raise UnsupportedOperation(self.name, Operation.REBOOT.value)

    def _hard_reboot(self, instance: InstanceReading) -> InstanceReading | None:
        """Reset the instance without asking the guest."""
        raise UnsupportedOperation(self.name, Operation.HARD_REBOOT.value)

    def _pause(self, instance: InstanceReading) -> InstanceReading | None:
        """Pause the instance's VCPUs."""
        raise UnsupportedOperation(self.name, Operation.PAUSE.value)

    def _unpause(self, instance: InstanceReading) -> InstanceReading | None:
        """Unpause the instance's VCPUs."""
        raise UnsupportedOperation(self.name, Operation.UNPAUSE.value)

    def _suspend(self, instance: InstanceReading) -> InstanceReading | None:
        """Save the instance's memory and stop it."""
        raise UnsupportedOperation(self.name, Operation.SUSPEND.value)

    def _resume(self, instance: InstanceReading) -> InstanceReading | None:
        """Restore a suspended instance."""
        raise UnsupportedOperation(self.name, Operation.RESUME.value)

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        """Create and start an instance; return its reading."""
        raise UnsupportedOperation(self.name, Operation.SPAWN.value)

    def _delete(self, instance: InstanceReading) -> None:
        """Stop the instance if it runs and remove it with any saved state."""
        raise UnsupportedOperation(self.name, Operation.DELETE.value)

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> Sequence[VcpuStats]:
        """Sample per-VCPU statistics over ``window_s`` seconds."""
        raise UnsupportedOperation(self.name, "vcpu_stats")

    def _start_native_events(self) -> None:
        """Start delivering native events through ``_publish``."""
        raise UnsupportedOperation(self.name, "native_events")

    def _stop_native_events(self) -> None:
        """Stop delivering native events."""

    def _close(self) -> None:
        """Release the hypervisor connection."""

    # -- helpers for drivers ----------------------------------------------

    def _publish(
        self,
        kind: EventKind,
        reading: InstanceReading,
        caused_by: Operation | object | None = _FROM_TRACKER,
    ) -> None:
        """Publish an event about ``reading``, attributed to our operation if it caused it.

        Pass ``caused_by`` when the driver knows the cause better than the
        tracker does (an event replayed from another process, say).
        """
        if not self._hub.has_listeners:
            return
        if caused_by is _FROM_TRACKER:
            forced = kind is EventKind.STOPPED and self.native_states.forced(
                reading.native_state, reading.native_reason
            )
            cause = self._tracker.cause(
                reading.id, kind, reading.transition, forced=forced
            ) or self._tracker.cause(reading.name, kind, reading.transition, forced=forced)
        else:
            cause = caused_by if isinstance(caused_by, Operation) else None
        self._hub.publish(Event.from_reading(kind, reading, cause))

    def _publish_change(self, before: InstanceReading | None, after: InstanceReading | None) -> None:
        """Publish the event a change from ``before`` to ``after`` amounts to, if any."""
        kind = change_kind(before, after)
        if kind is not None:
            reading = after if after is not None else before
            assert reading is not None  # change_kind returns None when both are
            self._publish(kind, reading)

    def _publish_resync(self) -> None:
        """Tell listeners that events may have been missed and they should re-read."""
        if not self._hub.has_listeners:
            return
        self._hub.publish(
            Event(
                time=_utcnow(),
                kind=EventKind.RESYNC,
                instance_id=None,
                name=None,
                power_state=None,
                transition=None,
                native_state=None,
                native_reason=None,
                caused_by_operation=None,
            )
        )

    @staticmethod
    def _reject_unknown_options(
        driver: str, options: Mapping[str, object], accepted: Collection[str]
    ) -> None:
        """Raise ``InvalidOption`` naming the unknown options and the accepted ones."""
        unknown = sorted(set(options) - set(accepted))
        if unknown:
            raise InvalidOption(
                f"the {driver} driver has no option {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(accepted)) or 'none'}"
            )

    # -- internals ----------------------------------------------------------

    def _perform(
        self, ref: str, operation: Operation, action: Callable[[InstanceReading], InstanceReading | None]
    ) -> InstanceReading:
        self._require(operation)
        instance = self.get_instance(ref)
        check_operation(instance.name, operation, instance.power_state, instance.transition)
        with _Tracked(self, instance, operation):
            after = action(instance)
        if after is None:
            return self.get_instance(instance.id)
        result = rule_for(operation).result
        if after.id != instance.id or (result is not None and after.power_state is not result):
            # A primitive's reading is trusted only when it shows what the operation leads
            # to; otherwise the driver is wrong (a stale reading), so ask the hypervisor.
            _CONTRACT_LOG.warning(
                "%s driver: _%s returned a reading of %s in state %s, not %s after %s; re-reading",
                self.name,
                operation.value,
                after.id,
                after.power_state.value,
                result.value if result else "gone",
                operation.value,
            )
            return self.get_instance(instance.id)
        return after

    def _track(self, instance: InstanceReading, operation: Operation) -> _Tracked:
        return _Tracked(self, instance, operation)

    def _force_off(self, instance: InstanceReading) -> None:
        # Not tracked on its own: what it causes belongs to the shutdown or reboot it completes.
        if instance.power_state is not PowerState.SHUTOFF:
            self._tracker.forcing(instance.id)
            self._power_off(instance)

    def _reset(self, instance: InstanceReading) -> None:
        if Capability.HARD_REBOOT in self.capabilities:
            self._tracker.forcing(instance.id)
            self._hard_reboot(instance)
            return
        self._force_off(instance)
        self._start(self._read_one(instance.id))

    def _with_own_transition(self, reading: InstanceReading) -> InstanceReading:
        if reading.transition is not None:
            return reading
        operation = self._tracker.in_flight(reading.id) or self._tracker.in_flight(reading.name)
        if operation is None:
            return reading
        return reading._replace(transition=rule_for(operation).transition)

    def _require(self, operation: Operation) -> None:
        self._require_capability(Capability.for_operation(operation), operation.value)

    def _require_capability(self, capability: Capability, what: str) -> None:
        if capability not in self.capabilities:
            raise UnsupportedOperation(self.name, what)

    def _check_open(self) -> None:
        if self._closed:
            raise HypervisorConnectionError(f"the {self.name} driver has been closed")

    def _events_needed(self) -> None:
        # Starting and stopping the source are serialised, and each looks at what is true
        # when it runs: a stop that lost a race with a new subscriber leaves the source running.
        with self._source_lock:
            self._check_open()
            if self._poller is not None or self._native_events_running:
                return
            self._tracker.forget_owed()
            if Capability.NATIVE_EVENTS in self.capabilities:
                self._start_native_events()
                self._native_events_running = True
                return
            self._poller = PollingEventSource(
                self.list_instances, self._publish_change, self._publish_resync, self._poll_interval_s
            )
            self._poller.start()

    def _events_unneeded(self) -> None:
        with self._source_lock:
            if self._hub.has_listeners and not self._closed:
                return
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            elif self._native_events_running:
                self._native_events_running = False
                self._stop_native_events()


class _Tracked:
    """An operation in flight, for a ``with`` block (a class: this is every operation's hot path)."""

    __slots__ = ("_driver", "_instance", "_operation", "_token")

    def __init__(self, driver: Driver, instance: InstanceReading, operation: Operation) -> None:
        self._driver = driver
        self._instance = instance
        self._operation = operation

    def __enter__(self) -> None:
        instance = self._instance
        # The power state as is: the tracker spells it out only if it refuses the operation.
        self._token = self._driver._tracker.begin(
            instance.id, self._operation, label=instance.name, state=instance.power_state
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        driver = self._driver
        try:
            # A polling source would otherwise notice the change only after the operation
            # ended, perhaps after the next one began: look now, while it is in flight.
            poller = driver._poller
            if exc_type is None and poller is not None:
                try:
                    poller.poll_now()
                except PowerDriversError as error:
                    _LOG.debug("polling after %s failed: %s", self._operation.value, error)
                else:
                    driver._tracker.caught_up(self._instance.id)
        finally:
            driver._tracker.end(
                self._token, reached_hypervisor=exc_type is None or not issubclass(exc_type, _REFUSED)
            )


class _transient:  # noqa: N801 - used as a context manager, named for what it lets pass
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


def _utcnow() -> datetime:
    return datetime.now(UTC)
