"""The simulated hypervisor: transactions, guest actions, crashes, when each is due, the event log.

:class:`FakeEngine` is the part of the fake driver that its public
operations and controls (in ``_driver``) are built on; the events it logs
reach listeners through ``_delivery``.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from powerdrivers import (
    Driver,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    Operation,
    PowerDriversError,
    check_operation,
    rule_for,
)
from powerdrivers._changes import state_change_kind
from powerdrivers_fake._delivery import EventDelivery
from powerdrivers_fake._native import FakeNativeState
from powerdrivers_fake._options import FakeOptions, Latency
from powerdrivers_fake._shared import SharedOperations
from powerdrivers_fake._store import Document, MemoryStore, Store

_LOG = logging.getLogger("powerdrivers.fake")
_S = FakeNativeState
_RUNNING_STATES = {_S.RUNNING, _S.SHUTTING_DOWN, _S.REBOOTING}
#: The guest-dependent operations: the action a cooperative guest is planned to finish, and
#: the state it is in meanwhile.
_GUEST_ACTIONS = {
    Operation.SHUTDOWN: ("shutdown", _S.SHUTTING_DOWN),
    Operation.REBOOT: ("reboot", _S.REBOOTING),
}


class FakeEngine(Driver):
    """The fake driver's simulated hypervisor; :class:`~powerdrivers_fake.FakeDriver` sets it up.

    Every change happens in a transaction of the store (see :meth:`_transaction`):
    it first settles the guest actions and crashes that are due, logs the events
    the change amounts to (with their cause) and, once committed, hands them to
    the driver's :class:`~powerdrivers_fake._delivery.EventDelivery`.
    """

    _settings: FakeOptions
    _store: Store
    #: The in-memory store, or None when the state is a file other processes share.
    _memory: MemoryStore | None
    #: With a file, the guest-dependent operations in flight it shares (see ``_shared``).
    _shared: SharedOperations | None
    _latency: Latency
    _delays: bool
    _failures: list[tuple[str | None, PowerDriversError, bool]]
    _delivery: EventDelivery
    _next_due: float | None
    _dues_changed: bool
    _timers: set[threading.Timer]
    _timers_lock: threading.Lock
    #: Instance name -> the id it had when last looked up (see ``_find``).
    _names: dict[str, str]

    def _tick(self) -> None:
        try:
            with self._transaction():
                pass
        except PowerDriversError as error:
            _LOG.warning("fake: could not apply pending guest actions: %s", error)

    # -- internals ------------------------------------------------------------

    def _transaction(self) -> AbstractContextManager[Document]:
        """Return a store transaction that settles what is due first and delivers what it logged."""
        return _Transaction(self)

    def _opened(self, document: Document) -> None:
        """Start a transaction on ``document``: settle the guest actions and crashes that are due."""
        # Other processes may plan guest actions in a shared file; in memory, only this
        # driver does, so settling and recomputing the next due time can wait until due.
        if self._shared is not None:
            self._shared.loaded(document)
        if self._memory is None or (self._next_due is not None and time.time() >= self._next_due):
            self._settle(document)
            self._dues_changed = True

    def _committing(self, document: Document) -> None:
        """End a transaction on ``document``, before it is committed: note when the next action is due."""
        if self._memory is None or self._dues_changed:
            dues = [
                due
                for record in document["instances"].values()
                for due in ((record["pending"] or {}).get("due"), record["crash_at"])
                if due is not None
            ]
            self._next_due = min(dues, default=None)
            self._dues_changed = False

    def _committed(self, document: Document, seq: int) -> None:
        """After a transaction on ``document`` (that began at ``seq``) committed: deliver its events."""
        # Another process's events come with the file; in memory, a transaction that
        # logged nothing has nothing to deliver that another would not deliver itself.
        if self._memory is None or document["seq"] != seq or self._delivery.pending:
            self._delivery.deliver(document)

    def _change(
        self,
        instance: InstanceReading,
        operation: Operation,
        state: FakeNativeState,
        reason: str,
        kind: EventKind | None = None,
    ) -> InstanceReading:
        """Carry out ``operation``, which puts the instance in ``state`` for ``reason``."""
        self._call(operation)
        with self._transaction() as document:
            record, cause = self._target(document, instance, operation)
            self._set_state(document, record, state, reason, cause, kind)
            if state == _S.RUNNING:
                self._arm_crash(record)
        return self._reading(record)

    def _ask_guest(self, instance: InstanceReading, operation: Operation) -> None:
        """Ask the instance's guest to carry out ``operation``, a graceful shutdown or a soft reboot.

        A cooperative guest that runs enters the operation's transitional state
        and finishes ``guest_delay`` seconds later (see :meth:`_settle`); any
        other guest ignores the request, as a real one ignoring ACPI would.
        """
        action, transitional = _GUEST_ACTIONS[operation]
        self._call(operation)
        with self._transaction() as document:
            record, cause = self._target(document, instance, operation)
            if self._shared is not None:
                self._shared.share(document, record["id"], operation)
            if record["guest"] == "cooperative" and record["state"] == _S.RUNNING:
                self._set_state(document, record, transitional, "acpi", cause)
                self._plan(record, action, cause)

    def _target(
        self, document: Document, instance: InstanceReading, operation: Operation
    ) -> tuple[dict[str, Any], Operation | None]:
        """Return the instance's record, writable, and the operation its events are attributed to.

        That is the operation the calling thread carries out on the instance
        (a shutdown's force-off fallback belongs to the shutdown), else
        ``operation`` itself; never another thread's operation that merely
        runs meanwhile.
        """
        record = self._writable(document, self._find(document, instance.id))
        # Another process (or thread) may have changed the instance since the core checked it.
        state, transition = self.native_states.lookup(record["state"], record["reason"])
        if transition is None and self._shared is not None:
            transition = self._shared.transition(record["id"])
        check_operation(record["name"], operation, state, transition)
        return record, self._tracker.own_operation(record["id"]) or operation

    def _call(self, target: str) -> None:
        if self._delays or self._failures:
            self._inject(target)

    def _inject(self, target: str) -> None:
        delay = self._latency.sample()
        if delay:
            time.sleep(delay)
        for index, (wanted, error, once) in enumerate(self._failures):
            if wanted == target or (wanted is None and target != "read"):
                if once:
                    del self._failures[index]
                raise error

    def _settle(self, document: Document) -> None:
        now = time.time()
        for stored in list(document["instances"].values()):
            pending = stored["pending"]
            crash_at = stored["crash_at"]
            if not (
                (pending is not None and pending["due"] <= now) or (crash_at is not None and crash_at <= now)
            ):
                continue
            record = self._writable(document, stored)
            if pending is not None and pending["due"] <= now:
                cause = Operation(pending["cause"]) if pending["cause"] else None
                if pending["action"] == "shutdown" and record["state"] == _S.SHUTTING_DOWN:
                    self._set_state(document, record, _S.SHUTOFF, "shutdown", cause)
                elif pending["action"] == "reboot" and record["state"] == _S.REBOOTING:
                    self._set_state(document, record, _S.RUNNING, "rebooted", cause, kind=EventKind.REBOOTED)
                    self._arm_crash(record)
                record["pending"] = None
            if record["crash_at"] is not None and record["crash_at"] <= now:
                if record["state"] in _RUNNING_STATES:
                    self._set_state(document, record, _S.CRASHED, "panicked", None)
                record["crash_at"] = None

    def _set_state(
        self,
        document: Document,
        record: dict[str, Any],
        state: FakeNativeState,
        reason: str,
        cause: Operation | None,
        kind: EventKind | None = None,
    ) -> None:
        before = record["state"], record["reason"]
        if record["pending"] is not None or record["crash_at"] is not None:
            self._dues_changed = True
        record["state"], record["reason"] = str(state), reason
        if state not in _RUNNING_STATES:
            record["crash_at"] = None
        if state not in (_S.SHUTTING_DOWN, _S.REBOOTING):
            record["pending"] = None
        if not self._logging_events():
            return
        lookup = self.native_states.lookup
        kind = kind or state_change_kind(lookup(*before), lookup(record["state"], reason))
        if kind is not None:
            self._append_event(document, record, kind, cause)

    def _logging_events(self) -> bool:
        """Whether changes go to the event log: always in a file, in memory only for listeners.

        Checked inside the transaction: a subscriber starts from the sequence number
        its own transaction sees, so one arriving meanwhile misses nothing.
        """
        return self._memory is None or self._hub.has_listeners

    def _append_event(
        self, document: Document, record: dict[str, Any], kind: EventKind, cause: Operation | None
    ) -> None:
        if not self._logging_events():
            return
        if cause is not None and kind not in rule_for(cause).events:
            # An operation is credited only with the kinds of event it causes.
            cause = None
        document["seq"] += 1
        document["events"].append(
            {
                "seq": document["seq"],
                "time": time.time(),
                "kind": str(kind),
                "id": record["id"],
                "name": record["name"],
                "state": record["state"],
                "reason": record["reason"],
                "cause": str(cause) if cause else None,
            }
        )

    def _plan(self, record: dict[str, Any], action: str, cause: Operation | None) -> None:
        self._dues_changed = True
        due = time.time() + self._settings.guest_delay
        record["pending"] = {"action": action, "due": due, "cause": str(cause) if cause else None}
        self._schedule(due)

    def _arm_crash(self, record: dict[str, Any]) -> None:
        if record["name"] in self._settings.crash or record["id"] in self._settings.crash:
            self._dues_changed = True
            record["crash_at"] = time.time() + self._settings.crash_after
            self._schedule(record["crash_at"])

    def _schedule(self, due: float) -> None:
        timer = threading.Timer(max(0.0, due - time.time()) + 0.001, self._fire)
        timer.daemon = True
        with self._timers_lock:
            self._timers.add(timer)
        timer.start()

    def _fire(self) -> None:
        with self._timers_lock:
            current = threading.current_thread()
            self._timers = {timer for timer in self._timers if timer is not current}
        self._tick()

    def _apply_guest_options(self, document: Document) -> None:
        for stored in list(document["instances"].values()):
            record = self._writable(document, stored)
            if record["name"] in self._settings.uncooperative or record["id"] in self._settings.uncooperative:
                record["guest"] = "uncooperative"
            if record["state"] in _RUNNING_STATES and record["crash_at"] is None:
                self._arm_crash(record)

    def _writable(self, document: Document, record: dict[str, Any]) -> dict[str, Any]:
        """Copy a record before changing it: a committed record never changes (see ``Store``)."""
        copy = dict(record)
        self._store.put(document, copy)
        return copy

    def _find(self, document: Document, ref: str) -> dict[str, Any]:
        instances = document["instances"]
        record: dict[str, Any] | None = instances.get(ref)
        if record is not None:
            return record
        # Names are looked up through a cache of the ids they last had, checked on use,
        # so that a lookup by name costs the same in a fleet of 10,000 as in one of 4.
        names = self._names
        known = names.get(ref)
        if known is not None:
            record = instances.get(known)
            if record is not None and record["name"] == ref:
                return record
        for record in instances.values():
            if record["name"] == ref:
                if len(names) > 2 * len(instances):
                    names.clear()
                names[ref] = record["id"]
                return record
        raise InstanceNotFound(ref)

    def _reading(self, record: dict[str, Any]) -> InstanceReading:
        reading = self.native_states.reading(record["id"], record["name"], record["state"], record["reason"])
        if reading.transition is None and self._shared is not None:
            transition = self._shared.transition(record["id"])
            if transition is not None:
                return reading._replace(transition=transition)
        return reading


class _Transaction:
    """A transaction of the fake's store, wrapped in the driver's bookkeeping.

    A class rather than a generator, because it is every operation's hot path.
    """

    __slots__ = ("_document", "_driver", "_seq", "_stored")

    def __init__(self, driver: FakeEngine) -> None:
        self._driver = driver
        self._stored = driver._store.transaction()

    def __enter__(self) -> Document:
        document = self._stored.__enter__()
        self._seq: int = document["seq"]
        try:
            self._driver._opened(document)
        except BaseException as error:
            self._stored.__exit__(type(error), error, error.__traceback__)
            raise
        self._document: Document = document
        return document

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._driver._committing(self._document)
            except BaseException as error:
                self._stored.__exit__(type(error), error, error.__traceback__)
                raise
        self._stored.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._driver._committed(self._document, self._seq)
