"""Translating libvirtError into the powerdrivers hierarchy, in one place, by error code."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import libvirt

from powerdrivers import (
    AuthenticationError,
    ConfigurationError,
    HypervisorConnectionError,
    HypervisorError,
    InstanceNotFound,
    InvalidSpec,
    InvalidStateTransition,
    OperationTimeout,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers_libvirt._uri import scrub

# Every VIR_ERR_* code the installed libvirt defines must appear here; a test
# enumerates them, so a libvirt release that adds one fails a test, not a user.
_NOT_FOUND = ("VIR_ERR_NO_DOMAIN", "VIR_ERR_INVALID_DOMAIN")
_INVALID_STATE = ("VIR_ERR_OPERATION_INVALID",)
_UNSUPPORTED = (
    "VIR_ERR_NO_SUPPORT", "VIR_ERR_ARGUMENT_UNSUPPORTED", "VIR_ERR_OPERATION_UNSUPPORTED",
    "VIR_ERR_CONFIG_UNSUPPORTED",
)  # fmt: skip
_CONNECTION = (
    "VIR_ERR_NO_CONNECT", "VIR_ERR_INVALID_CONN", "VIR_ERR_SYSTEM_ERROR", "VIR_ERR_RPC",
    "VIR_ERR_UNKNOWN_HOST", "VIR_ERR_GNUTLS_ERROR", "VIR_ERR_SSH", "VIR_ERR_LIBSSH",
    "VIR_ERR_NO_SERVER", "VIR_ERR_NO_CLIENT",
)  # fmt: skip
_AUTHENTICATION = (
    "VIR_ERR_AUTH_FAILED", "VIR_ERR_AUTH_CANCELLED", "VIR_ERR_AUTH_UNAVAILABLE",
    "VIR_ERR_ACCESS_DENIED", "VIR_ERR_OPERATION_DENIED",
)  # fmt: skip
_TIMEOUT = ("VIR_ERR_OPERATION_TIMEOUT", "VIR_ERR_AGENT_UNRESPONSIVE")
_BAD_SPEC = ("VIR_ERR_XML_ERROR", "VIR_ERR_XML_DETAIL", "VIR_ERR_XML_INVALID_SCHEMA", "VIR_ERR_DOM_EXIST")
_BAD_INPUT = ("VIR_ERR_INVALID_ARG", "VIR_ERR_NO_NAME")
# What remains is the hypervisor failing or refusing something: a HypervisorError
# that keeps the libvirt code name. Listed, not defaulted, so each was looked at.
_HYPERVISOR = (
    "VIR_ERR_OK", "VIR_ERR_INTERNAL_ERROR", "VIR_ERR_NO_MEMORY", "VIR_ERR_OPERATION_FAILED",
    "VIR_ERR_GET_FAILED", "VIR_ERR_POST_FAILED", "VIR_ERR_HTTP_ERROR", "VIR_ERR_SEXPR_SERIAL",
    "VIR_ERR_NO_XEN", "VIR_ERR_XEN_CALL", "VIR_ERR_OS_TYPE", "VIR_ERR_NO_KERNEL", "VIR_ERR_NO_ROOT",
    "VIR_ERR_NO_SOURCE", "VIR_ERR_NO_TARGET", "VIR_ERR_NO_OS", "VIR_ERR_NO_DEVICE",
    "VIR_ERR_NO_XENSTORE", "VIR_ERR_DRIVER_FULL", "VIR_ERR_CALL_FAILED", "VIR_ERR_OPEN_FAILED",
    "VIR_ERR_READ_FAILED", "VIR_ERR_PARSE_FAILED", "VIR_ERR_CONF_SYNTAX", "VIR_ERR_WRITE_FAILED",
    "VIR_ERR_INVALID_NETWORK", "VIR_ERR_NETWORK_EXIST", "VIR_ERR_NO_NETWORK", "VIR_ERR_INVALID_MAC",
    "VIR_ERR_INVALID_STORAGE_POOL", "VIR_ERR_INVALID_STORAGE_VOL", "VIR_ERR_NO_STORAGE_POOL",
    "VIR_ERR_NO_STORAGE_VOL", "VIR_ERR_INVALID_NODE_DEVICE", "VIR_ERR_NO_NODE_DEVICE",
    "VIR_ERR_NO_SECURITY_MODEL", "VIR_ERR_NO_INTERFACE", "VIR_ERR_INVALID_INTERFACE",
    "VIR_ERR_MULTIPLE_INTERFACES", "VIR_ERR_INVALID_NWFILTER", "VIR_ERR_NO_NWFILTER",
    "VIR_ERR_BUILD_FIREWALL", "VIR_ERR_INVALID_SECRET", "VIR_ERR_NO_SECRET",
    "VIR_ERR_MIGRATE_PERSIST_FAILED", "VIR_ERR_HOOK_SCRIPT_FAILED", "VIR_ERR_INVALID_DOMAIN_SNAPSHOT",
    "VIR_ERR_NO_DOMAIN_SNAPSHOT", "VIR_ERR_INVALID_STREAM", "VIR_ERR_STORAGE_PROBE_FAILED",
    "VIR_ERR_STORAGE_POOL_BUILT", "VIR_ERR_SNAPSHOT_REVERT_RISKY", "VIR_ERR_OPERATION_ABORTED",
    "VIR_ERR_NO_DOMAIN_METADATA", "VIR_ERR_MIGRATE_UNSAFE", "VIR_ERR_OVERFLOW",
    "VIR_ERR_BLOCK_COPY_ACTIVE", "VIR_ERR_RESOURCE_BUSY", "VIR_ERR_DBUS_SERVICE",
    "VIR_ERR_STORAGE_VOL_EXIST", "VIR_ERR_CPU_INCOMPATIBLE", "VIR_ERR_MIGRATE_FINISH_OK",
    "VIR_ERR_AGENT_UNSYNCED", "VIR_ERR_DEVICE_MISSING", "VIR_ERR_INVALID_NWFILTER_BINDING",
    "VIR_ERR_NO_NWFILTER_BINDING", "VIR_ERR_INVALID_DOMAIN_CHECKPOINT", "VIR_ERR_NO_DOMAIN_CHECKPOINT",
    "VIR_ERR_NO_DOMAIN_BACKUP", "VIR_ERR_INVALID_NETWORK_PORT", "VIR_ERR_NETWORK_PORT_EXIST",
    "VIR_ERR_NO_NETWORK_PORT", "VIR_ERR_NO_HOSTNAME", "VIR_ERR_CHECKPOINT_INCONSISTENT",
    "VIR_ERR_MULTIPLE_DOMAINS",
)  # fmt: skip
#: Names under the VIR_ERR_ prefix that are aliases or levels, not error codes.
NOT_CODES = frozenset({"VIR_ERR_NONE", "VIR_ERR_WARNING", "VIR_ERR_ERROR"})

CATEGORIES: Mapping[str, str] = MappingProxyType(
    {
        name: category
        for category, names in (
            ("not_found", _NOT_FOUND),
            ("invalid_state", _INVALID_STATE),
            ("unsupported", _UNSUPPORTED),
            ("connection", _CONNECTION),
            ("authentication", _AUTHENTICATION),
            ("timeout", _TIMEOUT),
            ("bad_spec", _BAD_SPEC),
            ("bad_input", _BAD_INPUT),
            ("hypervisor", _HYPERVISOR),
        )
        for name in names
    }
)

_NAMES_BY_CODE = {
    getattr(libvirt, name): name for name in CATEGORIES if hasattr(libvirt, name) and name not in NOT_CODES
}


def code_name(error: libvirt.libvirtError) -> str:
    """Return the VIR_ERR_* name of a libvirt error (its number if this libvirt has no name for it)."""
    code = error.get_error_code()
    return _NAMES_BY_CODE.get(code, f"VIR_ERR_{code}")


def translate(
    error: libvirt.libvirtError,
    *,
    driver: str = "libvirt",
    instance: str | None = None,
    operation: str | None = None,
    state: str | None = None,
    uri: str | None = None,
) -> PowerDriversError:
    """Return the powerdrivers exception for ``error``; the caller raises it ``from`` the original.

    libvirt's message is kept, with ``uri`` and any URI's user and password masked.
    """
    name = code_name(error)
    message = scrub((error.get_error_message() or str(error)).strip(), uri)
    category = CATEGORIES.get(name, "hypervisor")
    if category == "not_found":
        return InstanceNotFound(instance or message)
    if category == "invalid_state" and instance and operation:
        return InvalidStateTransition(instance, operation, state or "in a state libvirt refuses: " + message)
    if category == "unsupported":
        return UnsupportedOperation(driver, f"{operation or 'this operation'} here ({message})")
    if category == "connection":
        return HypervisorConnectionError(f"libvirt connection failed: {message}")
    if category == "authentication":
        return AuthenticationError(f"libvirt refused the credentials or access: {message}")
    if category == "timeout":
        return OperationTimeout(f"libvirt timed out: {message}")
    if category == "bad_spec":
        return InvalidSpec(f"libvirt rejected the domain definition: {message}")
    if category == "bad_input":
        return ConfigurationError(f"libvirt rejected an argument: {message}")
    return HypervisorError(f"libvirt error {name}: {message}", code=name)
