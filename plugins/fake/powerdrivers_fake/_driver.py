"""The fake driver: a complete, contract-abiding hypervisor that lives in memory or a file."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import unquote, urlsplit

from powerdrivers import (
    Capability,
    EventKind,
    InstanceReading,
    InstanceSpec,
    InstanceVcpuCounters,
    InvalidSpec,
    InvalidURI,
    Operation,
    OperationResult,
    PowerDriversError,
    check_operation,
    redact_uri,
)
from powerdrivers._arguments import check_flag, check_ref
from powerdrivers_fake._delivery import EventDelivery
from powerdrivers_fake._engine import FakeEngine
from powerdrivers_fake._filestore import FileStore
from powerdrivers_fake._native import FAKE_NATIVE_STATES, FakeNativeState
from powerdrivers_fake._options import FakeOptions, latency_between, make_error, parse_options
from powerdrivers_fake._seed import new_record, seed_document
from powerdrivers_fake._shared import SharedOperations
from powerdrivers_fake._stats import read_counters
from powerdrivers_fake._store import Document, MemoryStore, Store
from powerdrivers_fake._validate import MAX_MEMORY_MIB, MAX_VCPUS

_LOG = logging.getLogger("powerdrivers.fake")
_S = FakeNativeState


class FakeDriver(FakeEngine):
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
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)
    native_states = FAKE_NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        settings = parse_options(options)
        super().__init__(uri, poll_interval_s=settings.poll_interval)
        self._settings = settings
        self._store = _open_store(uri, settings)
        self._memory = self._store if isinstance(self._store, MemoryStore) else None
        self._shared = SharedOperations() if self._memory is None else None
        if settings.fail_connect:
            raise make_error(
                settings.fail_connect, f"injected {settings.fail_connect} failure connecting to fake"
            )
        self._latency = settings.latency
        self._delays = bool(settings.latency.low or settings.latency.high)
        self._failures = []
        if settings.fail_next:
            self.inject_failure(make_error(settings.fail_next, "injected failure (fail_next)"))
        for target, error_name in settings.fail_on.items():
            self.inject_failure(make_error(error_name, f"injected failure of {target}"), target, once=False)
        self._delivery = EventDelivery(self.event_reporter, self.native_states, self._memory)
        self._next_due = None
        self._dues_changed = True
        self._timers = set()
        self._timers_lock = threading.Lock()
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()
        self._names = {}
        with self._transaction() as document:
            self._delivery.start_at(document["seq"])
            self._apply_guest_options(document)

    # -- test-double controls ---------------------------------------------

    def inject_failure(
        self, error: PowerDriversError, operation: str | Operation | None = None, *, once: bool = True
    ) -> None:
        """Make a call fail with ``error``.

        ``operation`` ``None`` targets the next operation of any kind;
        otherwise an :class:`~powerdrivers.Operation`, ``"read"`` or
        ``"vcpu_stats"``. With ``once`` false the failure stays.
        """
        self._failures.append((str(operation) if operation is not None else None, error, once))

    def clear_failures(self) -> None:
        """Remove every injected failure."""
        self._failures.clear()

    def set_latency(self, low: float, high: float | None = None) -> None:
        """Add ``low`` seconds (or a uniform delay in ``low..high``) to every call.

        Each bound is at most a minute; bad bounds raise :class:`~powerdrivers.InvalidOption`
        and leave the latency as it was.
        """
        self._latency = latency_between(low, low if high is None else high)
        self._delays = bool(self._latency.low or self._latency.high)

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
            self._set_state(document, record, _S.CRASHED, "panicked", cause=None)
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
        shared = self._shared
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
        self._call("read")
        memory = self._quiet_memory()
        if memory is not None:
            with memory.lock:
                return [self._reading(record) for record in memory.committed["instances"].values()]
        with self._transaction() as document:
            return [self._reading(record) for record in document["instances"].values()]

    def _read_one(self, ref: str) -> InstanceReading:
        self._call("read")
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
        due = self._next_due
        if self._memory is not None and (due is None or time.time() < due):
            return self._memory
        return None

    # -- operations -----------------------------------------------------------

    def _start(self, instance: InstanceReading) -> InstanceReading:
        self._call(Operation.START)
        with self._transaction() as document:
            record, cause = self._target(document, instance, Operation.START)
            resumed = record["state"] == _S.SUSPENDED
            self._set_state(document, record, _S.RUNNING, "restored" if resumed else "booted", cause)
            self._arm_crash(record)
        return self._reading(record)

    def _power_off(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.POWER_OFF, _S.SHUTOFF, "destroyed")

    def _request_shutdown(self, instance: InstanceReading) -> None:
        self._ask_guest(instance, Operation.SHUTDOWN)

    def _request_reboot(self, instance: InstanceReading) -> None:
        self._ask_guest(instance, Operation.REBOOT)

    def _hard_reboot(self, instance: InstanceReading) -> InstanceReading:
        return self._change(instance, Operation.HARD_REBOOT, _S.RUNNING, "reset", kind=EventKind.REBOOTED)

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
        self._call(Operation.SPAWN)
        with self._transaction() as document:
            if any(record["name"] == spec.name for record in document["instances"].values()):
                raise InvalidSpec(f"an instance named {spec.name!r} already exists")
            record = new_record(spec.name, _S.RUNNING, "booted", vcpus=spec.vcpus, memory_mib=spec.memory_mib)
            self._store.put(document, record)
            self._arm_crash(record)
            self._append_event(document, record, EventKind.SPAWNED, Operation.SPAWN)
            return self._reading(record)

    def _delete(self, instance: InstanceReading) -> None:
        self._call(Operation.DELETE)
        with self._transaction() as document:
            record, cause = self._target(document, instance, Operation.DELETE)
            self._store.remove(document, record["id"])
            self._dues_changed = True
            record.update(state=_S.SHUTOFF, reason="deleted", pending=None, crash_at=None)
            self._append_event(document, record, EventKind.DELETED, cause)

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        self._call("vcpu_stats")
        with self._transaction() as document:
            [counters] = read_counters([self._find(document, instance.id)])
        return counters

    def _all_vcpu_counters(self) -> list[InstanceVcpuCounters]:
        self._call("vcpu_stats")
        with self._transaction() as document:
            return read_counters(r for r in document["instances"].values() if r["state"] == _S.RUNNING)

    # -- events -------------------------------------------------------------

    def _start_native_events(self) -> None:
        with self._transaction() as document:
            self._delivery.start_at(document["seq"])
        if isinstance(self._store, FileStore):
            self._watching.set()
            # The baseline is taken before subscribe() returns, so no later change is missed.
            baseline = self._store.fingerprint()
            self._watcher = threading.Thread(
                target=self._watch, args=(baseline,), name="powerdrivers-fake-watch", daemon=True
            )
            self._watcher.start()

    def _stop_native_events(self) -> None:
        self._watching.clear()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        self._watcher = None

    def _close(self) -> None:
        with self._timers_lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()

    def _watch(self, fingerprint: object) -> None:
        while self._watching.is_set():
            time.sleep(self._settings.poll_interval)
            current = self._store.fingerprint()
            due = self._next_due is not None and time.time() >= self._next_due
            if current != fingerprint or due:
                fingerprint = current
                self._tick()


def _open_store(uri: str | None, settings: FakeOptions) -> Store:
    def seed() -> Document:
        return seed_document(settings.seed, settings.instances)

    if uri is None:
        return MemoryStore(seed)
    try:
        parts = urlsplit(uri)
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    if parts.scheme != "fake" or parts.netloc or parts.query or parts.fragment:
        raise InvalidURI(
            f"the fake driver takes fake:/// or fake:///path/to/state.json, not {redact_uri(uri)!r}"
        )
    if parts.path in ("", "/"):
        return MemoryStore(seed)
    # Everything is checked before the store creates a file (its lock) beside the path.
    text = unquote(parts.path)
    if "\0" in text:
        raise InvalidURI(f"fake state path {text!r} contains a NUL character")
    path = Path(text)
    try:
        directory = text.endswith("/") or path.is_dir()
    except OSError as error:
        raise InvalidURI(f"fake state path {text!r} cannot be used: {error.strerror}") from None
    if directory:
        raise InvalidURI(f"fake state path {text} is a directory; name a .json file in it")
    return FileStore(path, seed)
