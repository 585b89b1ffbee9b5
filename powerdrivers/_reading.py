"""A reading of an instance: its canonical state and the native values behind it."""

from __future__ import annotations

from datetime import datetime
from typing import Any, NamedTuple

from powerdrivers._states import PowerState, Transition


class InstanceReading(NamedTuple):
    """What the hypervisor said about one instance at ``observed_at``.

    ``power_state`` and ``transition`` are canonical; ``native_state`` and
    ``native_reason`` are the hypervisor's own values, always kept, so that
    nothing is lost by mapping (libvirt's ``shutdown``/``user``, XenAPI's
    ``Halted``...). ``observed_at`` is timezone-aware UTC. Immutable; a
    named tuple because listings build thousands of them.
    """

    id: str
    name: str
    power_state: PowerState
    transition: Transition | None
    native_state: str
    native_reason: str | None
    observed_at: datetime

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict; enum values are their lower-case names."""
        return {
            "id": self.id,
            "name": self.name,
            "power_state": self.power_state.value,
            "transition": self.transition.value if self.transition else None,
            "native_state": self.native_state,
            "native_reason": self.native_reason,
            "observed_at": self.observed_at.isoformat(),
        }
