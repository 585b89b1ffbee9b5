"""A set of sync listeners: called after each full resync of a host, each one's failure logged apart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

SyncListener = Callable[[str, float], None]


class SyncListeners:
    """Listeners ``(host, seconds)`` added and removed from any thread, called from any other.

    Calling the set calls each listener in the order added; what one raises is logged (on
    ``log``) and the others are still called.
    """

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._lock = threading.Lock()
        # Replaced, never changed in place: called without the lock, from the hosts' workers.
        self._listeners: tuple[SyncListener, ...] = ()

    def add(self, listener: SyncListener) -> Callable[[], None]:
        """Add ``listener``; return a function that removes it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(known for known in self._listeners if known is not listener)

        return remove

    def __call__(self, host: str, seconds: float) -> None:
        """Tell every listener that ``host`` ended a full resync that took ``seconds``."""
        for listener in self._listeners:
            try:
                listener(host, seconds)
            except Exception:
                self._log.exception("a sync listener failed")
