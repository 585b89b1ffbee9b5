"""A listener for tests: it records every event and waits for the one a test expects."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from powerdrivers._event_kinds import EventKind
from powerdrivers._events import Event
from powerdrivers._states import PowerState


class EventRecorder:
    """Subscribe it (``driver.subscribe(recorder)``) and wait for events, thread-safely."""

    def __init__(self) -> None:
        self._events: list[Event] = []
        self._arrived = threading.Condition()

    def __call__(self, event: Event) -> None:
        with self._arrived:
            self._events.append(event)
            self._arrived.notify_all()

    @property
    def events(self) -> list[Event]:
        """Every event so far, oldest first."""
        with self._arrived:
            return list(self._events)

    def clear(self) -> None:
        """Forget the events so far."""
        with self._arrived:
            self._events.clear()

    def wait_until(self, predicate: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        """Wait until ``predicate(events)`` holds and return the events; ``AssertionError`` on timeout."""
        deadline = time.monotonic() + timeout
        with self._arrived:
            while not predicate(self._events):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    seen = [(event.kind.value, event.name) for event in self._events]
                    raise AssertionError(f"the events never matched within {timeout} s; saw {seen}")
                self._arrived.wait(remaining)
            return list(self._events)

    def wait_for_event(
        self,
        *,
        kind: EventKind | None = None,
        name: str | None = None,
        instance_id: str | None = None,
        power_state: PowerState | None = None,
        timeout: float = 10.0,
    ) -> Event:
        """Return the first event matching every criterion given, waiting up to ``timeout``."""

        def matches(event: Event) -> bool:
            return (
                (kind is None or event.kind is kind)
                and (name is None or event.name == name)
                and (instance_id is None or event.instance_id == instance_id)
                and (power_state is None or event.power_state is power_state)
            )

        events = self.wait_until(lambda events: any(matches(event) for event in events), timeout)
        return next(event for event in events if matches(event))
