"""The driver's libvirt connection, shared by concurrent calls and replaced or closed safely.

Every call leases the connection for its duration. Reconnecting after a
failure, and closing the driver, retire the connection instead of closing it
under a call in flight: a retired connection takes no new lease, and is
closed (its callbacks deregistered first) when its last lease returns.

libvirt keeps what a callback registration hands it until the callback is
deregistered, and some drivers never let go of a close callback at all. So
every callback holds only a weak reference to what it reports to: a closed
driver is freed whatever libvirt keeps.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from powerdrivers import HypervisorConnectionError, Secret
from powerdrivers_libvirt._uri import in_process

_LOG = logging.getLogger("powerdrivers.libvirt")
_T = TypeVar("_T")
#: The longest pause between two reconnection attempts.
_MAX_BACKOFF_S = 2.0


class Handle:
    """One libvirt connection, the calls using it, and the callbacks registered on it."""

    __slots__ = (
        "__weakref__",
        "_lock",
        "_retired",
        "_users",
        "broken",
        "callbacks",
        "close_callback",
        "conn",
        "owner",
    )

    def __init__(self, conn: libvirt.virConnect) -> None:
        self.conn = conn
        #: Set when libvirt reports the connection lost: the next lease reconnects.
        self.broken = False
        #: The ids of the domain event callbacks registered on this connection.
        self.callbacks: list[int] = []
        self.close_callback = False
        #: The connection this one serves, told when libvirt reports it lost.
        self.owner: weakref.ref[Connection] | None = None
        self._lock = threading.Lock()
        self._users = 0
        self._retired = False

    def enter(self) -> bool:
        """Count one more call on the connection; False if it is retired."""
        with self._lock:
            if self._retired:
                return False
            self._users += 1
            return True

    def leave(self) -> bool:
        """Count a call as done; True if it was the last on a retired connection (the caller frees it)."""
        with self._lock:
            self._users -= 1
            return self._retired and self._users == 0

    def retire(self) -> bool:
        """Take no more calls; True if none is in flight (the caller frees it), else the last frees it."""
        with self._lock:
            if self._retired:
                return False
            self._retired = True
            return self._users == 0


class Connection:
    """The driver's current libvirt connection: leased by calls, replaced when lost, closed once.

    ``open_conn`` opens a connection (raising ``HypervisorConnectionError``
    when the daemon cannot be reached); ``reopened`` is called with each
    replacement once it is in place, by the call that made it, before that
    call goes on; ``closed`` says whether the driver has been closed, so
    that a reconnection stops trying; ``listening`` says whether events are
    wanted: then a connection libvirt reports lost is replaced at once, on a
    thread of its own, rather than by the next call (a consumer that only
    listens makes none).
    """

    def __init__(
        self,
        open_conn: Callable[[], libvirt.virConnect],
        reconnect_timeout_s: float,
        reopened: Callable[[Handle], None],
        closed: Callable[[], bool],
        listening: Callable[[], bool] = lambda: False,
    ) -> None:
        self._open_conn = open_conn
        self._reconnect_timeout_s = reconnect_timeout_s
        self._reopened = reopened
        self._closed = closed
        self._listening = listening
        #: Set while a thread of its own replaces a lost connection: one at a time.
        self._reconnecting = threading.Event()
        #: How many reconnections failed, and the last one's error (its arguments: no traceback kept).
        self._failures = 0
        self._failure: tuple[object, ...] = ()
        #: Held while replacing the connection and while (de)registering callbacks on it.
        self._lock = threading.RLock()
        #: Held only to swap ``_current``: closing never waits for a reconnection.
        self._swap = threading.Lock()
        self._shut = False
        self._current: Handle | None = self._new_handle(open_conn())

    def acquire(self) -> Handle:
        """Lease the connection for one call, reconnecting if it was lost; pair with :meth:`release`."""
        handle = self._current
        if handle is not None and not handle.broken and handle.enter():
            return handle
        failures = self._failures
        with self._lock:
            while True:
                if self._shut or self._closed():
                    raise _closed_error()
                handle = self._current
                if handle is None or handle.broken:
                    failure = self._failure
                    if self._failures != failures:
                        # A reconnection failed, up to the timeout, while this call waited for
                        # it: the call fails with it rather than wait as long again.
                        raise HypervisorConnectionError(*failure)
                    handle = self._replace(handle)
                if handle.enter():
                    return handle

    def release(self, handle: Handle) -> None:
        """Return a lease; closes a retired connection when its last call returns."""
        if handle.leave():
            _free(handle)

    def locked(self, work: Callable[[Handle], _T]) -> _T:
        """Run ``work`` on the leased connection while no other thread replaces it or its callbacks."""
        with self._lock:
            handle = self.acquire()
            try:
                return work(handle)
            finally:
                self.release(handle)

    def if_open(self, work: Callable[[Handle], object]) -> None:
        """Run ``work`` on the current connection, locked as :meth:`locked` does, unless it is lost or busy.

        Never waits: another thread may hold the lock through a whole reconnection (backoff
        sleeps, and an attempt that can last a TCP connect timeout). Skipping is safe for
        deregistering callbacks: a connection being replaced was retired, its callbacks going
        with it, and whatever the busy thread registers goes when its connection is retired.
        """
        if not self._lock.acquire(blocking=False):
            return
        try:
            handle = self._current
            if handle is None or handle.broken or not handle.enter():
                return
            try:
                work(handle)
            finally:
                self.release(handle)
        finally:
            self._lock.release()

    def close(self) -> None:
        """Retire the connection: it closes now, or when the last call in flight on it returns."""
        with self._swap:
            self._shut = True
            handle, self._current = self._current, None
        if handle is not None and handle.retire():
            _free(handle)

    def _replace(self, old: Handle | None) -> Handle:
        """Retire ``old`` and open another connection, retrying with backoff up to the timeout."""
        with self._swap:
            if self._current is old:
                self._current = None
        if old is not None and old.retire():
            _free(old)
        deadline = time.monotonic() + self._reconnect_timeout_s
        delay = 0.1
        while True:
            try:
                handle = self._new_handle(self._open_conn())
                break
            except HypervisorConnectionError as error:
                if self._shut or self._closed() or time.monotonic() + delay > deadline:
                    self._failure = error.args
                    self._failures += 1
                    raise
                time.sleep(delay)
                delay = min(delay * 2, _MAX_BACKOFF_S)
        with self._swap:
            installed = not self._shut
            if installed:
                self._current = handle
        if not installed:
            if handle.retire():
                _free(handle)
            raise _closed_error()
        # Installed first: what the hook sets off (a listener reading at once) finds it in place.
        self._reopened(handle)
        return handle

    def _new_handle(self, conn: libvirt.virConnect) -> Handle:
        return _new_handle(conn, weakref.ref(self))

    def lost(self, handle: Handle) -> None:
        """Replace ``handle``'s connection, lost, on a thread of its own if events are wanted."""
        if self._shut or self._closed() or not self._listening() or self._current is not handle:
            return
        if self._reconnecting.is_set():
            return
        self._reconnecting.set()
        threading.Thread(target=self._reconnect, name="powerdrivers-libvirt-reconnect", daemon=True).start()

    def _reconnect(self) -> None:
        try:
            # Reconnects (bounded by the reconnection timeout); the hook registers the event
            # callbacks again and sends listeners a resync.
            self.release(self.acquire())
        except HypervisorConnectionError as error:
            _LOG.warning("libvirt connection lost, and not back: %s; the next call tries again", error)
        except Exception:
            _LOG.warning("reconnecting to libvirt failed; the next call tries again", exc_info=True)
        finally:
            self._reconnecting.clear()


def _closed_error() -> HypervisorConnectionError:
    return HypervisorConnectionError("the libvirt driver has been closed")


def _new_handle(conn: libvirt.virConnect, owner: weakref.ref[Connection]) -> Handle:
    handle = Handle(conn)
    handle.owner = owner
    try:
        uri = conn.getURI()
    except libvirt.libvirtError:
        uri = ""
    # A driver inside this process cannot lose its connection, and libvirt would keep a close
    # callback registered on it (and what it holds) forever: only a remote one gets one.
    if not in_process(uri):
        try:
            conn.registerCloseCallback(_connection_lost, weakref.ref(handle))
            handle.close_callback = True
        except libvirt.libvirtError:
            _LOG.debug("this libvirt connection reports no loss")
    return handle


def _connection_lost(_conn: libvirt.virConnect, reason: int, handle_ref: weakref.ref[Handle]) -> None:
    handle = handle_ref()
    if handle is not None and not handle.broken:
        _LOG.warning(
            "libvirt connection closed (reason %s); reconnecting now if events are wanted, else later",
            reason,
        )
        handle.broken = True
        owner = handle.owner() if handle.owner is not None else None
        if owner is not None:
            owner.lost(handle)


def _free(handle: Handle) -> None:
    """Deregister a retired connection's callbacks and close it."""
    conn = handle.conn
    deregister_callbacks(handle)
    if handle.close_callback:
        try:
            conn.unregisterCloseCallback()
        except libvirt.libvirtError:
            _LOG.debug("could not unregister the close callback")
    try:
        conn.close()
    except libvirt.libvirtError:
        _LOG.debug("closing the libvirt connection failed", exc_info=True)


def credentials_callback(
    username: str | None, password: Secret | None
) -> Callable[[list[list[Any]], object], int]:
    """Return libvirt's authentication callback: it answers with the user name and password."""

    def answer(credentials: list[list[Any]], _opaque: object) -> int:
        for credential in credentials:
            if credential[0] == libvirt.VIR_CRED_AUTHNAME:
                credential[4] = username or ""
            elif credential[0] == libvirt.VIR_CRED_PASSPHRASE:
                credential[4] = password.reveal() if password else ""
        return 0

    return answer


def deregister_callbacks(handle: Handle) -> None:
    """Deregister the domain event callbacks registered on ``handle``'s connection."""
    callbacks, handle.callbacks = handle.callbacks, []
    for callback in callbacks:
        try:
            handle.conn.domainEventDeregisterAny(callback)
        except libvirt.libvirtError:
            _LOG.debug("could not deregister event callback %s", callback)


def weak_method(method: Callable[..., Any]) -> tuple[Callable[..., None], weakref.WeakMethod[Any]]:
    """Return a callback for libvirt, and its opaque argument, that calls ``method`` while its object lives.

    libvirt-python calls ``callback(conn, *arguments, opaque)``; the
    callback holds nothing but the opaque's weak reference.
    """
    return _call_weakly, weakref.WeakMethod(method)


def _call_weakly(_conn: libvirt.virConnect, *arguments: Any) -> None:
    *values, method_ref = arguments
    method = method_ref()
    if method is not None:
        method(*values)
