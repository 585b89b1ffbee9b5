"""The fake driver's events: which changes of its hypervisor are events, and their delivery.

The simulated hypervisor (``_hypervisor``) reports each change of an instance's
native state; :class:`EventDelivery` decides which are events, logs those in the
hypervisor's event log with the operation that caused them, and reports the
logged events (this process's and, with a state file, others') as readings
through the driver's :class:`~powerdrivers.EventReporter`, each once and in
the order logged.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from powerdrivers import EventKind, EventReporter, NativeStateTable, Operation, rule_for
from powerdrivers._changes import state_change_kind
from powerdrivers_fake._store import Document, MemoryStore, append_event

#: The native reason of a guest that restarted itself (a soft reboot done): a REBOOTED event.
_REBOOTED = "rebooted"


class EventDelivery:
    """Reports the events logged in the fake's state since the last delivery, in order.

    Events queue up and one thread at a time reports them; a listener that calls
    back into the driver only adds to the queue, which the reporting thread drains.
    Every method may be called from any thread.
    """

    __slots__ = ("_delivered", "_draining", "_lock", "_memory", "_native_states", "_outbox", "_reporter")

    def __init__(
        self, reporter: EventReporter, native_states: NativeStateTable, memory: MemoryStore | None
    ) -> None:
        self._reporter = reporter
        self._native_states = native_states
        #: The in-memory store, whose live event log other transactions append to and trim.
        self._memory = memory
        self._lock = threading.Lock()
        self._delivered = -1
        self._outbox: deque[dict[str, Any]] = deque()
        self._draining = False

    def logging(self) -> bool:
        """Whether changes go to the event log: always in a file, in memory only for listeners.

        Checked inside the transaction: a subscriber starts from the sequence number
        its own transaction sees, so one arriving meanwhile misses nothing.
        """
        return self._memory is None or self._reporter.listening

    def changed(
        self, document: Document, record: dict[str, Any], before: tuple[str, str], cause: str | None
    ) -> None:
        """Log the event a change of the instance's native state (from ``before``) amounts to, if any."""
        if not self.logging():
            return
        reason = record["reason"]
        kind: EventKind | None
        if reason == _REBOOTED:
            kind = EventKind.REBOOTED
        else:
            lookup = self._native_states.lookup
            kind = state_change_kind(lookup(*before), lookup(record["state"], reason))
        if kind is not None:
            self.log(document, record, kind, Operation(cause) if cause else None)

    def log(
        self, document: Document, record: dict[str, Any], kind: EventKind, cause: Operation | None
    ) -> None:
        """Log an event of ``kind`` about ``record``, credited to ``cause`` if the operation table allows."""
        if not self.logging():
            return
        if cause is not None and kind not in rule_for(cause).events:
            # An operation is credited only with the kinds of event it causes.
            cause = None
        append_event(document, record, str(kind), str(cause) if cause else None)

    def committed(self, document: Document, seq: int) -> None:
        """After a transaction on ``document`` (that began at ``seq``) committed: deliver its events."""
        # Another process's events come with the file; in memory, a transaction that
        # logged nothing has nothing to deliver that another would not deliver itself.
        if self._memory is None or document["seq"] != seq or self._outbox:
            self.deliver(document)

    def start_at(self, seq: int) -> None:
        """Skip every event logged up to sequence number ``seq``: a subscriber starts from the present."""
        with self._lock:
            self._delivered = seq

    def deliver(self, document: Document) -> None:
        """Report the events ``document`` logged after the last delivered one.

        Raises nothing of its own (the reporter logs and drops what a listener
        raises); should a report be interrupted, the events after it stay
        queued for the next delivery.
        """
        with self._memory.lock if self._memory is not None else nullcontext(), self._lock:
            events = document["events"]
            start = len(events)
            while start and events[start - 1]["seq"] > self._delivered:
                start -= 1
            fresh = events[start:]
            if fresh:
                self._delivered = fresh[-1]["seq"]
                # Nobody listens: nothing to build. A subscriber starts from the present.
                if self._reporter.listening:
                    self._outbox.extend(fresh)
            if self._draining or not self._outbox:
                return
            self._draining = True
        try:
            while True:
                with self._lock:
                    if not self._outbox:
                        self._draining = False
                        return
                    event = self._outbox.popleft()
                self._report(event)
        except BaseException:
            with self._lock:
                self._draining = False
            raise

    def _report(self, event: dict[str, Any]) -> None:
        reading = self._native_states.reading(
            event["id"],
            event["name"],
            event["state"],
            event["reason"],
            observed_at=datetime.fromtimestamp(event["time"], UTC),
        )
        cause = Operation(event["cause"]) if event["cause"] else None
        self._reporter.report(EventKind(event["kind"]), reading, caused_by=cause)
