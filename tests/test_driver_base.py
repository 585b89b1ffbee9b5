"""What the Driver base does for every driver: checks, fallbacks, validation, lifecycle."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import pytest

from powerdrivers import (
    Capability,
    ConfigurationError,
    Driver,
    DriverLoadError,
    EventKind,
    HypervisorConnectionError,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    InvalidOption,
    InvalidStateTransition,
    NativeMapping,
    NativeStateTable,
    Outcome,
    PowerState,
    UnsupportedOperation,
)
from powerdrivers._loader import validate_driver_class

TABLE = NativeStateTable(
    "mini",
    [
        NativeMapping("up", None, PowerState.RUNNING, None),
        NativeMapping("down", None, PowerState.SHUTOFF, None),
    ],
)


class MiniDriver(Driver):
    """One machine; declares soft reboot but not hard reboot, so the core composes the fallback."""

    name: ClassVar[str] = "mini"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.REBOOT}
    )
    native_states = TABLE

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._reject_unknown_options(self.name, options, {"honour_reboot"})
        super().__init__(uri, poll_interval_s=0.01)
        self.state = "up"
        self.calls: list[str] = []
        self.honour_reboot = options.get("honour_reboot", False)

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one("m")]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref not in ("m", "machine"):
            raise InstanceNotFound(ref)
        return TABLE.reading("m", "machine", self.state)

    def _start(self, instance: InstanceReading) -> None:
        self.calls.append("start")
        self.state = "up"

    def _power_off(self, instance: InstanceReading) -> None:
        self.calls.append("power_off")
        self.state = "down"

    def _request_reboot(self, instance: InstanceReading) -> None:
        self.calls.append("request_reboot")
        if self.honour_reboot:
            self._publish(EventKind.REBOOTED, self._read_one("m"))


def test_soft_reboot_without_hard_reboot_capability_falls_back_to_power_cycle() -> None:
    with MiniDriver() as driver:
        result = driver.reboot("machine", timeout=0.05)
    assert result.outcome is Outcome.FORCED
    assert driver.calls == ["request_reboot", "power_off", "start"]
    assert result.reading.power_state is PowerState.RUNNING


def test_verified_soft_reboot_is_graceful() -> None:
    with MiniDriver(honour_reboot=True) as driver:
        result = driver.reboot("m", timeout=5)
    assert result.outcome is Outcome.GRACEFUL and driver.calls == ["request_reboot"]


def test_soft_reboot_without_force_times_out_and_changes_nothing() -> None:
    with MiniDriver() as driver:
        result = driver.reboot("m", timeout=0.01, force=False)
    assert result.outcome is Outcome.TIMED_OUT and driver.calls == ["request_reboot"]


def test_undeclared_operations_are_unsupported_and_never_reach_a_primitive() -> None:
    with MiniDriver() as driver:
        for call in (
            lambda: driver.shutdown("m"),
            lambda: driver.reboot("m", hard=True),
            lambda: driver.pause("m"),
            lambda: driver.unpause("m"),
            lambda: driver.suspend("m"),
            lambda: driver.resume("m"),
            lambda: driver.spawn(InstanceSpec("new")),
            lambda: driver.delete("m"),
            lambda: driver.vcpu_stats("m"),
        ):
            with pytest.raises(UnsupportedOperation):
                call()
        assert driver.calls == []
        assert driver.supports(Capability.REBOOT) and not driver.supports(Capability.PAUSE)


def test_table_is_checked_before_the_primitive_runs() -> None:
    with MiniDriver() as driver:
        with pytest.raises(InvalidStateTransition, match="cannot start instance 'machine': it is running"):
            driver.start("m")
        assert driver.calls == []


@pytest.mark.parametrize(
    "call",
    [
        lambda d: d.shutdown("m", timeout=-1),
        lambda d: d.reboot("m", timeout=float("nan")),
        lambda d: d.vcpu_stats("m", window=0),
    ],
)
def test_bad_durations_are_configuration_errors(call: Any) -> None:
    with MiniDriver() as driver, pytest.raises(ConfigurationError):
        call(driver)


def test_closed_driver_refuses_work_and_close_is_idempotent() -> None:
    driver = MiniDriver()
    subscription = driver.subscribe(lambda event: None)
    driver.close()
    driver.close()
    with pytest.raises(HypervisorConnectionError, match="closed"):
        driver.list_instances()
    with pytest.raises(HypervisorConnectionError):
        driver.subscribe(lambda event: None)
    subscription.unsubscribe()
    assert repr(driver) == "<MiniDriver 'mini'>"


def test_unknown_options_are_named_with_the_accepted_ones() -> None:
    with pytest.raises(InvalidOption, match="no option colour, size; accepted: honour_reboot"):
        MiniDriver(colour="x", size="y")


def test_mini_driver_passes_validation() -> None:
    validate_driver_class("mini", MiniDriver)


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"capabilities": {Capability.START, Capability.POWER_OFF}}, "frozenset of powerdrivers.Capability"),
        ({"capabilities": frozenset({"start", "power_off"})}, "frozenset of powerdrivers.Capability"),
        ({"capabilities": frozenset({Capability.START})}, "required capabilities power_off"),
        ({"capabilities": frozenset({Capability.START, Capability.POWER_OFF, Capability.VCPU_STATS})},
         "declares capability vcpu_stats but does not implement _vcpu_stats"),
        ({"native_states": {"up": "running"}}, "must be a powerdrivers.NativeStateTable"),
        ({"name": ""}, "does not declare its name"),
        ({"interface_version": "one"}, "not MAJOR.MINOR"),
    ],
)  # fmt: skip
def test_validation_names_what_is_wrong(attributes: dict[str, object], message: str) -> None:
    broken = type("Broken", (MiniDriver,), attributes)
    with pytest.raises(DriverLoadError, match=message) as caught:
        validate_driver_class("broken", broken)
    assert caught.value.name == "broken"
