"""A driver constructed directly that declares a capability but lacks its primitive refuses cleanly.

The loader refuses such a class (a declared capability needs its primitive);
a driver built without the loader, as in its author's own tests, meets the
Driver base's default primitives instead: each raises UnsupportedOperation
naming the driver and the operation, and the instance is left as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import pytest

from powerdrivers import (
    Capability,
    Driver,
    DriverLoadError,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    NativeMapping,
    NativeStateTable,
    PowerState,
    UnsupportedOperation,
)
from powerdrivers._loader import validate_driver_class

TABLE = NativeStateTable(
    "bare",
    [
        NativeMapping("up", None, PowerState.RUNNING, None),
        NativeMapping("down", None, PowerState.SHUTOFF, None),
        NativeMapping("frozen", None, PowerState.PAUSED, None),
        NativeMapping("saved", None, PowerState.SUSPENDED, None),
    ],
)


class BareDriver(Driver):
    """Declares every capability but native events; implements only what every driver must."""

    name: ClassVar[str] = "bare"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.NATIVE_EVENTS}
    native_states = TABLE

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri, poll_interval_s=0.01)
        self.state = "up"

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one("m")]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref not in ("m", "machine"):
            raise InstanceNotFound(ref)
        return TABLE.reading("m", "machine", self.state)

    def _start(self, instance: InstanceReading) -> None:
        self.state = "up"

    def _power_off(self, instance: InstanceReading) -> None:
        self.state = "down"


def test_the_loader_refuses_a_declared_capability_without_its_primitive() -> None:
    with pytest.raises(DriverLoadError, match=r"declares capability \w+ but does not implement _\w+"):
        validate_driver_class("bare", BareDriver)


@pytest.mark.parametrize(
    ("state", "operation", "call"),
    [
        ("up", "shutdown", lambda driver: driver.shutdown("m", timeout=0.05, force=False)),
        ("up", "reboot", lambda driver: driver.reboot("m", timeout=0.05)),
        ("up", "hard_reboot", lambda driver: driver.reboot("m", hard=True)),
        ("up", "pause", lambda driver: driver.pause("m")),
        ("frozen", "unpause", lambda driver: driver.unpause("m")),
        ("up", "suspend", lambda driver: driver.suspend("m")),
        ("saved", "resume", lambda driver: driver.resume("m")),
        ("up", "delete", lambda driver: driver.delete("m")),
        ("up", "vcpu_stats", lambda driver: driver.vcpu_stats("m", window=0.01)),
        ("down", "spawn", lambda driver: driver.spawn(InstanceSpec("new-1"))),
    ],
)
def test_a_missing_primitive_is_an_unsupported_operation_and_changes_nothing(
    state: str, operation: str, call: Callable[[BareDriver], object]
) -> None:
    with BareDriver() as driver:
        driver.state = state
        with pytest.raises(UnsupportedOperation) as raised:
            call(driver)
        assert str(raised.value) == f"the bare driver does not support {operation}"
        assert driver.state == state
        assert driver.get_instance("m").transition is None


class BareEventsDriver(BareDriver):
    """Declares native events too, without their source."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability)


def test_a_missing_native_event_source_is_an_unsupported_operation() -> None:
    with BareEventsDriver() as driver, pytest.raises(UnsupportedOperation) as raised:
        driver.subscribe(lambda event: None)
    assert str(raised.value) == "the bare driver does not support native_events"
