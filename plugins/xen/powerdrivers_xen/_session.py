"""One logged-in XenAPI session, whose calls are bounded in time and raise only powerdrivers errors."""

from __future__ import annotations

import http.client
import logging
import threading
import xmlrpc.client
from collections.abc import Callable
from typing import Any, TypeVar
from xml.parsers.expat import ExpatError

import XenAPI

from powerdrivers import HypervisorConnectionError, OperationTimeout, PowerDriversError
from powerdrivers_xen._errors import scrubber, translate_failure, translate_transport
from powerdrivers_xen._options import Settings
from powerdrivers_xen._transport import transport_for

_LOG = logging.getLogger("powerdrivers.xen")
_T = TypeVar("_T")
_ORIGINATOR = "powerdrivers"
#: What the SDK, xmlrpc, expat and http.client raise on a bad or missing answer; the SDK's own
#: parsing of a malformed envelope adds TypeError and LookupError.
_WIRE_ERRORS = (
    OSError,
    xmlrpc.client.Error,
    http.client.HTTPException,
    ExpatError,
    ValueError,
    TypeError,
    LookupError,
)


class XapiSession:
    """One logged-in XenAPI session; the SDK's sessions are not thread-safe, so calls take turns.

    ``timeout_s`` bounds each :meth:`call` as a whole, whatever number of requests it makes.
    """

    def __init__(self, settings: Settings, timeout_s: float | None = None) -> None:
        self.url = settings.url
        self._lock = threading.Lock()
        self._scrub = scrubber(settings.password)
        self._transport = transport_for(settings.url, timeout_s or settings.timeout_s, settings.verify_tls)
        self._session = XenAPI.Session(settings.url, transport=self._transport)
        username, password = settings.username, settings.password
        # The SDK logs in again by itself, once per expired session, with these credentials.
        self.call(lambda api: api.login_with_password(username, password.reveal(), "2.0", _ORIGINATOR))

    def call(
        self, work: Callable[[Any], _T], *, instance: str | None = None, operation: str | None = None
    ) -> _T:
        """Run ``work(session.xenapi)`` within the timeout; raise only powerdrivers errors."""
        with self._lock, self._transport.clock.bound():
            try:
                return work(self._session.xenapi)
            except XenAPI.Failure as failure:
                error = translate_failure(failure, instance=instance, operation=operation, scrub=self._scrub)
            except PowerDriversError:
                raise
            except _WIRE_ERRORS as wire_error:
                error = translate_transport(wire_error, self.url, scrub=self._scrub)
        # Raised here, outside the handler, so that it carries no context: the SDK's
        # exception may hold what the server echoed, the password included.
        raise error

    @property
    def handle(self) -> str:
        """The session reference; it changes when the SDK had to log in again."""
        return str(self._session.handle)

    def logout(self) -> bool:
        """End the session; return False when xapi could not be reached, so it may still live there.

        Errors are only logged, since there is nothing else to do about them. The SDK forgets its
        session even when the logout did not reach xapi; it is kept here instead, so that a
        later call to this method can end it once xapi answers again.
        """
        sdk = self._session
        kept = (sdk.handle, sdk.last_login_method, sdk.last_login_params)
        if kept[0] is None:
            return True
        try:
            self.call(lambda api: api.session.logout())
        except (HypervisorConnectionError, OperationTimeout) as error:
            _LOG.debug("xapi logout failed: %s; the session is kept to end later", error)
            with self._lock:
                sdk._session, sdk.last_login_method, sdk.last_login_params = kept
            return False
        except PowerDriversError as error:
            _LOG.debug("xapi logout failed: %s", error)
        return True
