"""Which operation of this driver is in flight on which instance, and what it caused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from powerdrivers._event_kinds import EventKind
from powerdrivers._exceptions import InvalidStateTransition
from powerdrivers._operations import Operation, rule_for


@dataclass
class _Finished:
    operation: Operation
    until: float
    pending: set[EventKind] = field(default_factory=set)


class OperationTracker:
    """Tracks operations in flight so readings and events can name them.

    While an operation runs on an instance, readings report its transition
    and every event of a kind the operation causes (see
    ``OperationRule.events``) is attributed to it. Hypervisors deliver
    events asynchronously, so for ``grace_s`` seconds after an operation
    returns each kind it causes is still attributed to it, once.
    """

    def __init__(self, grace_s: float = 2.0) -> None:
        self._grace_s = grace_s
        self._lock = threading.Lock()
        self._running: dict[str, list[Operation]] = {}
        self._finished: dict[str, _Finished] = {}

    @contextmanager
    def track(self, instance_id: str, operation: Operation) -> Iterator[None]:
        """Mark ``operation`` as in flight on ``instance_id`` for the ``with`` block.

        A forced operation may start while another runs on the same instance
        (a forced power-off interrupts a graceful shutdown), and so may a
        second request for the operation in flight; any other is refused
        with :class:`InvalidStateTransition`.
        """
        with self._lock:
            running = self._running.setdefault(instance_id, [])
            if running and not rule_for(operation).forced and running[-1] is not operation:
                raise InvalidStateTransition(
                    instance_id,
                    operation.value,
                    "busy",
                    transition=rule_for(running[-1]).transition.value,
                )
            running.append(operation)
        try:
            yield
        finally:
            with self._lock:
                running.remove(operation)
                if not running:
                    del self._running[instance_id]
                self._finished[instance_id] = _Finished(
                    operation, time.monotonic() + self._grace_s, set(rule_for(operation).events)
                )

    def in_flight(self, instance_id: str) -> Operation | None:
        """Return the operation running on ``instance_id``, if any."""
        running = self._running.get(instance_id)
        return running[-1] if running else None

    def cause(self, instance_id: str, kind: EventKind) -> Operation | None:
        """Return the operation of ours that an event of ``kind`` on ``instance_id`` comes from."""
        with self._lock:
            for running in reversed(self._running.get(instance_id, ())):
                if kind in rule_for(running).events:
                    return running
            finished = self._finished.get(instance_id)
            if finished is None:
                return None
            if time.monotonic() > finished.until:
                del self._finished[instance_id]
                return None
            if kind in finished.pending:
                finished.pending.discard(kind)
                return finished.operation
            return None
