"""An event source for drivers whose hypervisor has no event stream: it polls."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from powerdrivers._exceptions import PowerDriversError
from powerdrivers._reading import InstanceReading

_LOG = logging.getLogger("powerdrivers.polling")

ChangeCallback = Callable[[InstanceReading | None, InstanceReading | None], None]


class PollingEventSource:
    """Reads every instance each ``interval_s`` and reports what changed.

    ``on_change(before, after)`` is called for each instance whose reading
    differs in power state or transition (``None`` for an instance that
    appeared or vanished). ``on_resync()`` is called when a poll succeeds
    after failures, since changes in between may have been missed.
    """

    def __init__(
        self,
        read_all: Callable[[], Iterable[InstanceReading]],
        on_change: ChangeCallback,
        on_resync: Callable[[], None],
        interval_s: float = 0.5,
    ) -> None:
        self._read_all = read_all
        self._on_change = on_change
        self._on_resync = on_resync
        self._interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._previous: dict[str, InstanceReading] = {}
        self._lock = threading.Lock()

    def start(self) -> None:
        """Take a first snapshot (raising if that fails) and start polling."""
        self._previous = self._snapshot()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="powerdrivers-poll", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop polling and wait for the thread to end."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        self._thread = None

    def poll_now(self) -> None:
        """Poll once, immediately, on the caller's thread."""
        with self._lock:
            current = self._snapshot()
            previous, self._previous = self._previous, current
        for instance_id in previous.keys() | current.keys():
            before, after = previous.get(instance_id), current.get(instance_id)
            if (
                before is None
                or after is None
                or before.power_state is not after.power_state
                or before.transition is not after.transition
            ):
                self._on_change(before, after)

    def _snapshot(self) -> dict[str, InstanceReading]:
        return {reading.id: reading for reading in self._read_all()}

    def _run(self) -> None:
        failing = False
        while not self._stop.wait(self._interval_s):
            try:
                self.poll_now()
            except PowerDriversError as error:
                if not failing:
                    _LOG.warning("polling for events failed: %s", error)
                failing = True
                continue
            if failing:
                failing = False
                self._on_resync()
