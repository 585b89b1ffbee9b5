"""Lifecycle events and their delivery to many listeners."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from types import TracebackType
from typing import Any, NamedTuple

from powerdrivers._event_kinds import EventKind
from powerdrivers._operations import Operation
from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState, Transition

_LOG = logging.getLogger("powerdrivers.events")


class Event(NamedTuple):
    """Something happened to an instance.

    ``caused_by_operation`` names the operation of this driver that caused
    the event (a reboot's stop and start are attributed to the reboot, not
    read as an outage); it is ``None`` when the change came from elsewhere:
    the guest, another client, a crash. For ``RESYNC`` events ``instance_id``
    and ``name`` are ``None`` and the state fields say nothing.
    """

    time: datetime
    kind: EventKind
    instance_id: str | None
    name: str | None
    power_state: PowerState | None
    transition: Transition | None
    native_state: str | None
    native_reason: str | None
    caused_by_operation: Operation | None

    @classmethod
    def from_reading(
        cls,
        kind: EventKind,
        reading: InstanceReading,
        caused_by_operation: Operation | None,
    ) -> Event:
        """Build an event describing ``reading`` as the state after the change."""
        return cls(
            time=reading.observed_at,
            kind=kind,
            instance_id=reading.id,
            name=reading.name,
            power_state=reading.power_state,
            transition=reading.transition,
            native_state=reading.native_state,
            native_reason=reading.native_reason,
            caused_by_operation=caused_by_operation,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return the JSON shape the CLI's ``events`` command prints."""
        return {
            "time": self.time.isoformat(),
            "id": self.instance_id,
            "name": self.name,
            "event": self.kind.value,
            "power_state": self.power_state.value if self.power_state else None,
            "transition": self.transition.value if self.transition else None,
            "native_state": self.native_state,
            "native_reason": self.native_reason,
            "caused_by_operation": self.caused_by_operation.value if self.caused_by_operation else None,
        }


#: A listener is called once per event, on the driver's event thread.
#: It should return quickly; an exception it raises is logged and dropped.
Listener = Callable[[Event], None]


class Subscription:
    """A handle on a listener registered with ``Driver.subscribe``.

    Call :meth:`unsubscribe` (or leave a ``with`` block) to stop delivery;
    doing so twice is harmless.
    """

    def __init__(self, hub: EventHub, listener: Listener) -> None:
        self._hub = hub
        self._listener = listener
        self._active = True

    @property
    def active(self) -> bool:
        """Whether the listener still receives events: false once unsubscribed or the driver closed."""
        return self._active and not self._hub.closed

    def unsubscribe(self) -> None:
        """Stop delivering events to this listener."""
        if self._active:
            self._active = False
            self._hub.remove(self._listener)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.unsubscribe()


class EventHub:
    """Fans events out to any number of listeners, isolating their failures.

    ``on_first`` is called when the first listener arrives and ``on_last``
    when the last one leaves, so a driver runs its event source only while
    someone listens.
    """

    def __init__(self, on_first: Callable[[], None], on_last: Callable[[], None]) -> None:
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._on_first = on_first
        self._on_last = on_last
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called: nothing is delivered any more."""
        return self._closed

    def close(self) -> None:
        """Drop every listener without calling ``on_last``: the owner stops its source itself."""
        with self._lock:
            self._closed = True
            self._listeners.clear()

    @property
    def has_listeners(self) -> bool:
        """Whether anyone listens."""
        return bool(self._listeners)

    def add(self, listener: Listener) -> Subscription:
        """Register ``listener`` and return its subscription handle."""
        with self._lock:
            first = not self._listeners
            self._listeners.append(listener)
        if first:
            try:
                self._on_first()
            except BaseException:
                with self._lock:
                    self._listeners.remove(listener)
                raise
        return Subscription(self, listener)

    def remove(self, listener: Listener) -> None:
        """Unregister ``listener``; the source stops when it was the last one."""
        with self._lock:
            if listener not in self._listeners:
                return
            self._listeners.remove(listener)
            last = not self._listeners
        if last:
            self._on_last()

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every listener registered now."""
        with self._lock:
            listeners = tuple(self._listeners)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _LOG.exception("event listener %r failed on %s event", listener, event.kind.value)
