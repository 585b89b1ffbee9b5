"""Sessions: password logins, logout, validation, and the expiry a test can force."""

from __future__ import annotations

import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from ._errors import SESSION_AUTHENTICATION_FAILED, SESSION_INVALID, XapiError
from ._wire import new_ref


@dataclass(frozen=True)
class SessionInfo:
    """Who logged in, from which client, and when."""

    username: str
    originator: str
    created: float


class SessionStore:
    """The live sessions and the one username/password pair that may open them."""

    def __init__(self, username: str, password: str, on_invalidate: Callable[[], None]) -> None:
        self._lock = threading.Lock()
        self._username = username
        self._password = password
        self._sessions: dict[str, SessionInfo] = {}
        self._on_invalidate = on_invalidate

    def set_credentials(self, username: str, password: str) -> None:
        """Accept only this pair from now on; existing sessions stay valid."""
        with self._lock:
            self._username, self._password = username, password

    def check_credentials(self, username: str, password: str) -> bool:
        """Whether this username/password pair is the one accepted (HTTP Basic authentication)."""
        with self._lock:
            user_ok = hmac.compare_digest(username.encode(), self._username.encode())
            password_ok = hmac.compare_digest(password.encode(), self._password.encode())
        return user_ok and password_ok

    def login(self, username: str, password: str, originator: str = "") -> str:
        """Open a session, or fail with SESSION_AUTHENTICATION_FAILED [username, message]."""
        if not self.check_credentials(username, password):
            raise XapiError(SESSION_AUTHENTICATION_FAILED, username, "Authentication failure")
        with self._lock:
            ref = new_ref()
            self._sessions[ref] = SessionInfo(username, originator, time.time())
            return ref

    def logout(self, ref: str) -> None:
        """Close a session; waiters on it wake and fail."""
        self.validate(ref)
        with self._lock:
            self._sessions.pop(ref, None)
        self._on_invalidate()

    def is_valid(self, ref: object) -> bool:
        """Whether ``ref`` names a live session."""
        with self._lock:
            return isinstance(ref, str) and ref in self._sessions

    def validate(self, ref: object) -> str:
        """Return ``ref`` if it names a live session; raise SESSION_INVALID [ref] otherwise."""
        if not self.is_valid(ref):
            raise XapiError(SESSION_INVALID, ref if isinstance(ref, str) else "")
        assert isinstance(ref, str)
        return ref

    def expire_all(self) -> None:
        """Invalidate every session at once, as a timeout sweep or a toolstack restart does."""
        with self._lock:
            self._sessions.clear()
        self._on_invalidate()

    @property
    def count(self) -> int:
        """How many sessions are open."""
        with self._lock:
            return len(self._sessions)
