"""Change listeners: a store wakes its users when something was written, here or (PostgreSQL) anywhere.

A listener is a wake-up, never a message: it carries nothing, and whoever it wakes re-reads the
store. Every write transaction of a store calls its listeners once it has committed (in the
writer's thread). On PostgreSQL each write transaction also notifies ``powerdrivers_changes``,
which the server delivers on commit to every session listening on the channel: each store object
with listeners keeps one connection of its own listening, on a thread, so writes committed by
any process (this one included) wake it within milliseconds. That thread reconnects after a lost
connection and then calls the listeners once, since a notification may have been missed while
it was away.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Final

from sqlalchemy import Engine

from powerdrivers.keeper._errors import KeeperError, StoreError
from powerdrivers.keeper._store_db import CHANNEL, StoreLocation
from powerdrivers.keeper._store_pg import connect, is_postgresql, translated_psycopg

_LOG = logging.getLogger("powerdrivers.keeper")

#: How long ``add`` waits for the first listening connection, so a write right after it wakes.
_FIRST_LISTEN_S: Final = 2.0
#: How often the listening thread looks whether it must stop.
_STOP_CHECK_S: Final = 0.2
_RECONNECT_FIRST_S: Final = 0.1
_RECONNECT_MAX_S: Final = 2.0

Callback = Callable[[], None]


class ChangeListeners:
    """The change listeners of one store object, and on PostgreSQL its listening thread.

    ``engine`` and ``location`` are the store's; nothing connects until the first listener.
    """

    def __init__(self, engine: Engine, location: StoreLocation) -> None:
        self._engine = engine
        self._location = location
        self._lock = threading.Lock()
        self._callbacks: dict[object, Callback] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def add(self, callback: Callback) -> Callback:
        """Call ``callback`` after every write from now on; return the function that removes it.

        On PostgreSQL the first listener starts the listening thread and waits (up to two
        seconds) for it to listen. Raises ``KeeperError`` when ``callback`` is not callable.
        """
        if not callable(callback):
            raise KeeperError(f"a change listener must be callable, not {type(callback).__name__}")
        token = object()
        listening: threading.Event | None = None
        with self._lock:
            self._callbacks[token] = callback
            if is_postgresql(self._engine) and self._thread is None:
                listening = threading.Event()
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._listen, args=(self._stop, listening), name="keeper-store-listen", daemon=True
                )
                self._thread.start()
        if listening is not None:
            listening.wait(_FIRST_LISTEN_S)

        def remove() -> None:
            with self._lock:
                self._callbacks.pop(token, None)

        return remove

    def notify(self) -> None:
        """Call every listener now (a write committed); a listener that raises is logged, not raised."""
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback()
            except Exception:
                _LOG.exception("keeper store: a change listener failed")

    def close(self) -> None:
        """Stop the listening thread (listeners stay registered; the next ``add`` starts it again)."""
        with self._lock:
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(_STOP_CHECK_S * 5)

    def _listen(self, stop: threading.Event, listening: threading.Event) -> None:
        """Listen on the channel until ``stop``; reconnect after a lost connection."""
        delay = _RECONNECT_FIRST_S
        while not stop.is_set():
            try:
                self._listen_once(stop, listening)
                return
            except StoreError as problem:
                if not stop.is_set():
                    _LOG.warning("keeper store: listening for changes failed (retrying): %s", problem)
            if stop.wait(delay):
                return
            delay = min(delay * 2, _RECONNECT_MAX_S)

    def _listen_once(self, stop: threading.Event, listening: threading.Event) -> None:
        """Hold one listening connection until ``stop`` (return) or it fails (raise ``StoreError``)."""
        connection = connect(self._engine, self._location, "listen for changes", "listen")
        try:
            with translated_psycopg(self._location, "listen for changes"):
                connection.execute(f"LISTEN {CHANNEL}")
                listening.set()
                # Whatever was written while nobody listened (before, or while reconnecting).
                self.notify()
                while not stop.is_set():
                    woken = False
                    for _ in connection.notifies(timeout=_STOP_CHECK_S):
                        woken = True
                        if stop.is_set():
                            break
                        self.notify()
                    if not woken and connection.closed:
                        raise ConnectionError("the listening connection was closed")
        finally:
            connection.close()
