"""A minimal third-party driver, published the way an outside author would.

It has no native events, so the core's polling event source serves it, and
it declares only start, power-off and graceful shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any, ClassVar

from powerdrivers import (
    Capability,
    Driver,
    InstanceNotFound,
    InstanceReading,
    NativeMapping,
    NativeStateTable,
    PowerState,
    Transition,
)

_TABLE = NativeStateTable(
    "thirdparty",
    [
        NativeMapping("on", None, PowerState.RUNNING, None),
        NativeMapping("stopping", None, PowerState.RUNNING, Transition.SHUTTING_DOWN),
        NativeMapping("off", None, PowerState.SHUTOFF, None),
    ],
)


class ThirdPartyDriver(Driver):
    """Two machines, 'alpha' (running) and 'beta' (off); guests stop ``guest_delay`` s after ACPI."""

    name: ClassVar[str] = "thirdparty"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.SHUTDOWN}
    )
    native_states = _TABLE

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._reject_unknown_options(self.name, options, {"guest_delay", "poll_interval"})
        super().__init__(uri, poll_interval_s=float(options.get("poll_interval", 0.05)))
        self.guest_delay = float(options.get("guest_delay", 0.2))
        self.machines: dict[str, dict[str, Any]] = {
            "id-alpha": {"name": "alpha", "state": "on", "stop_at": None},
            "id-beta": {"name": "beta", "state": "off", "stop_at": None},
        }
        self.shutdown_requests = 0

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._reading(machine_id) for machine_id in self.machines]

    def _read_one(self, ref: str) -> InstanceReading:
        for machine_id, machine in self.machines.items():
            if ref in (machine_id, machine["name"]):
                return self._reading(machine_id)
        raise InstanceNotFound(ref)

    def _start(self, instance: InstanceReading) -> None:
        self.machines[instance.id].update(state="on", stop_at=None)

    def _power_off(self, instance: InstanceReading) -> None:
        self.machines[instance.id].update(state="off", stop_at=None)

    def _request_shutdown(self, instance: InstanceReading) -> None:
        self.shutdown_requests += 1
        machine = self.machines[instance.id]
        if machine["state"] == "on":
            machine.update(state="stopping", stop_at=time.monotonic() + self.guest_delay)

    def _reading(self, machine_id: str) -> InstanceReading:
        machine = self.machines[machine_id]
        if machine["stop_at"] is not None and time.monotonic() >= machine["stop_at"]:
            machine.update(state="off", stop_at=None)
        return self.native_states.reading(machine_id, machine["name"], machine["state"])
