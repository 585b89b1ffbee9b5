"""Per-VCPU statistics: what replaces the BLOCKED state, and the counters they are computed from."""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Self

_TOLERANCE = 1e-6
#: The optional cumulative counters of :class:`VcpuCounters`, in the order of its fields.
_OPTIONAL_COUNTERS = ("blocked_ns", "halted_ns", "halt_exits", "io_exits", "mmio_exits")
_EXITS = ("halt_exits", "io_exits", "mmio_exits")


class _VcpuFractions(NamedTuple):
    vcpu: int
    running: float
    blocked: float
    waiting: float
    window_s: float
    halted: float | None = None
    halt_exits: float | None = None
    io_exits: float | None = None
    mmio_exits: float | None = None


class VcpuStats(_VcpuFractions):
    """How one VCPU spent a sampling window, as fractions of the window.

    ``running``: executing guest code on a physical CPU. ``blocked``: idle
    or waiting on I/O inside the guest (what libvirt's BLOCKED state caught
    a glimpse of). ``waiting``: runnable, but waiting for a physical CPU
    (steal time). The three sum to at most 1; the rest is time the
    hypervisor could not attribute.

    Why a VCPU was blocked, where the hypervisor can say it (``None`` where
    the driver cannot measure it, never a made-up 0): ``halted``, the
    fraction of the window the VCPU was halted because the guest had
    nothing to run (part of ``blocked``, so at most ``blocked``); and the
    exits to the hypervisor per second of the window: ``halt_exits``,
    ``io_exits`` (port I/O) and ``mmio_exits`` (memory-mapped I/O).

    Immutable; a value outside these bounds raises ``ValueError``.
    """

    __slots__ = ()

    def __new__(
        cls,
        vcpu: int,
        running: float,
        blocked: float,
        waiting: float,
        window_s: float,
        halted: float | None = None,
        halt_exits: float | None = None,
        io_exits: float | None = None,
        mmio_exits: float | None = None,
    ) -> Self:
        for label, value in (("running", running), ("blocked", blocked), ("waiting", waiting)):
            if not -_TOLERANCE <= value <= 1 + _TOLERANCE:
                raise ValueError(f"vcpu {vcpu}: {label} fraction {value} is outside 0..1")
        total = running + blocked + waiting
        if total > 1 + _TOLERANCE:
            raise ValueError(f"vcpu {vcpu}: fractions sum to {total}, more than the window")
        if not 0 < window_s < math.inf:
            raise ValueError(f"vcpu {vcpu}: window {window_s} s is not a positive, finite duration")
        if halted is not None and not -_TOLERANCE <= halted <= blocked + _TOLERANCE:
            raise ValueError(f"vcpu {vcpu}: halted fraction {halted} is outside 0..blocked ({blocked})")
        for label, rate in (("halt_exits", halt_exits), ("io_exits", io_exits), ("mmio_exits", mmio_exits)):
            if rate is not None and not 0 <= rate < math.inf:
                raise ValueError(f"vcpu {vcpu}: {label} rate {rate} is not a finite rate of at least 0")
        return super().__new__(
            cls, vcpu, running, blocked, waiting, window_s, halted, halt_exits, io_exits, mmio_exits
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: fractions rounded to four places, rates to three, ``None`` unmeasured."""
        return {
            "vcpu": self.vcpu,
            "running": round(self.running, 4),
            "blocked": round(self.blocked, 4),
            "waiting": round(self.waiting, 4),
            "window_s": self.window_s,
            "halted": None if self.halted is None else round(self.halted, 4),
            "halt_exits": None if self.halt_exits is None else round(self.halt_exits, 3),
            "io_exits": None if self.io_exits is None else round(self.io_exits, 3),
            "mmio_exits": None if self.mmio_exits is None else round(self.mmio_exits, 3),
        }


class _Counters(NamedTuple):
    vcpu: int
    running_ns: int
    waiting_ns: int
    blocked_ns: int | None = None
    halted_ns: int | None = None
    halt_exits: int | None = None
    io_exits: int | None = None
    mmio_exits: int | None = None


class VcpuCounters(_Counters):
    """One VCPU's cumulative counters, as the hypervisor keeps them (since the VCPU started).

    Nanoseconds ``running`` guest code, ``waiting`` for a physical CPU
    while runnable, and where the hypervisor counts them, ``blocked``
    (else blocked is what running and waiting leave of a window) and
    ``halted`` (the guest had nothing to run); the number of exits to the
    hypervisor for ``halt``, port I/O (``io_exits``) and memory-mapped I/O
    (``mmio_exits``). ``None`` where the hypervisor does not count it.
    Two readings turn into :class:`VcpuStats` with :func:`stats_between`.
    A negative or non-integral counter raises ``ValueError``.
    """

    __slots__ = ()

    def __new__(
        cls,
        vcpu: int,
        running_ns: int,
        waiting_ns: int,
        blocked_ns: int | None = None,
        halted_ns: int | None = None,
        halt_exits: int | None = None,
        io_exits: int | None = None,
        mmio_exits: int | None = None,
    ) -> Self:
        values = (running_ns, waiting_ns, blocked_ns, halted_ns, halt_exits, io_exits, mmio_exits)
        labels = ("running_ns", "waiting_ns", *_OPTIONAL_COUNTERS)
        for label, value in zip(labels, values, strict=True):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ValueError(
                    f"vcpu {vcpu}: counter {label} {value!r} is not a whole number of at least 0"
                )
        return super().__new__(cls, vcpu, *values)


class InstanceVcpuCounters(NamedTuple):
    """The VCPU counters of one running instance, read at one moment.

    ``taken_at_s`` is the reader's :func:`time.monotonic` when the counters
    were read: the difference between two readings is the window they
    cover.
    """

    id: str
    name: str
    taken_at_s: float
    vcpus: tuple[VcpuCounters, ...]


def stats_between(
    first: InstanceVcpuCounters, second: InstanceVcpuCounters, window_s: float | None = None
) -> list[VcpuStats]:
    """Each VCPU's :class:`VcpuStats` between two readings of the same instance.

    The window is the time between the readings; ``window_s`` is what the
    results report as their window (the one asked for), by default that
    time. A VCPU missing from the first reading (hot-plugged since) has no
    window and is left out. Counters that went backwards (the hypervisor
    reset them) count as no time. Raises ``ValueError`` when the second
    reading is not later than the first.
    """
    elapsed_s = second.taken_at_s - first.taken_at_s
    if not 0 < elapsed_s < math.inf:
        raise ValueError(f"{second.name}: the second reading is not later than the first")
    before = {counters.vcpu: counters for counters in first.vcpus}
    return [
        _fractions(before[counters.vcpu], counters, elapsed_s, window_s or elapsed_s)
        for counters in sorted(second.vcpus)
        if counters.vcpu in before
    ]


def _fractions(first: VcpuCounters, second: VcpuCounters, elapsed_s: float, window_s: float) -> VcpuStats:
    elapsed_ns = elapsed_s * 1e9
    running = _share(second.running_ns - first.running_ns, elapsed_ns, 1.0)
    waiting = _share(second.waiting_ns - first.waiting_ns, elapsed_ns, 1.0 - running)
    left = 1.0 - running - waiting
    blocked_ns = _delta(first.blocked_ns, second.blocked_ns)
    blocked = left if blocked_ns is None else _share(blocked_ns, elapsed_ns, left)
    halted_ns = _delta(first.halted_ns, second.halted_ns)
    # A halt that began before the window or ends after it can overshoot: it is part of blocked.
    halted = None if halted_ns is None else _share(halted_ns, elapsed_ns, blocked)
    rates = (_rate(_delta(getattr(first, name), getattr(second, name)), elapsed_s) for name in _EXITS)
    return VcpuStats(second.vcpu, running, blocked, waiting, window_s, halted, *rates)


def _delta(first: int | None, second: int | None) -> int | None:
    if first is None or second is None:
        return None
    return max(second - first, 0)


def _share(amount_ns: int, elapsed_ns: float, at_most: float) -> float:
    return min(max(amount_ns / elapsed_ns, 0.0), max(at_most, 0.0))


def _rate(count: int | None, elapsed_s: float) -> float | None:
    return None if count is None else count / elapsed_s


class InstanceVcpuStats(NamedTuple):
    """How each VCPU of one instance spent a window: what :class:`powerdrivers.VcpuSampler` returns."""

    id: str
    name: str
    window_s: float
    vcpus: tuple[VcpuStats, ...]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict: the instance, the window, and each VCPU's :meth:`VcpuStats.to_dict`."""
        return {
            "id": self.id,
            "name": self.name,
            "window_s": round(self.window_s, 6),
            "vcpus": [stats.to_dict() for stats in self.vcpus],
        }
