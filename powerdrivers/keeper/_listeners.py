"""Sets of host listeners (after each resync, after each VCPU round), each one's failure logged apart."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

_V = TypeVar("_V")


class HostListeners(Generic[_V]):
    """Listeners ``(host, value)`` added and removed from any thread, called from any other.

    Calling the set calls each listener in the order added; what one raises is logged (on
    ``log``, as a failure of ``kind``) and the others are still called.
    """

    def __init__(self, log: logging.Logger, kind: str = "sync listener") -> None:
        self._log = log
        self._kind = kind
        self._lock = threading.Lock()
        # Replaced, never changed in place: called without the lock, from the hosts' threads.
        self._listeners: tuple[Callable[[str, _V], None], ...] = ()

    def add(self, listener: Callable[[str, _V], None]) -> Callable[[], None]:
        """Add ``listener``; return a function that removes it."""
        with self._lock:
            self._listeners = (*self._listeners, listener)

        def remove() -> None:
            with self._lock:
                self._listeners = tuple(known for known in self._listeners if known is not listener)

        return remove

    def __call__(self, host: str, value: _V) -> None:
        """Tell every listener about ``host``: ``value`` is what the set's kind passes on."""
        for listener in self._listeners:
            try:
                listener(host, value)
            except Exception:
                self._log.exception("a %s failed", self._kind)


class SyncListeners(HostListeners[float]):
    """Listeners ``(host, seconds)``, called after each full resync of a host with the seconds it took."""
