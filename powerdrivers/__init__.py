"""powerdrivers: one power-state model for every hypervisor.

Load a driver by name, read canonical power states with the hypervisor's
native values kept beside them, and put instances into the state you want::

    import powerdrivers

    with powerdrivers.load_driver("libvirt", "qemu:///system") as driver:
        for instance in driver.list_instances():
            print(instance.name, instance.power_state, instance.transition)
        result = driver.shutdown("web-1", timeout=30)
        print(result.outcome)  # graceful, forced, already_off or timed_out
"""

from typing import TYPE_CHECKING, Any

from powerdrivers._capabilities import REQUIRED_CAPABILITIES, Capability
from powerdrivers._driver import Driver
from powerdrivers._event_kinds import EventKind
from powerdrivers._events import Event, Listener, Subscription
from powerdrivers._exceptions import (
    AuthenticationError,
    ConfigurationError,
    DriverConflict,
    DriverLoadError,
    DriverNotFound,
    HypervisorConnectionError,
    HypervisorError,
    IncompatibleDriver,
    InstanceNotFound,
    InvalidOption,
    InvalidSpec,
    InvalidStateTransition,
    InvalidURI,
    OperationFailed,
    OperationTimeout,
    PluginError,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers._loader import NAMESPACE, DriverInfo, available_drivers, load_driver, load_driver_class
from powerdrivers._native import NO_REASON, NativeMapping, NativeStateTable
from powerdrivers._operations import OPERATION_TABLE, Operation, OperationRule, check_operation, rule_for
from powerdrivers._outcomes import OperationResult, Outcome
from powerdrivers._reading import InstanceReading
from powerdrivers._reporting import EventReporter
from powerdrivers._secrets import Secret, redact_uri
from powerdrivers._spec import InstanceSpec
from powerdrivers._states import PowerState, Transition
from powerdrivers._values import (
    MAX_COUNT,
    MAX_DURATION_S,
    parse_boolean,
    parse_count,
    parse_duration,
    parse_number,
)
from powerdrivers._vcpu import InstanceVcpuCounters, InstanceVcpuStats, VcpuCounters, VcpuStats, stats_between
from powerdrivers._version import INTERFACE_VERSION, SUPPORTED_INTERFACE_RANGE

if TYPE_CHECKING:
    from powerdrivers._sampler import VcpuSampler

__version__ = "0.1.0"

__all__ = [
    "INTERFACE_VERSION",
    "MAX_COUNT",
    "MAX_DURATION_S",
    "NAMESPACE",
    "NO_REASON",
    "OPERATION_TABLE",
    "REQUIRED_CAPABILITIES",
    "SUPPORTED_INTERFACE_RANGE",
    "AuthenticationError",
    "Capability",
    "ConfigurationError",
    "Driver",
    "DriverConflict",
    "DriverInfo",
    "DriverLoadError",
    "DriverNotFound",
    "Event",
    "EventKind",
    "EventReporter",
    "HypervisorConnectionError",
    "HypervisorError",
    "IncompatibleDriver",
    "InstanceNotFound",
    "InstanceReading",
    "InstanceSpec",
    "InstanceVcpuCounters",
    "InstanceVcpuStats",
    "InvalidOption",
    "InvalidSpec",
    "InvalidStateTransition",
    "InvalidURI",
    "Listener",
    "NativeMapping",
    "NativeStateTable",
    "Operation",
    "OperationFailed",
    "OperationResult",
    "OperationRule",
    "OperationTimeout",
    "Outcome",
    "PluginError",
    "PowerDriversError",
    "PowerState",
    "Secret",
    "Subscription",
    "Transition",
    "UnsupportedOperation",
    "VcpuCounters",
    "VcpuSampler",
    "VcpuStats",
    "available_drivers",
    "check_operation",
    "load_driver",
    "load_driver_class",
    "parse_boolean",
    "parse_count",
    "parse_duration",
    "parse_number",
    "redact_uri",
    "rule_for",
    "stats_between",
]

# Errors show in tracebacks by the name users import and catch them by, powerdrivers.X (as httpx
# does). Only errors: a class's string annotations resolve in its __module__, so moving the rest
# would break typing.get_type_hints and Sphinx's reading of attribute comments.
for _name in __all__:
    _value = globals().get(_name)  # None for VcpuSampler, not imported yet
    if isinstance(_value, type) and issubclass(_value, PowerDriversError):
        _value.__module__ = __name__
del _name, _value


def __getattr__(name: str) -> Any:
    """Import :class:`VcpuSampler` on first use, not with the package.

    Only some programs sample, and loading a driver in a fresh process is held to 1.5 times
    ``import stevedore`` (benchmark row 4).
    Raises :class:`AttributeError` for any other name the package does not have.
    """
    if name == "VcpuSampler":
        from powerdrivers._sampler import VcpuSampler

        globals()[name] = VcpuSampler
        return VcpuSampler
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
