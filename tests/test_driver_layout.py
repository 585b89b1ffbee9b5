"""How ``Driver`` is put together does not change what a driver author sees.

The primitives' declarations live in a module of their own (a private base
class of :class:`powerdrivers.Driver`); the public class, its abstract
methods, the primitives a driver may override, their signatures and the
class attributes' type hints are those a driver was written against.
"""

from __future__ import annotations

import inspect
import typing

import powerdrivers
from powerdrivers import Driver

ABSTRACT_PRIMITIVES = {"_read_all", "_read_one", "_start", "_power_off"}
OPTIONAL_PRIMITIVES = {
    "_request_shutdown",
    "_request_reboot",
    "_hard_reboot",
    "_pause",
    "_unpause",
    "_suspend",
    "_resume",
    "_spawn",
    "_delete",
    "_vcpu_stats",
    "_vcpu_counters",
    "_all_vcpu_counters",
    "_start_native_events",
    "_stop_native_events",
    "_close",
}
HELPERS = {"_publish", "_publish_change", "_publish_resync", "_reject_unknown_options"}
PUBLIC_METHODS = {
    "close",
    "delete",
    "get_instance",
    "list_instances",
    "pause",
    "power_off",
    "reboot",
    "resume",
    "shutdown",
    "spawn",
    "start",
    "subscribe",
    "supports",
    "suspend",
    "unpause",
    "vcpu_counters",
    "vcpu_stats",
}


def _documented_private_methods() -> set[str]:
    return {
        name
        for name, member in inspect.getmembers(Driver, callable)
        if name.startswith("_") and not name.startswith("__") and inspect.getdoc(member)
    }


def test_the_abstract_methods_are_the_four_primitives() -> None:
    assert Driver.__abstractmethods__ == ABSTRACT_PRIMITIVES


def test_the_overridable_primitives_and_helpers_are_those_drivers_were_written_against() -> None:
    assert _documented_private_methods() == ABSTRACT_PRIMITIVES | OPTIONAL_PRIMITIVES | HELPERS


def test_the_public_surface_is_unchanged() -> None:
    public = {name for name in dir(Driver) if not name.startswith("_")}
    assert public == PUBLIC_METHODS | {"event_reporter", "reports_resets"}


def test_every_primitive_has_resolvable_type_hints_with_a_return() -> None:
    for name in ABSTRACT_PRIMITIVES | OPTIONAL_PRIMITIVES:
        assert "return" in typing.get_type_hints(getattr(Driver, name)), name
    assert typing.get_type_hints(Driver._spawn) == {
        "spec": powerdrivers.InstanceSpec,
        "return": powerdrivers.InstanceReading,
    }


def test_the_class_attributes_keep_their_type_hints() -> None:
    assert typing.get_type_hints(Driver) == {
        "name": typing.ClassVar[str],
        "interface_version": typing.ClassVar[str],
        "capabilities": typing.ClassVar[frozenset[powerdrivers.Capability]],
        "native_states": typing.ClassVar[powerdrivers.NativeStateTable],
        # An instance attribute: it may depend on the hypervisor behind the URI.
        "reports_resets": bool,
    }


def test_driver_is_the_one_public_class_drivers_subclass() -> None:
    exported = [getattr(powerdrivers, name) for name in powerdrivers.__all__]
    private_bases = [base for base in Driver.__mro__[1:] if base.__module__.startswith("powerdrivers")]
    assert private_bases, "the primitives are declared in a base class of Driver"
    assert not [base for base in private_bases if any(value is base for value in exported)]
    assert all(base.__name__ not in powerdrivers.__all__ for base in private_bases)


def test_a_driver_implementing_only_the_abstract_primitives_is_concrete() -> None:
    class Minimal(Driver):
        name = "minimal"

        def _read_all(self) -> list[powerdrivers.InstanceReading]:
            return []

        def _read_one(self, ref: str) -> powerdrivers.InstanceReading:
            raise powerdrivers.InstanceNotFound(ref)

        def _start(self, instance: powerdrivers.InstanceReading) -> None:
            return None

        def _power_off(self, instance: powerdrivers.InstanceReading) -> None:
            return None

    with Minimal() as driver:
        assert driver.list_instances() == []
