"""The exceptions powerdrivers raises, and nothing else escapes a driver.

Every error a driver or the loader reports is one of these, so a caller can
catch ``PowerDriversError`` once and still tell the cases apart::

    PowerDriversError
    ├── PluginError                 choosing or loading a driver failed
    │   ├── DriverNotFound          no plugin of that name; lists the installed ones
    │   ├── DriverLoadError         a plugin failed to import or is malformed
    │   │   └── DriverConflict      two distributions register the same name
    │   └── IncompatibleDriver      written for another driver-interface version
    ├── ConfigurationError          the caller's input is wrong; nothing was attempted
    │   ├── InvalidURI
    │   ├── InvalidOption
    │   └── InvalidSpec             a spawn specification is malformed
    ├── InstanceNotFound
    ├── InvalidStateTransition      the operation table forbids it in this state
    ├── UnsupportedOperation        the driver does not declare that capability
    ├── OperationFailed             the hypervisor was reached but the operation failed
    │   ├── HypervisorError         the hypervisor said no; keeps its native code
    │   └── OperationTimeout        no answer or no completion within the bound
    └── HypervisorConnectionError   the hypervisor cannot be reached
        └── AuthenticationError     it answered, but refused the credentials

Messages never contain secrets: URIs are redacted with
:func:`powerdrivers.redact_uri` before they are put into one.
"""

from __future__ import annotations

import copyreg
from collections.abc import Iterable


class PowerDriversError(Exception):
    """Base class of every error powerdrivers and its drivers raise.

    Every one pickles and unpickles whole, with its attributes, whatever
    its constructor takes (an error crossing a process pool stays itself).
    """

    def __reduce__(self) -> tuple[object, ...]:
        # Rebuilt from its message and attributes, not by calling __init__ again with the
        # message (the default), which would wrap the message or miss arguments.
        return (copyreg.__newobj__, (type(self), *self.args), self.__dict__)  # type: ignore[attr-defined]


class PluginError(PowerDriversError):
    """A driver could not be chosen or loaded."""


class DriverNotFound(PluginError):
    """No driver plugin is registered under the requested name."""

    def __init__(self, name: str, available: Iterable[str]) -> None:
        self.name = name
        self.available = tuple(sorted(available))
        listed = ", ".join(self.available) if self.available else "none"
        super().__init__(f"no driver named {name!r}; installed drivers: {listed}")


class DriverLoadError(PluginError):
    """A driver plugin exists but cannot be loaded or is malformed."""

    def __init__(self, name: str, distribution: str | None, cause: str) -> None:
        self.name = name
        self.distribution = distribution
        self.cause = cause
        origin = f" (from distribution {distribution})" if distribution else ""
        super().__init__(f"driver {name!r}{origin} cannot be loaded: {cause}")


class DriverConflict(DriverLoadError):
    """Two or more distributions register a driver under the same name."""

    def __init__(self, name: str, distributions: Iterable[str]) -> None:
        self.distributions = tuple(sorted(distributions))
        super().__init__(
            name,
            None,
            "registered by more than one distribution: " + ", ".join(self.distributions),
        )


class IncompatibleDriver(PluginError):
    """A driver was written for a driver-interface version this core does not support."""

    def __init__(self, name: str, declared: str, supported: str) -> None:
        self.name = name
        self.declared = declared
        self.supported = supported
        super().__init__(
            f"driver {name!r} implements driver interface {declared}, this powerdrivers supports {supported}"
        )


class ConfigurationError(PowerDriversError):
    """The caller's input (URI, options, specification) is invalid; nothing was attempted."""


class InvalidURI(ConfigurationError):
    """A connection URI is malformed or names a scheme the driver does not handle."""


class InvalidOption(ConfigurationError):
    """A driver option is unknown or has a value the driver cannot use."""


class InvalidSpec(ConfigurationError):
    """A specification passed to ``spawn`` is malformed."""


class InstanceNotFound(PowerDriversError):
    """No instance has the given id or name."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        super().__init__(f"no instance with id or name {ref!r}")


class InvalidStateTransition(PowerDriversError):
    """The operation is not valid from the instance's current state.

    ``state`` is the canonical power state, ``transition`` the operation
    already in flight (if that is what forbids it), ``allowed`` the states
    the operation table accepts.
    """

    def __init__(
        self,
        instance: str,
        operation: str,
        state: str,
        *,
        transition: str | None = None,
        allowed: Iterable[str] = (),
    ) -> None:
        self.instance = instance
        self.operation = operation
        self.state = state
        self.transition = transition
        self.allowed = tuple(sorted(allowed))
        current = f"{state}, {transition} in progress" if transition else state
        needs = f" (allowed from: {', '.join(self.allowed)})" if self.allowed else ""
        super().__init__(f"cannot {operation} instance {instance!r}: it is {current}{needs}")


class UnsupportedOperation(PowerDriversError):
    """The driver does not declare the capability the operation needs."""

    def __init__(self, driver: str, operation: str) -> None:
        self.driver = driver
        self.operation = operation
        super().__init__(f"the {driver} driver does not support {operation}")


class OperationFailed(PowerDriversError):
    """The hypervisor was reached, but the operation did not succeed."""


class HypervisorError(OperationFailed):
    """The hypervisor refused or failed the request.

    ``code`` and ``details`` keep the hypervisor's own error identification,
    e.g. a libvirt error number or a XenAPI failure code and its parameters.
    """

    def __init__(self, message: str, *, code: str | None = None, details: Iterable[str] = ()) -> None:
        self.code = code
        self.details = tuple(details)
        super().__init__(message)


class OperationTimeout(OperationFailed):
    """An operation or a call did not complete within its time bound."""


class HypervisorConnectionError(PowerDriversError):
    """The hypervisor cannot be reached, or the connection broke."""


class AuthenticationError(HypervisorConnectionError):
    """The hypervisor refused the credentials."""
