"""The abstract driver interface every hypervisor plugin implements."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Mapping
from types import TracebackType
from typing import ClassVar, Final, Self

from powerdrivers._arguments import check_duration, check_flag, check_ref
from powerdrivers._capabilities import Capability
from powerdrivers._event_kinds import EventKind
from powerdrivers._event_source import EventSourceSwitch
from powerdrivers._events import EventHub, Listener, Subscription
from powerdrivers._exceptions import (
    ConfigurationError,
    HypervisorConnectionError,
    InvalidOption,
    InvalidStateTransition,
    UnsupportedOperation,
)
from powerdrivers._native import NativeStateTable
from powerdrivers._operations import Operation, check_operation, rule_for
from powerdrivers._outcomes import OperationResult
from powerdrivers._primitives import DriverPrimitives
from powerdrivers._reading import InstanceReading
from powerdrivers._reporting import FROM_TRACKER, EventReporter
from powerdrivers._spec import InstanceSpec
from powerdrivers._states import PowerState
from powerdrivers._tracked import Tracked
from powerdrivers._tracking import OperationTracker
from powerdrivers._vcpu import InstanceVcpuCounters, VcpuStats

#: Where the core reports a driver breaking its contract; the conformance kit fails on these.
_CONTRACT_LOG: Final = logging.getLogger("powerdrivers.contract")


class Driver(DriverPrimitives):
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
    ``_delete``, ``_vcpu_counters`` (or ``_vcpu_stats``) with
    ``_all_vcpu_counters``, ``_start_native_events``/
    ``_stop_native_events``). What is generic is done here once: state
    checks, the graceful-shutdown loop that completes on the first "off"
    event, soft-reboot verification with a hard fallback, attributing events
    to the operation that caused them, and a polling event source for
    drivers without native events. A primitive the driver does not declare
    is never called: the public method raises
    :class:`powerdrivers.UnsupportedOperation`.

    **Threading.** Every public method may be called from any thread, at the
    same time as any other, on the same instance or on others: the core
    refuses an operation that conflicts with one in flight, but otherwise
    calls the primitives concurrently, so they must be thread-safe. Events
    reach listeners on the thread that reports them: the driver's event
    thread, or the thread running an operation when the driver reports its
    own change.

    **Reporting events.** A driver's native event source reports through
    :attr:`event_reporter` (:class:`powerdrivers.EventReporter`), from any
    thread; hand it to a helper object (an event thread, a watcher) rather
    than the driver. ``_publish``, ``_publish_change`` and
    ``_publish_resync`` are shorthands for its methods. A ``REBOOTED`` after
    a hard reboot is reported by the core (see :attr:`reports_resets`).
    """

    #: The name the driver is registered under (its entry-point name).
    name: ClassVar[str]
    #: The driver-interface version the driver was written for, ``MAJOR.MINOR``.
    interface_version: ClassVar[str]
    #: The optional features the driver implements.
    capabilities: ClassVar[frozenset[Capability]]
    #: Every native state (and reason) the driver can report, mapped to canonical ones.
    native_states: ClassVar[NativeStateTable]
    #: Whether the driver's event source reports a hard reboot's reset as ``REBOOTED`` itself,
    #: possibly after ``_hard_reboot`` returned (libvirt on QEMU does). When false, the core
    #: reports it once ``_hard_reboot`` has returned, unless the driver reported it meanwhile.
    #: Set it on the class, or on the instance (by the time it first connects) when it depends
    #: on the hypervisor behind the URI (libvirt's test driver reports no reset).
    reports_resets: bool = False

    def __init__(self, uri: str | None = None, *, poll_interval_s: float = 0.5) -> None:
        self.uri = uri
        self._tracker = OperationTracker()
        self._hub = EventHub(on_first=self._events_needed, on_last=self._events_unneeded)
        self._reporter = EventReporter(self._hub, self._tracker, self._stopped_by_force)
        self._event_source = EventSourceSwitch(self, poll_interval_s)
        self._closed = False
        self._close_lock = threading.Lock()

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
        # Imported on first use, as verified_reboot: loading a driver stays cheap (benchmark row 4).
        from powerdrivers._graceful import graceful_shutdown

        return graceful_shutdown(self, ref, timeout, retry_interval, force)

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
        from powerdrivers._graceful import verified_reboot

        return verified_reboot(self, ref, hard, timeout, force)

    def spawn(self, spec: InstanceSpec) -> InstanceReading:
        """Create an instance from ``spec`` and start it."""
        if not isinstance(spec, InstanceSpec):
            raise ConfigurationError(f"spawn takes an InstanceSpec, not a {type(spec).__name__}")
        self._require(Operation.SPAWN)
        self._check_open()
        with Tracked(self, spec.name, Operation.SPAWN, spec.name, "busy"):
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

    def vcpu_counters(self) -> list[InstanceVcpuCounters]:
        """Read the cumulative VCPU counters of every running instance, in one hypervisor round trip.

        Returns one :class:`powerdrivers.InstanceVcpuCounters` per running
        instance (none when none runs); :func:`powerdrivers.stats_between`
        turns two readings of an instance into statistics, and
        :class:`powerdrivers.VcpuSampler` does it for every instance.
        Raises ``UnsupportedOperation`` when the driver lacks the
        ``vcpu_stats`` capability or reads counters one instance at a time
        only, and the hypervisor errors.
        """
        self._require_capability(Capability.VCPU_STATS, "vcpu_stats")
        self._check_open()
        return list(self._all_vcpu_counters())

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

    @property
    def event_reporter(self) -> EventReporter:
        """Where the driver's native event source reports events (see :class:`EventReporter`)."""
        return self._reporter

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

    # -- helpers for drivers ----------------------------------------------

    def _publish(
        self,
        kind: EventKind,
        reading: InstanceReading,
        caused_by: Operation | object | None = FROM_TRACKER,
    ) -> None:
        """Shorthand for ``self.event_reporter.report(kind, reading, caused_by)``."""
        self._reporter.report(kind, reading, caused_by)

    def _publish_change(self, before: InstanceReading | None, after: InstanceReading | None) -> None:
        """Shorthand for ``self.event_reporter.report_change(before, after)``."""
        self._reporter.report_change(before, after)

    def _publish_resync(self) -> None:
        """Shorthand for ``self.event_reporter.report_resync()``."""
        self._reporter.report_resync()

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
        with self._track(instance, operation):
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

    def _track(self, instance: InstanceReading, operation: Operation) -> Tracked:
        # The power state as is: the tracker spells it out only if it refuses the operation.
        return Tracked(self, instance.id, operation, instance.name, instance.power_state)

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

    def _stopped_by_force(self, native_state: str, native_reason: str | None) -> bool:
        return self.native_states.forced(native_state, native_reason)

    def _events_needed(self) -> None:
        self._event_source.start()

    def _events_unneeded(self) -> None:
        self._event_source.stop_unless_needed()
