"""The fake driver: a complete, contract-abiding hypervisor that lives in memory or a file.

:class:`FakeDriver` translates between the core's contract and its simulated
hypervisor (``_hypervisor``): it checks each operation against the table,
attributes the changes it makes, reads records as instance readings and
injects faults (``_faults``); its ``_delivery`` decides which of the
hypervisor's changes are events, and delivers them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar

from powerdrivers import (
    Capability,
    Driver,
    EventKind,
    InstanceReading,
    InstanceSpec,
    InstanceVcpuCounters,
    InvalidSpec,
    Operation,
    OperationResult,
    PowerDriversError,
    Transition,
    check_operation,
    rule_for,
)
from powerdrivers._arguments import check_flag, check_ref
from powerdrivers_fake._delivery import EventDelivery
from powerdrivers_fake._faults import Faults
from powerdrivers_fake._hypervisor import FakeHypervisor
from powerdrivers_fake._native import FAKE_NATIVE_STATES, FakeNativeState
from powerdrivers_fake._open import open_store
from powerdrivers_fake._options import make_error, parse_options
from powerdrivers_fake._seed import new_record
from powerdrivers_fake._store import Document, MemoryStore
from powerdrivers_fake._validate import MAX_MEMORY_MIB, MAX_VCPUS

_LOG = logging.getLogger("powerdrivers.fake")
_S = FakeNativeState
#: The native reason of a guest that restarted itself (a soft reboot done): a REBOOTED event.
_REBOOTED = "rebooted"
#: The guest-dependent operations, as the guest actions they ask for.
_GUEST_ACTIONS = {Operation.SHUTDOWN: "shutdown", Operation.REBOOT: "reboot"}


class FakeDriver(Driver):
    """A fake hypervisor for tests, CI and demos, held to the same contract as real drivers.

    URIs: ``fake:///`` (or none) keeps state in memory, private to this
    driver; ``fake:///path/to/state.json`` keeps it in a JSON file shared,
    with locking, by every process that names it, so successive CLI calls
    see the same instances. A new state starts with a few demo instances.

    Options (strings from the CLI, or typed values from code):

    ``latency``
        Seconds added to every hypervisor call: ``0.05``, or a range ``0.01-0.2``
        (at most 60).
    ``fail_next``
        Fail the next operation with an error: ``hypervisor``, ``timeout``,
        ``connection`` or ``authentication``.
    ``fail_<operation>``
        Fail every call of that operation (``fail_start``, ``fail_read``,
        ``fail_vcpu_stats``...) with the named error.
    ``fail_connect``
        Fail to connect with the named error.
    ``uncooperative``
        Comma-separated instance names whose guests ignore graceful shutdown
        and soft reboot (the demo's ``legacy-db`` already does).
    ``crash`` / ``crash_after``
        Comma-separated instance names that crash ``crash_after`` seconds
        (default 2) after they are, or start, running.
    ``guest_delay``
        Seconds a cooperative guest takes to shut down or reboot (default 0.5, at most 3600).
    ``seed`` / ``instances``
        ``demo`` (default) or ``empty``, plus that many generated instances (at most 100,000).
    ``poll_interval``
        How often a file-backed driver looks for other processes' changes.
    ``username`` / ``password``
        Accepted and ignored, so scripts can switch drivers unchanged.
    """

    name: ClassVar[str] = "fake"
    interface_version: ClassVar[str] = "1.1"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    native_states = FAKE_NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        settings = parse_options(options)
        super().__init__(uri, poll_interval_s=settings.poll_interval)
        store = open_store(uri, settings)
        if settings.fail_connect:
            raise make_error(
                settings.fail_connect, f"injected {settings.fail_connect} failure connecting to fake"
            )
        self._faults = Faults(settings)
        self._hypervisor = FakeHypervisor(store, settings)
        #: The hypervisor's store, kept for tests that look into it.
        self._store = store
        self._memory = self._hypervisor.memory
        self._delivery = EventDelivery(self.event_reporter, self.native_states, self._memory)
        self._hypervisor.on_change = self._delivery.changed
        self._hypervisor.on_commit = self._delivery.committed
        with self._transaction() as document:
            self._delivery.start_at(document["seq"])
            self._hypervisor.apply_guest_options(document)

    # -- test-double controls ---------------------------------------------

    def inject_failure(
        self, error: PowerDriversError, operation: str | Operation | None = None, *, once: bool = True
    ) -> None:
        """Make a call fail with ``error``.

        ``operation`` ``None`` targets the next operation of any kind;
        otherwise an :class:`~powerdrivers.Operation`, ``"read"`` or
        ``"vcpu_stats"``. With ``once`` false the failure stays.
        """
        self._faults.add(error, str(operation) if operation is not None else None, once=once)

    def clear_failures(self) -> None:
        """Remove every injected failure."""
        self._faults.clear()

    def set_latency(self, low: float, high: float | None = None) -> None:
        """Add ``low`` seconds (or a uniform delay in ``low..high``) to every call.

        Each bound is at most a minute; bad bounds raise :class:`~powerdrivers.InvalidOption`
        and leave the latency as it was.
        """
        self._faults.set_latency(low, low if high is None else high)

    def set_cooperative(self, ref: str, cooperative: bool) -> None:
        """Make an instance's guest honour (or ignore) graceful shutdown and soft reboot."""
        ref, cooperative = check_ref(ref), check_flag("cooperative", cooperative)
        with self._transaction() as document:
            record = self._writable(document, self._find(document, ref))
            record["guest"] = "cooperative" if cooperative else "uncooperative"

    def crash(self, ref: str) -> InstanceReading:
        """Crash a running instance now, as a guest kernel panic would."""
        ref = check_ref(ref)
        with self._transaction() as document:
            record = self._writable(document, self._find(document, ref))
            check_operation(record["name"], Operation.POWER_OFF, self._reading(record).power_state, None)
            self._set_state(document, record, _S.CRASHED, "panicked", None)
        return self.get_instance(record["id"])

    # -- guest-dependent operations, shared with other processes ----------------

    def shutdown(self, ref: str, *args: Any, **kwargs: Any) -> OperationResult:
        """Shut the instance down as :meth:`powerdrivers.Driver.shutdown` does.

        With a state file, the shutdown is written into it while it waits
        for the guest, so other processes see the instance shutting down
        and are refused what the operation table refuses meanwhile.
        """
        with self._sharing():
            return super().shutdown(ref, *args, **kwargs)

    def reboot(self, ref: str, *args: Any, **kwargs: Any) -> OperationResult:
        """Reboot the instance as :meth:`powerdrivers.Driver.reboot` does.

        With a state file, a soft reboot is written into it while it waits
        for the guest, as :meth:`shutdown` is.
        """
        with self._sharing():
            return super().reboot(ref, *args, **kwargs)

    @contextmanager
    def _sharing(self) -> Iterator[None]:
        """Remove what the block's guest requests wrote into the state file when it ends, however."""
        shared = self._hypervisor.shared
        if shared is None:
            yield
            return
        tokens = shared.begin_call()
        try:
            yield
        finally:
            shared.end_call(tokens)
            if tokens:
                try:
                    with self._transaction() as document:
                        shared.release(document, tokens)
                except PowerDriversError as error:
                    # This driver's later transactions drop the entry (it is no longer live).
                    _LOG.warning("fake: could not remove a finished operation from the state file: %s", error)

    # -- reading ------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        self._faults.call("read")
        memory = self._quiet_memory()
        if memory is not None:
            with memory.lock:
                return [self._reading(record) for record in memory.committed["instances"].values()]
        with self._transaction() as document:
            return [self._reading(record) for record in document["instances"].values()]

    def _read_one(self, ref: str) -> InstanceReading:
        self._faults.call("read")
        memory = self._quiet_memory()
        if memory is not None:
            with memory.lock:
                return self._reading(self._find(memory.committed, ref))
        with self._transaction() as document:
            return self._reading(self._find(document, ref))

    def _quiet_memory(self) -> MemoryStore | None:
        """Return the memory store when a read may look at it under its lock, without a transaction.

        In memory, with no guest action due, nothing changes on a read. Otherwise
        (a file others write, an action due) a read settles what is due, so it
        is a transaction.
        """
        due = self._hypervisor.next_due
        if self._memory is not None and (due is None or time.time() < due):
            return self._memory
        return None

    def _transaction(self) -> AbstractContextManager[Document]:
        """Return a transaction of the hypervisor (see :meth:`FakeHypervisor.transaction`)."""
        return self._hypervisor.transaction()

    def _find(self, document: Document, ref: str) -> dict[str, Any]:
        """Return the record of the instance ``ref`` names; raise InstanceNotFound if none."""
        return self._hypervisor.find(document, ref)

    def _writable(self, document: Document, record: dict[str, Any]) -> dict[str, Any]:
        """Return ``record`` made writable in ``document`` (see :meth:`FakeHypervisor.writable`)."""
        return self._hypervisor.writable(document, record)

    def _reading(self, record: dict[str, Any]) -> InstanceReading:
        reading = self.native_states.reading(record["id"], record["name"], record["state"], record["reason"])
        if reading.transition is None and self._hypervisor.shared is not None:
            transition = self._in_flight_elsewhere(record["id"])
            if transition is not None:
                return reading._replace(transition=transition)
        return reading

    def _in_flight_elsewhere(self, instance_id: str) -> Transition | None:
        """Return the transition of an operation another process (or driver) has in flight on the instance."""
        shared = self._hypervisor.shared
        operation = shared.in_flight(instance_id) if shared is not None else None
        return None if operation is None else rule_for(operation).transition

    # -- operations -----------------------------------------------------------

    def _start(self, instance: InstanceReading) -> InstanceReading:
        self._faults.call(Operation.START)
        with self._transaction() as document:
            record, cause = self._target(document, instance, Operation.START)
            reason = "restored" if record["state"] == _S.SUSPENDED else "booted"
            self._set_state(document, record, _S.RUNNING, reason, cause)
        return self._reading(record)

    def _power_off(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.POWER_OFF, _S.SHUTOFF, "destroyed")

    def _request_shutdown(self, instance: InstanceReading) -> None:
        self._ask_guest(instance, Operation.SHUTDOWN)

    def _request_reboot(self, instance: InstanceReading) -> None:
        self._ask_guest(instance, Operation.REBOOT)

    def _hard_reboot(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.HARD_REBOOT, _S.RUNNING, "reset", EventKind.REBOOTED)

    def _pause(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.PAUSE, _S.PAUSED, "user")

    def _unpause(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.UNPAUSE, _S.RUNNING, "unpaused")

    def _suspend(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.SUSPEND, _S.SUSPENDED, "saved")

    def _resume(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.RESUME, _S.RUNNING, "restored")

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        if spec.vcpus > MAX_VCPUS or spec.memory_mib > MAX_MEMORY_MIB:
            raise InvalidSpec(
                f"the fake takes at most {MAX_VCPUS} vcpus and {MAX_MEMORY_MIB} MiB of memory, "
                f"not {spec.vcpus} and {spec.memory_mib}"
            )
        self._faults.call(Operation.SPAWN)
        with self._transaction() as document:
            if any(record["name"] == spec.name for record in document["instances"].values()):
                raise InvalidSpec(f"an instance named {spec.name!r} already exists")
            record = new_record(spec.name, _S.RUNNING, "booted", vcpus=spec.vcpus, memory_mib=spec.memory_mib)
            self._hypervisor.add(document, record)
            self._delivery.log(document, record, EventKind.SPAWNED, Operation.SPAWN)
            return self._reading(record)

    def _delete(self, instance: InstanceReading) -> None:
        self._faults.call(Operation.DELETE)
        with self._transaction() as document:
            record, cause = self._target(document, instance, Operation.DELETE)
            self._hypervisor.remove(document, record)
            self._delivery.log(document, record, EventKind.DELETED, cause)

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        # VCPU statistics are imported on first use: loading the driver stays cheap.
        from powerdrivers_fake._stats import read_counters

        self._faults.call("vcpu_stats")
        with self._transaction() as document:
            [counters] = read_counters([self._find(document, instance.id)])
        return counters

    def _all_vcpu_counters(self) -> list[InstanceVcpuCounters]:
        from powerdrivers_fake._stats import read_counters

        self._faults.call("vcpu_stats")
        with self._transaction() as document:
            return read_counters(r for r in document["instances"].values() if r["state"] == _S.RUNNING)

    def _change(
        self,
        instance: InstanceReading,
        operation: Operation,
        state: FakeNativeState,
        reason: str,
        kind: EventKind | None = None,
    ) -> InstanceReading:
        """Carry out ``operation``, which puts the instance in ``state`` for ``reason``.

        The event it amounts to is logged as :meth:`_set_state` says.
        """
        self._faults.call(operation)
        with self._transaction() as document:
            record, cause = self._target(document, instance, operation)
            self._set_state(document, record, state, reason, cause, kind)
        return self._reading(record)

    def _ask_guest(self, instance: InstanceReading, operation: Operation) -> None:
        """Ask the instance's guest to carry out ``operation``, a graceful shutdown or a soft reboot."""
        self._faults.call(operation)
        with self._transaction() as document:
            record, cause = self._target(document, instance, operation)
            shared = self._hypervisor.shared
            if shared is not None:
                shared.share(document, record["id"], operation)
            self._hypervisor.ask_guest(document, record, _GUEST_ACTIONS[operation], cause)

    def _target(
        self, document: Document, instance: InstanceReading, operation: Operation
    ) -> tuple[dict[str, Any], Operation | None]:
        """Return the instance's record, writable, and the operation its events are attributed to.

        That is the operation the calling thread carries out on the instance
        (a shutdown's force-off fallback belongs to the shutdown), else
        ``operation`` itself; never another thread's operation that merely
        runs meanwhile. Raises :class:`~powerdrivers.InvalidStateTransition`
        if the instance, as it is now, refuses ``operation``.
        """
        record = self._writable(document, self._find(document, instance.id))
        # Another process (or thread) may have changed the instance since the core checked it.
        state, transition = self.native_states.lookup(record["state"], record["reason"])
        if transition is None and self._hypervisor.shared is not None:
            transition = self._in_flight_elsewhere(record["id"])
        check_operation(record["name"], operation, state, transition)
        return record, self._tracker.own_operation(record["id"]) or operation

    # -- events -------------------------------------------------------------

    def _set_state(
        self,
        document: Document,
        record: dict[str, Any],
        state: FakeNativeState,
        reason: str,
        cause: Operation | None,
        kind: EventKind | None = None,
    ) -> None:
        """Put the instance in ``state`` for ``reason``, and log the event that is, as caused by ``cause``.

        The event is of ``kind`` if given (a change that leaves the power state
        as it was, such as a reset), else of the kind the change amounts to.
        """
        if kind is None:
            self._hypervisor.set_state(document, record, state, reason, cause)
        else:
            self._hypervisor.set_state(document, record, state, reason, cause, report=False)
            self._delivery.log(document, record, kind, cause)

    def _start_native_events(self) -> None:
        with self._transaction() as document:
            self._delivery.start_at(document["seq"])
        # Other processes' changes (and their events) reach this one only through the file.
        self._hypervisor.watch()

    def _stop_native_events(self) -> None:
        self._hypervisor.stop_watching()

    def _close(self) -> None:
        self._hypervisor.close()
