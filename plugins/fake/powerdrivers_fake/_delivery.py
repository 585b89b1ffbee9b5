"""Reporting the events the fake hypervisor logs to the driver's listeners.

The driver logs each change of the simulated hypervisor (``_hypervisor``) that
is an event, with its cause, in the hypervisor's event log; :class:`EventDelivery`
turns the logged events into readings and reports them through the driver's
:class:`~powerdrivers.EventReporter`, each once and in the order logged.
"""

from __future__ import annotations

import threading
from collections import deque
from contextlib import nullcontext
from datetime import UTC, datetime
from typing import Any

from powerdrivers import EventKind, EventReporter, NativeStateTable, Operation
from powerdrivers_fake._store import Document, MemoryStore


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

    @property
    def pending(self) -> bool:
        """Whether events wait in the queue (for the thread that is reporting them)."""
        return bool(self._outbox)

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
