"""The interface version: what this core implements, and what each shipped driver declares.

By the versioning rule (docs/writing-a-driver.rst, "Versioning") a driver
declares the oldest interface whose features it uses; 1.1 added
``NO_REASON`` rows, the event reporter, ``reports_resets``, the counter
primitives and the optional ``VcpuStats`` fields. A driver written for 1.0
still loads.
"""

from __future__ import annotations

import inspect

import pytest

import powerdrivers
from powerdrivers import NO_REASON, Driver
from powerdrivers._loader import validate_driver_class
from powerdrivers._version import parse_interface_version

#: What interface 1.1 added that a driver class shows it uses.
PRIMITIVES_ADDED_IN_1_1 = ("_vcpu_counters", "_all_vcpu_counters")
SHIPPED = {"fake": "1.1", "libvirt": "1.1", "xen": "1.1", "procs": "1.0"}


def _uses_an_interface_1_1_feature(driver_class: type[Driver]) -> bool:
    overrides = any(
        getattr(driver_class, name) is not getattr(Driver, name) for name in PRIMITIVES_ADDED_IN_1_1
    )
    reports_resets = driver_class.reports_resets is not Driver.reports_resets
    no_reason_rows = any(row.native_reason is NO_REASON for row in driver_class.native_states)
    source = inspect.getsource(inspect.getmodule(driver_class) or driver_class)
    return overrides or reports_resets or no_reason_rows or "event_reporter" in source


def test_this_core_implements_1_1_and_accepts_every_1_x_minor_up_to_it() -> None:
    assert powerdrivers.INTERFACE_VERSION == "1.1"
    assert powerdrivers.SUPPORTED_INTERFACE_RANGE == ">=1.0, <=1.1"


@pytest.mark.parametrize(("name", "declared"), sorted(SHIPPED.items()))
def test_each_shipped_driver_declares_the_oldest_interface_whose_features_it_uses(
    name: str, declared: str
) -> None:
    driver_class = powerdrivers.load_driver_class(name)
    assert driver_class.interface_version == declared
    needs_1_1 = _uses_an_interface_1_1_feature(driver_class)
    assert parse_interface_version(declared) == ((1, 1) if needs_1_1 else (1, 0))


@pytest.mark.usefixtures("test_plugins")
def test_a_driver_declaring_1_0_still_loads_and_is_listed_ok() -> None:
    infos = {(info.name, info.distribution): info for info in powerdrivers.available_drivers()}
    for key in (("procs", "powerdrivers-procs"), ("thirdparty", "powerdrivers-test-thirdparty")):
        assert (infos[key].status, infos[key].interface_version) == ("ok", "1.0")
    with powerdrivers.load_driver("thirdparty") as driver:
        assert driver.list_instances() is not None


@pytest.mark.parametrize(("declared", "loads"), [("1.0", True), ("1.1", True), ("1.2", False)])
def test_the_loader_accepts_each_minor_up_to_the_cores(declared: str, loads: bool) -> None:
    procs = powerdrivers.load_driver_class("procs")
    written_for = type("WrittenFor", (procs,), {"interface_version": declared})
    if loads:
        validate_driver_class("procs", written_for)
    else:
        with pytest.raises(powerdrivers.IncompatibleDriver, match=r">=1\.0, <=1\.1"):
            validate_driver_class("procs", written_for)
