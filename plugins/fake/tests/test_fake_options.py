"""Options and the injection controls: latency, failures, seeds, and their validation."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from fake_helpers import DriverFactory, EventLog, snapshot
from powerdrivers_fake import ERRORS, FakeDriver, instance_id

from powerdrivers import (
    AuthenticationError,
    ConfigurationError,
    HypervisorConnectionError,
    HypervisorError,
    InstanceSpec,
    InvalidOption,
    Operation,
    OperationTimeout,
    Outcome,
    PowerDriversError,
    PowerState,
    Secret,
)

DEMO = {"web-1", "web-2", "legacy-db", "cache-1", "batch-7"}


def _elapsed(call: Callable[[], object]) -> float:
    began = time.monotonic()
    call()
    return time.monotonic() - began


# -- latency ------------------------------------------------------------------


@pytest.mark.parametrize("latency", ["0.05", 0.05])
def test_fixed_latency_delays_every_hypervisor_call(make_driver: DriverFactory, latency: object) -> None:
    driver = make_driver(latency=latency)
    assert _elapsed(driver.list_instances) >= 0.05
    assert _elapsed(lambda: driver.get_instance("batch-7")) >= 0.05
    # start = the core's read + the start call, which returns the new reading itself
    assert _elapsed(lambda: driver.start("batch-7")) >= 0.10


def test_latency_range_delays_by_at_least_its_lower_bound(make_driver: DriverFactory) -> None:
    driver = make_driver(latency="0.03-0.06")
    for _ in range(3):
        assert _elapsed(driver.list_instances) >= 0.03


def test_set_latency_changes_the_delay(demo_driver: FakeDriver) -> None:
    demo_driver.set_latency(0.05)
    assert _elapsed(demo_driver.list_instances) >= 0.05
    demo_driver.set_latency(0.02, 0.04)
    assert _elapsed(demo_driver.list_instances) >= 0.02


# -- failures -----------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_fail_next_fails_exactly_one_operation_and_changes_nothing(
    make_driver: DriverFactory, event_log: EventLog, name: str
) -> None:
    driver = make_driver(fail_next=name)
    before = driver.get_instance("batch-7")  # reads are not operations: unaffected
    driver.subscribe(event_log)
    with pytest.raises(ERRORS[name]) as raised:
        driver.start("batch-7")
    assert type(raised.value) is ERRORS[name]
    assert "injected" in str(raised.value)
    assert snapshot(driver.get_instance("batch-7")) == snapshot(before)
    assert event_log.events == []
    assert driver.start("batch-7").power_state is PowerState.RUNNING
    assert driver.pause("web-1").power_state is PowerState.PAUSED


def test_fail_next_hypervisor_error_keeps_a_native_code(make_driver: DriverFactory) -> None:
    driver = make_driver(fail_next="hypervisor")
    with pytest.raises(HypervisorError) as raised:
        driver.spawn(InstanceSpec("never"))
    assert raised.value.code == "injected"
    assert "never" not in {r.name for r in driver.list_instances()}
    assert driver.spawn(InstanceSpec("never")).power_state is PowerState.RUNNING


def test_fail_operation_fails_every_call_of_it_only(make_driver: DriverFactory, event_log: EventLog) -> None:
    driver = make_driver(fail_start="timeout")
    driver.subscribe(event_log)
    for _ in range(3):
        with pytest.raises(OperationTimeout):
            driver.start("batch-7")
    assert driver.get_instance("batch-7").power_state is PowerState.SHUTOFF
    assert event_log.events == []
    assert driver.power_off("web-1").power_state is PowerState.SHUTOFF
    with pytest.raises(OperationTimeout):
        driver.start("web-1")


def test_fail_read_fails_listing_and_reading(make_driver: DriverFactory) -> None:
    driver = make_driver(fail_read="connection")
    with pytest.raises(HypervisorConnectionError):
        driver.list_instances()
    with pytest.raises(HypervisorConnectionError):
        driver.get_instance("web-1")
    with pytest.raises(HypervisorConnectionError):
        driver.pause("web-1")
    driver.clear_failures()
    assert driver.get_instance("web-1").power_state is PowerState.RUNNING


def test_fail_vcpu_stats(make_driver: DriverFactory) -> None:
    driver = make_driver(fail_vcpu_stats="hypervisor")
    with pytest.raises(HypervisorError):
        driver.vcpu_stats("web-1", window=0.01)
    assert driver.pause("web-1").power_state is PowerState.PAUSED


def test_fail_shutdown_fails_the_graceful_request(make_driver: DriverFactory) -> None:
    driver = make_driver(fail_shutdown="hypervisor", guest_delay=0.01)
    with pytest.raises(HypervisorError):
        driver.shutdown("web-1", timeout=5)
    reading = driver.get_instance("web-1")
    assert (reading.power_state, reading.transition) == (PowerState.RUNNING, None)


@pytest.mark.parametrize("name", sorted(ERRORS))
def test_fail_connect_fails_at_load(make_driver: DriverFactory, name: str) -> None:
    with pytest.raises(ERRORS[name]) as raised:
        make_driver(fail_connect=name)
    assert type(raised.value) is ERRORS[name]


def test_fail_connect_authentication_is_an_authentication_error(make_driver: DriverFactory) -> None:
    with pytest.raises(AuthenticationError):
        make_driver(fail_connect="authentication")
    assert issubclass(AuthenticationError, HypervisorConnectionError)


def test_inject_failure_control(demo_driver: FakeDriver) -> None:
    demo_driver.inject_failure(HypervisorError("boom", code="x"))
    with pytest.raises(HypervisorError, match="boom"):
        demo_driver.pause("web-1")
    assert demo_driver.pause("web-1").power_state is PowerState.PAUSED

    demo_driver.inject_failure(OperationTimeout("slow"), Operation.UNPAUSE, once=False)
    for _ in range(2):
        with pytest.raises(OperationTimeout):
            demo_driver.unpause("web-1")
    assert demo_driver.start("batch-7").power_state is PowerState.RUNNING  # other operations still work
    demo_driver.clear_failures()
    assert demo_driver.unpause("web-1").power_state is PowerState.RUNNING

    demo_driver.inject_failure(HypervisorConnectionError("gone"), "read")
    with pytest.raises(HypervisorConnectionError):
        demo_driver.list_instances()
    assert len(demo_driver.list_instances()) == len(DEMO)


# -- seeds --------------------------------------------------------------------


def test_the_demo_seed(make_driver: DriverFactory) -> None:
    readings = {r.name: r for r in make_driver().list_instances()}
    assert set(readings) == DEMO
    assert {name: r.id for name, r in readings.items()} == {name: instance_id(name) for name in DEMO}
    assert readings["cache-1"].power_state is PowerState.PAUSED
    assert readings["batch-7"].power_state is PowerState.SHUTOFF
    assert readings["web-1"].power_state is PowerState.RUNNING


def test_empty_seed_with_generated_instances(make_driver: DriverFactory) -> None:
    assert make_driver(seed="empty").list_instances() == []
    readings = {r.name: r for r in make_driver(seed="empty", instances="3").list_instances()}
    assert {name: r.power_state for name, r in readings.items()} == {
        "vm-00000": PowerState.RUNNING,
        "vm-00001": PowerState.SHUTOFF,
        "vm-00002": PowerState.RUNNING,
    }
    assert len(make_driver(instances=4).list_instances()) == len(DEMO) + 4


@pytest.mark.parametrize("names", ["web-1,web-2", ["web-1", "web-2"], frozenset({"web-1", "web-2"})])
def test_name_list_options_take_strings_or_collections(make_driver: DriverFactory, names: object) -> None:
    driver = make_driver(uncooperative=names, guest_delay=0.01)
    for name in ("web-1", "web-2"):
        assert driver.shutdown(name, timeout=0.05, retry_interval=0.05).outcome is Outcome.FORCED


def test_credentials_are_accepted_and_ignored(make_driver: DriverFactory) -> None:
    driver = make_driver(username="admin", password=Secret("hunter2"))
    assert len(driver.list_instances()) == len(DEMO)
    assert "hunter2" not in repr(driver)


# -- validation ---------------------------------------------------------------


def test_an_unknown_option_is_named(make_driver: DriverFactory) -> None:
    with pytest.raises(InvalidOption) as raised:
        make_driver(latencyy="1", guest_delay="0.1")
    assert "latencyy" in str(raised.value)
    assert "latency" in str(raised.value).split("accepted")[1]


def test_fail_of_an_unknown_target_is_an_unknown_option(make_driver: DriverFactory) -> None:
    with pytest.raises(InvalidOption, match="fail_explode"):
        make_driver(fail_explode="hypervisor")


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("latency", "abc"),
        ("latency", "-1"),
        ("latency", "0.2-0.1"),
        ("latency", "nan"),
        ("fail_next", "bogus"),
        ("fail_start", "nope"),
        ("fail_read", ""),
        ("fail_connect", "x"),
        ("guest_delay", "-1"),
        ("guest_delay", "soon"),
        ("crash_after", "-0.5"),
        ("poll_interval", "0"),
        ("instances", "-1"),
        ("instances", "two"),
        ("instances", "1.5"),
        ("seed", "full"),
        # Hardening issue, item 9: "-o latency=99999999999 crashes with unexpected OverflowError".
        ("latency", "99999999999"),
        ("latency", "60.5"),
        ("latency", "0.01-99999999999"),
        ("latency", "1e400"),
        ("crash_after", "1e400"),
        ("crash_after", "99999999999"),
        ("guest_delay", "99999999999"),
        ("guest_delay", "3601"),
        ("poll_interval", "99999999999"),
        ("poll_interval", "nan"),
        # Item 10: "-o instances=99999999999 never returns (memory climbs)".
        ("instances", "99999999999"),
        ("instances", "100001"),
        ("instances", "1e3"),
    ],
)
def test_bad_option_values_are_invalid_option(make_driver: DriverFactory, option: str, value: str) -> None:
    with pytest.raises(InvalidOption) as raised:
        make_driver(**{option: value})
    assert option in str(raised.value)


@pytest.mark.parametrize("option", ["latency", "guest_delay", "crash_after", "poll_interval"])
def test_infinite_durations_are_invalid_option(make_driver: DriverFactory, option: str) -> None:
    with pytest.raises(InvalidOption):
        make_driver(**{option: "inf"})


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("latency", 99999999999),
        ("latency", 10**400),
        ("guest_delay", float("inf")),
        ("crash_after", 1e308),
        ("poll_interval", -0.5),
        ("instances", 10**12),
        ("instances", True),
        ("instances", 2.0),
    ],
)
def test_bad_typed_option_values_are_invalid_option(
    make_driver: DriverFactory, option: str, value: object
) -> None:
    options: dict[str, Any] = {option: value}
    with pytest.raises(InvalidOption) as raised:
        make_driver(**options)
    assert option in str(raised.value)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("latency", "60"),
        ("latency", "0-60"),
        ("latency", "1e-05"),
        ("guest_delay", "3600"),
        ("instances", "0"),
    ],
)
def test_option_values_at_their_bounds_are_accepted(
    make_driver: DriverFactory, option: str, value: str
) -> None:
    make_driver(seed="empty", **{option: value})


@pytest.mark.parametrize(("low", "high"), [(61.0, None), (float("nan"), None), (0.2, 0.1), (-1.0, 0.5)])
def test_set_latency_rejects_bad_bounds_and_keeps_the_latency(
    demo_driver: FakeDriver, low: float, high: float | None
) -> None:
    demo_driver.set_latency(0.0)
    with pytest.raises(InvalidOption):
        demo_driver.set_latency(low, high)
    assert _elapsed(demo_driver.list_instances) < 1.0


def test_latency_inf_never_escapes_the_error_hierarchy(make_driver: DriverFactory) -> None:
    try:
        driver = make_driver(latency="inf")
    except InvalidOption:
        return
    with pytest.raises(PowerDriversError):
        driver.list_instances()


@pytest.mark.parametrize(
    "option", ["latency=bogus", "latency=99999999999", "instances=99999999999", "guest_delay=1e400"]
)
def test_the_cli_reports_a_bad_option_as_usage(option: str) -> None:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("POWERDRIVERS_")}
    completed = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "fake", "-o", option, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        check=False,
    )
    assert completed.returncode == 2
    assert option.partition("=")[0] in completed.stderr
    assert "unexpected" not in completed.stderr


@pytest.mark.parametrize("ref", [["web-1"], 42, "web\x00-1"], ids=repr)
def test_the_test_controls_refuse_what_cannot_name_an_instance(ref: object) -> None:
    with FakeDriver() as driver:
        with pytest.raises(ConfigurationError):
            driver.crash(ref)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            driver.set_cooperative(ref, True)  # type: ignore[arg-type]


def test_set_cooperative_takes_a_flag_not_a_truthy_word() -> None:
    with (
        FakeDriver() as driver,
        pytest.raises(ConfigurationError, match="cooperative must be True or False"),
    ):
        driver.set_cooperative("web-1", "no")  # type: ignore[arg-type]
