"""Per-VCPU statistics: what replaces the BLOCKED state."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_TOLERANCE = 1e-6


@dataclass(frozen=True, slots=True)
class VcpuStats:
    """How one VCPU spent a sampling window, as fractions of the window.

    ``running``: executing guest code on a physical CPU. ``blocked``: idle
    or waiting on I/O inside the guest (what libvirt's BLOCKED state caught
    a glimpse of). ``waiting``: runnable, but waiting for a physical CPU
    (steal time). The three sum to at most 1; the rest is time the
    hypervisor could not attribute.
    """

    vcpu: int
    running: float
    blocked: float
    waiting: float
    window_s: float

    def __post_init__(self) -> None:
        for field in ("running", "blocked", "waiting"):
            value = getattr(self, field)
            if not -_TOLERANCE <= value <= 1 + _TOLERANCE:
                raise ValueError(f"vcpu {self.vcpu}: {field} fraction {value} is outside 0..1")
        total = self.running + self.blocked + self.waiting
        if total > 1 + _TOLERANCE:
            raise ValueError(f"vcpu {self.vcpu}: fractions sum to {total}, more than the window")
        if self.window_s <= 0:
            raise ValueError(f"vcpu {self.vcpu}: window {self.window_s} s is not positive")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with fractions rounded to four places."""
        return {
            "vcpu": self.vcpu,
            "running": round(self.running, 4),
            "blocked": round(self.blocked, 4),
            "waiting": round(self.waiting, 4),
            "window_s": self.window_s,
        }
