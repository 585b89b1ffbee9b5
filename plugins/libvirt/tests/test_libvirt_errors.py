"""Every category of libvirt error becomes its own powerdrivers exception, with libvirt's message scrubbed.

The real-daemon tests meet only some codes (no domain, invalid operation, a
dead socket); a user meets the others: a refused login must be an
AuthenticationError (exit 5), a rejected domain XML an InvalidSpec (exit 2),
and a secret in the URI libvirt echoes must not reach the message.
"""

from __future__ import annotations

import libvirt
import pytest
from powerdrivers_libvirt._errors import CATEGORIES, translate

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


def libvirt_error(code: int, message: str) -> libvirt.libvirtError:
    """A libvirtError as libvirt-python raises it: ``err`` is virGetLastError()'s tuple."""
    error = libvirt.libvirtError(message)
    error.err = (code, libvirt.VIR_FROM_DOM, message, libvirt.VIR_ERR_ERROR, None, None, None, 0, 0)
    return error


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("VIR_ERR_NO_DOMAIN", InstanceNotFound),
        ("VIR_ERR_OPERATION_UNSUPPORTED", UnsupportedOperation),
        ("VIR_ERR_NO_CONNECT", HypervisorConnectionError),
        ("VIR_ERR_RPC", HypervisorConnectionError),
        ("VIR_ERR_AUTH_FAILED", AuthenticationError),
        ("VIR_ERR_ACCESS_DENIED", AuthenticationError),
        ("VIR_ERR_OPERATION_TIMEOUT", OperationTimeout),
        ("VIR_ERR_AGENT_UNRESPONSIVE", OperationTimeout),
        ("VIR_ERR_XML_ERROR", InvalidSpec),
        ("VIR_ERR_DOM_EXIST", InvalidSpec),
        ("VIR_ERR_INVALID_ARG", ConfigurationError),
        ("VIR_ERR_INTERNAL_ERROR", HypervisorError),
    ],
)
def test_each_category_becomes_its_exception(name: str, expected: type[PowerDriversError]) -> None:
    translated = translate(
        libvirt_error(getattr(libvirt, name), "what libvirt said"), instance="web-1", operation="start"
    )
    assert type(translated) is expected
    assert isinstance(translated, PowerDriversError)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("VIR_ERR_NO_CONNECT", "libvirt connection failed: "),
        ("VIR_ERR_AUTH_FAILED", "libvirt refused the credentials or access: "),
        ("VIR_ERR_OPERATION_TIMEOUT", "libvirt timed out: "),
        ("VIR_ERR_XML_ERROR", "libvirt rejected the domain definition: "),
        ("VIR_ERR_INVALID_ARG", "libvirt rejected an argument: "),
        ("VIR_ERR_INTERNAL_ERROR", "libvirt error VIR_ERR_INTERNAL_ERROR: "),
    ],
)
def test_the_message_says_what_happened_and_keeps_libvirts_words(name: str, fragment: str) -> None:
    translated = translate(libvirt_error(getattr(libvirt, name), "  the daemon said no  "))
    assert str(translated).endswith(fragment + "the daemon said no")


def test_a_hypervisor_error_keeps_the_libvirt_code_name() -> None:
    translated = translate(libvirt_error(libvirt.VIR_ERR_OPERATION_FAILED, "boom"))
    assert isinstance(translated, HypervisorError)
    assert translated.code == "VIR_ERR_OPERATION_FAILED"


def test_an_unsupported_operation_names_the_operation_or_says_this_one() -> None:
    code = libvirt.VIR_ERR_NO_SUPPORT
    assert "reboot here (not here)" in str(translate(libvirt_error(code, "not here"), operation="reboot"))
    assert "this operation here (not here)" in str(translate(libvirt_error(code, "not here")))


def test_an_invalid_operation_is_a_transition_refused_only_when_the_instance_is_known() -> None:
    error = libvirt_error(libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running")
    refused = translate(error, instance="web-1", operation="shutdown", state="shutoff")
    assert type(refused) is InvalidStateTransition
    assert "web-1" in str(refused)
    assert "shutoff" in str(refused)
    # Without an instance and operation there is no transition to name: a hypervisor error.
    assert type(translate(error)) is HypervisorError


def test_a_missing_domain_is_named_by_the_instance_asked_for() -> None:
    translated = translate(libvirt_error(libvirt.VIR_ERR_NO_DOMAIN, "Domain not found"), instance="web-9")
    assert type(translated) is InstanceNotFound
    assert "web-9" in str(translated)


def test_a_password_libvirt_echoes_never_reaches_the_message() -> None:
    uri = "qemu+ssh://admin:hunter2@host/system"
    said = f"Cannot recv data: ssh: connect to {uri} failed; retry ?password=hunter2&x=1"
    translated = translate(libvirt_error(libvirt.VIR_ERR_SYSTEM_ERROR, said), uri=uri)
    assert type(translated) is HypervisorConnectionError
    assert "hunter2" not in str(translated)
    assert "Cannot recv data" in str(translated)


def test_an_error_without_libvirt_details_uses_its_own_message() -> None:
    # libvirt-python raises these itself ("virDomainGetInfo() failed") when libvirt set no error.
    error = libvirt.libvirtError("virDomainGetInfo() failed")
    error.err = None
    translated = translate(error)
    assert type(translated) is HypervisorError
    assert str(translated).endswith(": virDomainGetInfo() failed")


def test_a_code_this_table_does_not_know_keeps_its_number() -> None:
    unknown = max(getattr(libvirt, name) for name in CATEGORIES if hasattr(libvirt, name)) + 1000
    translated = translate(libvirt_error(unknown, "from the future"))
    assert type(translated) is HypervisorError
    assert translated.code == f"VIR_ERR_{unknown}"
