"""The one way a driver's events reach its listeners, attributed to their cause."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Final

from powerdrivers._changes import change_kind
from powerdrivers._event_kinds import EventKind
from powerdrivers._events import Event, EventHub
from powerdrivers._operations import Operation
from powerdrivers._reading import InstanceReading
from powerdrivers._tracking import OperationTracker

#: The default of ``caused_by``: let the driver's operation tracker name the cause.
FROM_TRACKER: Final = object()


class EventReporter:
    """Reports a driver's events to its subscribers, naming the operation that caused each.

    Every driver has one, as :attr:`powerdrivers.Driver.event_reporter`. A
    driver's native event source reports through it, whether that source is
    a method of the driver or a helper object of its own (an event thread, a
    watcher class): hand the helper the reporter, not the driver.

    **Threading.** Every method may be called from any thread, concurrently
    with the driver's operations and with each other; listeners are called
    on the reporting thread, in the order events are reported from it. An
    event reported while nobody listens is dropped at once, so a source may
    report without checking :attr:`listening` first (checking spares it the
    work of building readings).
    """

    __slots__ = ("_forced", "_hub", "_tracker")

    def __init__(
        self, hub: EventHub, tracker: OperationTracker, forced: Callable[[str, str | None], bool]
    ) -> None:
        self._hub = hub
        self._tracker = tracker
        self._forced = forced

    @property
    def listening(self) -> bool:
        """Whether anyone is subscribed: when not, reported events go nowhere."""
        return self._hub.has_listeners

    def report(
        self,
        kind: EventKind,
        reading: InstanceReading,
        caused_by: Operation | object | None = FROM_TRACKER,
    ) -> None:
        """Report an event of ``kind`` showing ``reading`` as the instance's state after it.

        The event is attributed to this driver's operation that caused it,
        if one did (see :class:`powerdrivers.Event`). Pass ``caused_by`` only
        when the driver knows the cause better than the tracker does (an
        event replayed from another process, say): an :class:`Operation`, or
        ``None`` for "not ours". Each event is published as reported,
        repeats included. Raises nothing: a listener's exception is logged
        and dropped.
        """
        if not self._hub.has_listeners:
            return
        if caused_by is FROM_TRACKER:
            forced = kind is EventKind.STOPPED and self._forced(reading.native_state, reading.native_reason)
            cause = self._tracker.cause(
                reading.id, kind, reading.transition, forced=forced
            ) or self._tracker.cause(reading.name, kind, reading.transition, forced=forced)
        else:
            cause = caused_by if isinstance(caused_by, Operation) else None
        self._hub.publish(Event.from_reading(kind, reading, cause))

    def report_change(self, before: InstanceReading | None, after: InstanceReading | None) -> None:
        """Report the event a change from ``before`` to ``after`` amounts to, if any.

        ``None`` on one side means the instance did not exist there (it was
        spawned, or deleted). Unchanged readings need no filtering by the
        caller: when neither the power state nor the transition differs,
        nothing is reported. Raises nothing.
        """
        kind = change_kind(before, after)
        if kind is not None:
            reading = after if after is not None else before
            assert reading is not None  # change_kind returns None when both are
            self.report(kind, reading)

    def report_resync(self) -> None:
        """Tell listeners that events may have been missed and they should read again.

        Report it after the source lost its stream (a dropped connection)
        and got it back. Raises nothing.
        """
        if not self._hub.has_listeners:
            return
        self._hub.publish(
            Event(
                time=datetime.now(UTC),
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
