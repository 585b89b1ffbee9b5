"""Hostile input to the Python API: only typed errors, and nothing changes."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from powerdrivers import (
    ConfigurationError,
    Driver,
    InstanceSpec,
    InvalidSpec,
    PowerDriversError,
    load_driver,
    parse_boolean,
    parse_count,
    parse_duration,
    parse_number,
)

BAD_REFS: list[object] = [42, None, b"web-1", "", "web\x00-1", "web-\udcff", "x" * 5000, ["web-1"]]
BAD_DURATIONS: list[object] = ["5", None, math.nan, math.inf, -math.inf, -1, 1e309, 10**400, True, 1e-320]


@pytest.fixture
def driver() -> Iterator[Driver]:
    with load_driver("fake") as loaded:
        yield loaded


def _states(driver: Driver) -> list[tuple[str, str]]:
    return sorted((reading.name, reading.power_state.value) for reading in driver.list_instances())


def _methods(driver: Driver) -> list[Callable[[Any], object]]:
    return [
        driver.get_instance,
        driver.start,
        driver.power_off,
        driver.pause,
        driver.unpause,
        driver.suspend,
        driver.resume,
        driver.delete,
        driver.shutdown,
        driver.reboot,
        driver.vcpu_stats,
    ]


@pytest.mark.parametrize("ref", BAD_REFS, ids=repr)
def test_a_ref_that_cannot_name_an_instance_is_a_configuration_error(driver: Driver, ref: object) -> None:
    before = _states(driver)
    for method in _methods(driver):
        with pytest.raises(ConfigurationError):
            method(ref)
    assert _states(driver) == before


@pytest.mark.parametrize("value", BAD_DURATIONS, ids=repr)
def test_a_bad_duration_is_refused_before_anything_happens(driver: Driver, value: Any) -> None:
    before = _states(driver)
    calls: list[Callable[[], object]] = [
        lambda: driver.shutdown("web-1", timeout=value),
        lambda: driver.shutdown("web-1", retry_interval=value),
        lambda: driver.reboot("web-1", timeout=value),
        lambda: driver.reboot("web-1", hard=True, timeout=value),
        lambda: driver.vcpu_stats("web-1", window=value),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError):
            call()
    assert _states(driver) == before


@pytest.mark.parametrize("value", ["yes", 1, None, "False"], ids=repr)
def test_flags_must_be_booleans(driver: Driver, value: Any) -> None:
    before = _states(driver)
    calls: list[Callable[[], object]] = [
        lambda: driver.reboot("web-1", hard=value),
        lambda: driver.reboot("web-1", force=value),
        lambda: driver.shutdown("web-1", force=value),
    ]
    for call in calls:
        with pytest.raises(ConfigurationError, match="must be True or False"):
            call()
    assert _states(driver) == before


def test_spawn_and_subscribe_refuse_what_they_cannot_use(driver: Driver) -> None:
    with pytest.raises(ConfigurationError, match="InstanceSpec"):
        driver.spawn({"name": "x"})  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="listener"):
        driver.subscribe(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"vcpus": 10**12}, "vcpus must be from 1 to 4096"),
        ({"vcpus": True}, "vcpus must be a whole number"),
        ({"vcpus": "lots"}, "vcpus must be a whole number, not 'lots'"),
        ({"vcpus": 2.5}, "vcpus must be a whole number"),
        ({"memory_mib": 10**12}, "memory_mib must be from 16 to 16777216"),
        ({"memory_mib": "64x"}, "memory_mib must be a whole number"),
        ({"name": 42}, "instance name 42 must be"),
        ({"kernel": 42}, "kernel must be a path"),
        ({"kernel": "k", "cmdline": "a\x00b"}, "cmdline must be text"),
        ({"metadata": {"a": 1}}, "metadata maps text keys to text values"),
    ],
)
def test_spec_values_are_typed_and_bounded(changes: dict[str, Any], message: str) -> None:
    fields: dict[str, Any] = {"name": "vm", **changes}
    with pytest.raises(InvalidSpec, match=message):
        InstanceSpec(**fields)


def test_spec_takes_counts_as_text_as_a_command_line_gives_them() -> None:
    spec = InstanceSpec("vm", vcpus=" 2", memory_mib="64")  # type: ignore[arg-type]
    assert (spec.vcpus, spec.memory_mib) == (2, 64)


class TestValidator:
    @pytest.mark.parametrize(
        ("value", "expected"), [("2.5", 2.5), (3, 3.0), (" 0 ", 0.0), (0.25, 0.25), ("604800", 604800.0)]
    )
    def test_durations_accept_what_people_and_code_pass(self, value: object, expected: float) -> None:
        assert parse_duration("t", value) == expected

    @pytest.mark.parametrize("value", [*BAD_DURATIONS[1:], "", "1s", "0x10", 604801, object()], ids=repr)
    def test_durations_refuse_the_rest_with_the_options_name(self, value: object) -> None:
        with pytest.raises(ConfigurationError, match=r"^t must be"):
            parse_duration("t", value)

    def test_positive_durations_refuse_zero_and_bounds_are_the_callers(self) -> None:
        with pytest.raises(ConfigurationError, match="more than 0 seconds"):
            parse_duration("t", 0, positive=True)
        with pytest.raises(ConfigurationError, match="from 0 to 60 seconds"):
            parse_duration("t", 61, maximum=60)

    @pytest.mark.parametrize("value", ["2**40", "1e3", "-1", "+1", "1.0", 1.0, True, "٣", 2**40, "9" * 5000])
    def test_counts_refuse_anything_but_bounded_whole_numbers(self, value: object) -> None:
        with pytest.raises(ConfigurationError, match=r"^n must be"):
            parse_count("n", value)

    def test_counts_accept_digits_and_ints(self) -> None:
        assert parse_count("n", " 12 ") == 12
        assert parse_count("n", 7, maximum=7) == 7

    @pytest.mark.parametrize(
        ("value", "expected"), [("yes", True), ("OFF", False), (True, True), ("1", True)]
    )
    def test_booleans(self, value: object, expected: bool) -> None:
        assert parse_boolean("b", value) is expected

    @pytest.mark.parametrize("value", ["abc", 1, None, ""])
    def test_booleans_refuse_the_rest(self, value: object) -> None:
        with pytest.raises(ConfigurationError, match=r"^b must be true or false"):
            parse_boolean("b", value)

    def test_numbers_are_bounded_and_messages_stay_short(self) -> None:
        assert parse_number("x", "-2", minimum=-5, maximum=5) == -2.0
        with pytest.raises(PowerDriversError) as caught:
            parse_number("x", "7" * 500, minimum=0, maximum=1)
        assert len(str(caught.value)) < 120
