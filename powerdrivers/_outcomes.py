"""Outcomes of guest-dependent operations."""

from __future__ import annotations

import enum
from typing import Any, NamedTuple

from powerdrivers._operations import Operation
from powerdrivers._reading import InstanceReading


class Outcome(enum.StrEnum):
    """How a guest-dependent operation ended.

    Guest cooperation is not a state: it is the outcome of asking.
    """

    GRACEFUL = "graceful"
    """The guest cooperated: it shut down or rebooted itself."""
    FORCED = "forced"
    """The guest did not cooperate in time and the hypervisor forced it."""
    ALREADY_OFF = "already_off"
    """Nothing was needed: the instance was already off."""
    TIMED_OUT = "timed_out"
    """The guest did not cooperate in time and forcing was not allowed."""


class OperationResult(NamedTuple):
    """The result of a guest-dependent operation (shutdown or reboot)."""

    operation: Operation
    outcome: Outcome
    elapsed_s: float
    reading: InstanceReading

    @property
    def succeeded(self) -> bool:
        """Whether the operation reached its goal (anything but ``timed_out``)."""
        return self.outcome is not Outcome.TIMED_OUT

    def to_dict(self) -> dict[str, Any]:
        """Return ``{id, name, operation, outcome, elapsed_s, power_state, transition}``."""
        return {
            "id": self.reading.id,
            "name": self.reading.name,
            "operation": self.operation.value,
            "outcome": self.outcome.value,
            "elapsed_s": round(self.elapsed_s, 3),
            "power_state": self.reading.power_state.value,
            "transition": self.reading.transition.value if self.reading.transition else None,
        }
