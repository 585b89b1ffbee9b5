"""Translating XenAPI failures and transport errors into the powerdrivers hierarchy, in one place."""

from __future__ import annotations

import http.client
import socket
import ssl
import xmlrpc.client
from collections.abc import Mapping
from types import MappingProxyType

import XenAPI

from powerdrivers import (
    AuthenticationError,
    HypervisorConnectionError,
    HypervisorError,
    InstanceNotFound,
    InvalidStateTransition,
    OperationTimeout,
    PowerDriversError,
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


def translate_failure(
    failure: XenAPI.Failure,
    *,
    instance: str | None = None,
    operation: str | None = None,
) -> PowerDriversError:
    """Return the powerdrivers exception for a XenAPI ``Failure``."""
    details = [str(item) for item in failure.details] or ["UNKNOWN"]
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


def translate_transport(error: BaseException, url: str) -> PowerDriversError:
    """Return the powerdrivers exception for a transport-level failure talking to ``url``."""
    if isinstance(error, (TimeoutError, socket.timeout)):
        return OperationTimeout(f"xapi at {url} did not answer in time")
    if isinstance(error, ssl.SSLError):
        return HypervisorConnectionError(f"TLS with xapi at {url} failed: {error.reason or error}")
    if isinstance(error, xmlrpc.client.ProtocolError):
        return HypervisorConnectionError(f"xapi at {url} answered HTTP {error.errcode} {error.errmsg}")
    if isinstance(error, xmlrpc.client.Fault):
        if error.faultCode == 401:
            return HypervisorConnectionError(f"xapi at {url} refused the session (logged out)")
        return HypervisorError(
            f"xapi fault {error.faultCode}: {error.faultString}", code=str(error.faultCode)
        )
    if isinstance(error, (OSError, http.client.HTTPException)):
        return HypervisorConnectionError(f"cannot reach xapi at {url}: {error}")
    return HypervisorError(f"unexpected {type(error).__name__} talking to xapi at {url}: {error}")
