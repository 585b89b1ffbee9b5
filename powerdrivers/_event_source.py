"""Running a driver's event source, native or polling, exactly while someone listens."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from powerdrivers._capabilities import Capability
from powerdrivers._polling import PollingEventSource

if TYPE_CHECKING:
    from powerdrivers._driver import Driver


class EventSourceSwitch:
    """Starts a driver's event source for its first listener and stops it after its last.

    A driver declaring ``native_events`` gets its ``_start_native_events``
    and ``_stop_native_events`` called; any other gets a
    :class:`PollingEventSource` reading every instance each
    ``poll_interval_s`` seconds. Starting and stopping are serialised, and
    each looks at who listens when it runs: a stop that lost a race with a
    new listener leaves the source running.
    """

    __slots__ = ("_driver", "_lock", "_native_running", "_poll_interval_s", "_poller")

    def __init__(self, driver: Driver, poll_interval_s: float) -> None:
        self._driver = driver
        self._poll_interval_s = poll_interval_s
        self._poller: PollingEventSource | None = None
        self._native_running = False
        self._lock = threading.RLock()

    @property
    def polling(self) -> bool:
        """Whether the running source is the polling one."""
        return self._poller is not None

    def start(self) -> None:
        """Start the source unless it runs; raises what the driver's start raises."""
        driver = self._driver
        with self._lock:
            driver._check_open()
            if self._poller is not None or self._native_running:
                return
            # The source reports only what changes from now on: older debts will never be paid.
            driver._tracker.forget_owed()
            if Capability.NATIVE_EVENTS in driver.capabilities:
                driver._start_native_events()
                self._native_running = True
                return
            reporter = driver.event_reporter
            self._poller = PollingEventSource(
                driver.list_instances, reporter.report_change, reporter.report_resync, self._poll_interval_s
            )
            self._poller.start()

    def stop_unless_needed(self) -> None:
        """Stop the source, unless someone listens again and the driver is open."""
        driver = self._driver
        with self._lock:
            if driver._hub.has_listeners and not driver._closed:
                return
            if self._poller is not None:
                self._poller.stop()
                self._poller = None
            elif self._native_running:
                self._native_running = False
                driver._stop_native_events()

    def poll_now(self) -> bool:
        """Poll once now if the source polls; return whether it did.

        Raises what reading the instances raises.
        """
        poller = self._poller
        if poller is None:
            return False
        poller.poll_now()
        return True
