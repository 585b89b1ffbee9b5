"""The service's event bus: events published from any thread, delivered to asyncio subscribers.

Each subscriber (one live stream: an SSE client, a dashboard page) has a bounded queue on its
own event loop; an event reaches it through ``loop.call_soon_threadsafe``, so publishing never
blocks on a slow client. A subscriber that falls a whole queue behind is told so
(``SubscriptionOverflow``) and dropped: it reconnects and resumes from its last record id,
which the store still has, instead of holding unbounded memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

from powerdrivers import PowerDriversError, parse_count

_LOG = logging.getLogger("powerdrivers.service")

#: The most events a subscriber may have waiting before it is dropped.
DEFAULT_QUEUE: Final = 1000
MAX_QUEUE: Final = 100_000

#: The event types: a history record, an instance's new view, a host's new view.
EVENT_TYPES: Final = frozenset({"record", "instance", "host"})


class SubscriptionError(PowerDriversError):
    """A subscription can deliver no more events."""


class SubscriptionOverflow(SubscriptionError):
    """The subscriber fell behind by a whole queue and was dropped: reconnect with the last event id."""


class SubscriptionClosed(SubscriptionError):
    """The subscription was closed (by its owner, or because the bus stopped)."""


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    """One event: a ``record`` (id: the history record's id), an ``instance`` or a ``host`` (id None)."""

    id: int | None
    type: str
    data: dict[str, Any] = field(default_factory=dict)


class EventSubscription:
    """One subscriber's bounded queue, read with ``await get()`` on the loop that subscribed."""

    def __init__(self, bus: EventBus, loop: asyncio.AbstractEventLoop, maxsize: int) -> None:
        self._bus = bus
        self._loop = loop
        self._queue: asyncio.Queue[ServiceEvent | None] = asyncio.Queue(maxsize)
        self._failure: SubscriptionError | None = None

    async def get(self) -> ServiceEvent:
        """Return the next event.

        Raises ``SubscriptionOverflow`` once the subscriber has fallen a whole queue behind,
        ``SubscriptionClosed`` once the subscription is closed.
        """
        if self._failure is not None:
            raise self._failure
        event = await self._queue.get()
        if event is None or self._failure is not None:
            raise self._failure or SubscriptionClosed("the event subscription is closed")
        return event

    def close(self) -> None:
        """Stop receiving events; a waiting ``get()`` raises ``SubscriptionClosed``. Idempotent."""
        self._bus.unsubscribe(self)
        self._finish(SubscriptionClosed("the event subscription is closed"))

    def _finish(self, failure: SubscriptionError) -> None:
        # A closed loop has nobody waiting on it.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._end, failure)

    @property
    def pending(self) -> int:
        """Events waiting to be read."""
        return self._queue.qsize()

    def deliver(self, event: ServiceEvent) -> bool:
        """Hand ``event`` to the subscriber's loop from any thread; False once its loop is closed."""
        try:
            self._loop.call_soon_threadsafe(self._put, event)
        except RuntimeError:
            return False
        return True

    def _put(self, event: ServiceEvent) -> None:
        if self._failure is not None:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._bus.unsubscribe(self)
            self._end(SubscriptionOverflow(f"the event stream fell {self._queue.maxsize} events behind"))

    def _end(self, failure: SubscriptionError) -> None:
        if self._failure is None:
            self._failure = failure
        # Whatever was queued is dropped: the client resumes from the store by its last id.
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class EventBus:
    """Fan events out to asyncio subscribers and synchronous listeners; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscriptions: list[EventSubscription] = []
        self._listeners: list[Callable[[ServiceEvent], None]] = []

    def publish(self, event: ServiceEvent) -> None:
        """Deliver ``event`` to every listener (in this thread) and every subscriber (on its loop)."""
        with self._lock:
            listeners = list(self._listeners)
            subscriptions = list(self._subscriptions)
        for listener in listeners:
            try:
                listener(event)
            except Exception:
                _LOG.exception("service: an event listener failed")
        for subscription in subscriptions:
            if not subscription.deliver(event):
                self.unsubscribe(subscription)

    def subscribe(self, maxsize: int = DEFAULT_QUEUE) -> EventSubscription:
        """Return a new subscription on the running event loop (call it from a coroutine).

        Raises ``InvalidOption`` for a queue size out of 1 to ``MAX_QUEUE``, ``RuntimeError``
        outside a running loop.
        """
        size = parse_count("maxsize", maxsize, minimum=1, maximum=MAX_QUEUE)
        subscription = EventSubscription(self, asyncio.get_running_loop(), size)
        with self._lock:
            self._subscriptions.append(subscription)
        return subscription

    def unsubscribe(self, subscription: EventSubscription) -> None:
        """Stop delivering to ``subscription``; does nothing for one already gone."""
        with self._lock:
            if subscription in self._subscriptions:
                self._subscriptions.remove(subscription)

    def add_listener(self, listener: Callable[[ServiceEvent], None]) -> Callable[[], None]:
        """Call ``listener(event)`` in the publishing thread for every event; return its remover.

        A listener must be quick; what it raises is logged, never passed to the publisher.
        """
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove

    def close(self) -> None:
        """End every subscription (``get()`` raises ``SubscriptionClosed``) and drop every listener."""
        with self._lock:
            subscriptions, self._subscriptions = self._subscriptions, []
            self._listeners.clear()
        for subscription in subscriptions:
            subscription._finish(SubscriptionClosed("the service is stopping"))

    @property
    def subscribers(self) -> int:
        """The number of live subscriptions."""
        with self._lock:
            return len(self._subscriptions)
