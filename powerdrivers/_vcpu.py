"""Per-VCPU statistics: what replaces the BLOCKED state."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Self

_TOLERANCE = 1e-6


class _VcpuFractions(NamedTuple):
    vcpu: int
    running: float
    blocked: float
    waiting: float
    window_s: float


class VcpuStats(_VcpuFractions):
    """How one VCPU spent a sampling window, as fractions of the window.

    ``running``: executing guest code on a physical CPU. ``blocked``: idle
    or waiting on I/O inside the guest (what libvirt's BLOCKED state caught
    a glimpse of). ``waiting``: runnable, but waiting for a physical CPU
    (steal time). The three sum to at most 1; the rest is time the
    hypervisor could not attribute. Immutable; a value outside these
    bounds raises ``ValueError``.
    """

    __slots__ = ()

    def __new__(cls, vcpu: int, running: float, blocked: float, waiting: float, window_s: float) -> Self:
        for label, value in (("running", running), ("blocked", blocked), ("waiting", waiting)):
            if not -_TOLERANCE <= value <= 1 + _TOLERANCE:
                raise ValueError(f"vcpu {vcpu}: {label} fraction {value} is outside 0..1")
        total = running + blocked + waiting
        if total > 1 + _TOLERANCE:
            raise ValueError(f"vcpu {vcpu}: fractions sum to {total}, more than the window")
        if not 0 < window_s < math.inf:
            raise ValueError(f"vcpu {vcpu}: window {window_s} s is not a positive, finite duration")
        return super().__new__(cls, vcpu, running, blocked, waiting, window_s)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict with fractions rounded to four places."""
        return {
            "vcpu": self.vcpu,
            "running": round(self.running, 4),
            "blocked": round(self.blocked, 4),
            "waiting": round(self.waiting, 4),
            "window_s": self.window_s,
        }
