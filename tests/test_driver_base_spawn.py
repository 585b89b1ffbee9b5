"""Spawn is tracked as every other operation is: in flight under its name, owed nothing when refused."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import ClassVar

import pytest

from powerdrivers import (
    Capability,
    Driver,
    Event,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    InvalidSpec,
    NativeMapping,
    NativeStateTable,
    Operation,
    PowerState,
    Transition,
)

TABLE = NativeStateTable("spawner", [NativeMapping("up", None, PowerState.RUNNING, None)])


class SpawningDriver(Driver):
    """Instances by name, no native events: the core polls for changes."""

    name: ClassVar[str] = "spawner"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.SPAWN}
    )
    native_states = TABLE

    def __init__(self) -> None:
        super().__init__(None, poll_interval_s=0.01)
        self.names: list[str] = []
        self.seen_while_spawning: InstanceReading | None = None

    def _read_all(self) -> Iterable[InstanceReading]:
        return [TABLE.reading(name, name, "up") for name in list(self.names)]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref not in self.names:
            raise InstanceNotFound(ref)
        return TABLE.reading(ref, ref, "up")

    def _start(self, instance: InstanceReading) -> None:
        pass

    def _power_off(self, instance: InstanceReading) -> None:
        pass

    def _spawn(self, spec: InstanceSpec) -> InstanceReading:
        if spec.vcpus > 8:
            raise InvalidSpec("at most 8 VCPUs here")
        self.names.append(spec.name)
        self.seen_while_spawning = self.list_instances()[-1]
        return TABLE.reading(spec.name, spec.name, "up")


def _settle(events: list[Event], count: int) -> list[tuple[EventKind, str | None, Operation | None]]:
    deadline = time.monotonic() + 5
    while len(events) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    return [(e.kind, e.name, e.caused_by_operation) for e in events]


def test_a_spawn_shows_its_transition_and_its_event_is_its_own() -> None:
    with SpawningDriver() as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            driver.spawn(InstanceSpec("web-9"))
            seen = _settle(events, 1)
    # The poll that ends the spawn may see its transition end too: the spawn's as well.
    assert seen[0] == (EventKind.SPAWNED, "web-9", Operation.SPAWN)
    assert set(seen[1:]) <= {(EventKind.TRANSITION, "web-9", Operation.SPAWN)}
    assert driver.seen_while_spawning is not None
    assert driver.seen_while_spawning.transition is Transition.SPAWNING


def test_a_refused_spawn_is_owed_no_event_of_an_instance_another_client_creates() -> None:
    with SpawningDriver() as driver:
        events: list[Event] = []
        with driver.subscribe(events.append):
            with pytest.raises(InvalidSpec):
                driver.spawn(InstanceSpec("web-9", vcpus=64))
            driver.names.append("web-9")  # someone else creates it, within the grace period
            assert _settle(events, 1) == [(EventKind.SPAWNED, "web-9", None)]
