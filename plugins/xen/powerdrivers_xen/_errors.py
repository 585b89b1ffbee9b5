"""Translating XenAPI failures and transport errors into the powerdrivers hierarchy, in one place."""

from __future__ import annotations

import html
import http.client
import socket
import ssl
import xmlrpc.client
from collections.abc import Callable, Mapping
from types import MappingProxyType
from urllib.parse import quote, quote_plus
from xml.parsers.expat import ExpatError

import XenAPI

from powerdrivers import (
    AuthenticationError,
    HypervisorConnectionError,
    HypervisorError,
    InstanceNotFound,
    InvalidStateTransition,
    OperationTimeout,
    PowerDriversError,
    Secret,
)
from powerdrivers_xen._states import NATIVE_STATES

#: XenAPI failure code -> category. Everything else is a HypervisorError keeping code and parameters.
CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        "VM_BAD_POWER_STATE": "invalid_state",
        "OTHER_OPERATION_IN_PROGRESS": "invalid_state",
        "OPERATION_NOT_ALLOWED": "invalid_state",
        "HANDLE_INVALID": "not_found",
        "UUID_INVALID": "not_found",
        "VM_IS_TEMPLATE": "not_an_instance",
        "VM_IS_SNAPSHOT": "not_an_instance",
        "SESSION_AUTHENTICATION_FAILED": "authentication",
        "SESSION_INVALID": "connection",
        "HOST_IS_SLAVE": "connection",
        "VM_SHUTDOWN_TIMEOUT": "timeout",
        "VM_FAILED_SHUTDOWN_ACKNOWLEDGMENT": "timeout",
    }
)


Scrub = Callable[[str], str]
_MASK = "********"


def scrubber(secret: Secret) -> Scrub:
    """Return a function masking ``secret`` in a text, as written or as a URL or XML would carry it.

    Every text from the server or the SDK passes through it before it is put in a message: a
    server (or a proxy before it) may echo what it was sent, the password included.
    """
    value = secret.reveal()
    if not value:
        return _unchanged
    forms = {value, quote(value, safe=""), quote_plus(value, safe=""), html.escape(value), repr(value)[1:-1]}
    ordered = sorted(forms, key=len, reverse=True)

    def scrub(text: str) -> str:
        for form in ordered:
            text = text.replace(form, _MASK)
        return text

    return scrub


def _unchanged(text: str) -> str:
    return text


def translate_failure(
    failure: XenAPI.Failure,
    *,
    instance: str | None = None,
    operation: str | None = None,
    scrub: Scrub = _unchanged,
) -> PowerDriversError:
    """Return the powerdrivers exception for a XenAPI ``Failure``; ``scrub`` cleans the server's texts."""
    details = [scrub(str(item)) for item in _items(failure.details)] or ["UNKNOWN"]
    code, params = details[0], details[1:]
    category = CATEGORIES.get(code, "hypervisor")
    subject = instance or (params[0] if params else "?")
    if category == "invalid_state":
        if code == "VM_BAD_POWER_STATE" and len(params) >= 3:
            allowed = [state.strip() for state in params[1].split(",") if state.strip()]
            return InvalidStateTransition(
                subject, operation or "this operation", _canonical(params[2]), allowed=allowed
            )
        return InvalidStateTransition(
            subject, operation or "this operation", f"refused by xapi: {code} {params}"
        )
    if category == "not_found":
        return InstanceNotFound(instance or (params[1] if len(params) > 1 else subject))
    if category == "not_an_instance":
        return InstanceNotFound(f"{subject} (a {code.removeprefix('VM_IS_').lower()}, not an instance)")
    if category == "authentication":
        return AuthenticationError("xapi refused the credentials (SESSION_AUTHENTICATION_FAILED)")
    if category == "connection":
        return HypervisorConnectionError(f"xapi session unusable: {code}")
    if category == "timeout":
        return OperationTimeout(f"xapi gave up waiting for the guest: {code} {params}")
    return HypervisorError(f"xapi error {code} {params}", code=code, details=params)


def _canonical(xen_state: str) -> str:
    return NATIVE_STATES.lookup(xen_state.strip().capitalize())[0].value


def _items(details: object) -> list[object]:
    # A malformed envelope may carry anything as its ErrorDescription.
    return list(details) if isinstance(details, (list, tuple)) else [details]


def translate_transport(error: BaseException, url: str, *, scrub: Scrub = _unchanged) -> PowerDriversError:
    """Return the powerdrivers exception for a transport-level failure talking to ``url``.

    ``url`` is the driver's own normalised URL, which holds no credentials; the error's texts
    come from the server or the SDK and pass through ``scrub``.
    """
    if isinstance(error, (TimeoutError, socket.timeout)):
        return OperationTimeout(f"xapi at {url} did not answer in time")
    if isinstance(error, ssl.SSLError):
        return HypervisorConnectionError(
            f"TLS with xapi at {url} failed: {scrub(str(error.reason or error))}"
        )
    if isinstance(error, xmlrpc.client.ProtocolError):
        # Not str(error): it holds the URL as the SDK was given it.
        return HypervisorConnectionError(
            f"xapi at {url} answered HTTP {error.errcode} {scrub(str(error.errmsg))}"
        )
    if isinstance(error, xmlrpc.client.Fault):
        if error.faultCode == 401:
            return HypervisorConnectionError(f"xapi at {url} refused the session (logged out)")
        return HypervisorError(
            f"xapi fault {error.faultCode}: {scrub(str(error.faultString))}", code=str(error.faultCode)
        )
    if isinstance(error, OSError):
        return HypervisorConnectionError(f"cannot reach xapi at {url}: {scrub(str(error))}")
    if isinstance(error, http.client.HTTPException):
        return HypervisorConnectionError(f"xapi at {url} answered broken HTTP: {scrub(str(error))}")
    if isinstance(error, ExpatError):
        return HypervisorError(f"xapi at {url} answered malformed XML-RPC: {scrub(str(error))}")
    return HypervisorError(f"unexpected {type(error).__name__} talking to xapi at {url}: {scrub(str(error))}")
