"""The RRD data xcp-rrdd keeps per VM: per-VCPU load, the domain's run-state fractions, rows.

Written from xcp-rrdd's documented VM data sources (its CPU plugin's names, units and
descriptions): ``cpuN``, the fraction of a step VCPU N ran; ``memory``; and six run-state
fractions of the *domain*, which partition the step: all VCPUs running
(``runstate_fullrun``), all runnable, i.e. waiting for a physical CPU
(``runstate_full_contention``), some running and some runnable
(``runstate_concurrency_hazard``), all blocked or offline (``runstate_blocked``), some running
and some blocked (``runstate_partial_run``), some runnable and some blocked
(``runstate_partial_contention``). xcp-rrdd records ``cpuN`` and ``memory`` by default; the
run-state sources only once ``VM.record_data_source`` asked for them (the simulator lists only
recorded sources in ``VM.get_data_sources``, and leaves out ``cpu_usage``).

Each VCPU's load in a step is a running and a waiting fraction (blocked is the rest): set by a
test, or else the simulator's deterministic utilisation with no waiting. The run-state
fractions are derived from the loads under one schedule consistent with them: within the step
each VCPU runs first, then waits, then blocks.
"""

from __future__ import annotations

import itertools
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from ._lifecycle import PAUSED, RUNNING
from ._metrics import vcpu_utilisation

FULLRUN = "runstate_fullrun"
FULL_CONTENTION = "runstate_full_contention"
CONCURRENCY_HAZARD = "runstate_concurrency_hazard"
BLOCKED = "runstate_blocked"
PARTIAL_RUN = "runstate_partial_run"
PARTIAL_CONTENTION = "runstate_partial_contention"
RUNSTATE_SOURCES = (FULLRUN, FULL_CONTENTION, CONCURRENCY_HAZARD, BLOCKED, PARTIAL_RUN, PARTIAL_CONTENTION)
"""The domain run-state data sources, in xcp-rrdd's order; not recorded unless asked for."""

ARCHIVE_ROWS = 120
"""Rows the finest archive keeps (xapi: five-second rows for the past ten minutes)."""


@dataclass(frozen=True)
class VcpuLoad:
    """How one VCPU spent a step: ``running`` and ``waiting`` (runnable) fractions; blocked is the rest."""

    running: float
    waiting: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.running <= 1.0 and 0.0 <= self.waiting <= 1.0):
            raise ValueError(f"fractions must be within 0..1, not {self.running}, {self.waiting}")
        if self.running + self.waiting > 1.0 + 1e-9:
            raise ValueError(f"running {self.running} and waiting {self.waiting} exceed the step")


def domain_runstates(loads: Sequence[VcpuLoad]) -> dict[str, float]:
    """Return the six run-state fractions of a domain whose VCPUs had ``loads`` (they sum to 1)."""
    fractions = dict.fromkeys(RUNSTATE_SOURCES, 0.0)
    if not loads:
        fractions[BLOCKED] = 1.0
        return fractions
    ends = {load.running for load in loads} | {load.running + load.waiting for load in loads}
    bounds = sorted({0.0, 1.0, *ends})
    for start, end in itertools.pairwise(bounds):
        middle = (start + end) / 2
        running = sum(middle < load.running for load in loads)
        runnable = sum(load.running <= middle < load.running + load.waiting for load in loads)
        fractions[_runstate(running, runnable, len(loads))] += end - start
    return fractions


def _runstate(running: int, runnable: int, vcpus: int) -> str:
    if running == vcpus:
        return FULLRUN
    if runnable == vcpus:
        return FULL_CONTENTION
    if running == 0 and runnable == 0:
        return BLOCKED
    # Some running and some runnable, whether or not others are blocked.
    if running and runnable:
        return CONCURRENCY_HAZARD
    return PARTIAL_RUN if running else PARTIAL_CONTENTION


class RrdStore:
    """Per-VM loads set by tests, which sources each VM records, and the rows they make."""

    def __init__(self, step: int) -> None:
        if step < 1:
            raise ValueError(f"the RRD step is a whole number of seconds, at least 1, not {step}")
        self.step = step
        self._lock = threading.Lock()
        self._loads: dict[str, tuple[VcpuLoad, ...]] = {}
        self._recorded: dict[str, set[str]] = {}

    def set_loads(self, vm_uuid: str, loads: Sequence[VcpuLoad]) -> None:
        """Make every row served from now on (earlier steps included) show these loads."""
        with self._lock:
            self._loads[vm_uuid] = tuple(loads)

    def record(self, vm_uuid: str, source: str) -> None:
        """Start recording an optional source (``VM.record_data_source``)."""
        with self._lock:
            self._recorded.setdefault(vm_uuid, set()).add(source)

    def recorded(self, vm_uuid: str, source: str) -> bool:
        """Whether ``source`` is recorded for the VM (the default sources always are)."""
        if source not in RUNSTATE_SOURCES:
            return True
        with self._lock:
            return source in self._recorded.get(vm_uuid, set())

    def loads(
        self, vm_uuid: str, vcpus: int, power_state: str, at: float, interval: float | None = None
    ) -> tuple[VcpuLoad, ...]:
        """Return each VCPU's load in the ``interval`` (default: the step) ending at ``at``.

        A paused domain's VCPUs are offline.
        """
        if power_state == PAUSED:
            return tuple(VcpuLoad(0.0) for _ in range(vcpus))
        with self._lock:
            scripted = self._loads.get(vm_uuid)
        if scripted is not None:
            return tuple(scripted[vcpu] if vcpu < len(scripted) else VcpuLoad(0.0) for vcpu in range(vcpus))
        utilisation = vcpu_utilisation(vm_uuid, vcpus, RUNNING, at, interval or float(self.step))
        return tuple(VcpuLoad(utilisation[str(vcpu)]) for vcpu in range(vcpus))

    def utilisation(
        self, vm_uuid: str, vcpus: int, power_state: str, now: float, interval: float
    ) -> dict[str, float]:
        """``VM_metrics.VCPUs_utilisation``: each VCPU's running fraction when live, else empty."""
        if power_state not in (RUNNING, PAUSED):
            return {}
        loads = self.loads(vm_uuid, vcpus, power_state, now, interval)
        return {str(vcpu): load.running for vcpu, load in enumerate(loads)}

    def sources(
        self,
        vm_uuid: str,
        vcpus: int,
        power_state: str,
        memory: int,
        at: float,
        interval: float | None = None,
    ) -> dict[str, float]:
        """Return every data source's value in the ``interval`` (default: the step) ending at ``at``."""
        loads = self.loads(vm_uuid, vcpus, power_state, at, interval)
        values = {f"cpu{vcpu}": load.running for vcpu, load in enumerate(loads)}
        values["memory"] = float(memory)
        values.update(domain_runstates(loads))
        return values

    def data_sources(
        self, vm_uuid: str, vcpus: int, power_state: str, memory: int, now: float, interval: float
    ) -> list[dict[str, object]]:
        """Return the records of ``VM.get_data_sources``: those the VM records (none when not live)."""
        if power_state not in (RUNNING, PAUSED):
            return []
        values = self.sources(vm_uuid, vcpus, power_state, memory, now, interval)
        return [
            {
                "name_label": name,
                "name_description": _description(name),
                "enabled": self.recorded(vm_uuid, name),
                "standard": name not in RUNSTATE_SOURCES,
                "units": "B" if name == "memory" else "(fraction)",
                "min": 0.0,
                "max": float(memory) if name == "memory" else 1.0,
                "value": value,
            }
            for name, value in values.items()
            if self.recorded(vm_uuid, name)
        ]

    def row_times(self, start: float, now: float) -> list[int]:
        """Return the ends of the steps after ``start`` completed by ``now`` and kept, newest first."""
        last = math.floor(now / self.step) * self.step
        oldest_kept = last - (ARCHIVE_ROWS - 1) * self.step
        first = max(math.floor(start / self.step) * self.step + self.step, oldest_kept)
        return list(range(last, first - 1, -self.step))


_DESCRIPTIONS = {
    "memory": "Memory currently allocated to VM",
    FULLRUN: "Fraction of time that all vCPUs are running",
    FULL_CONTENTION: "Fraction of time that all vCPUs are runnable (i.e., waiting for CPU)",
    CONCURRENCY_HAZARD: "Fraction of time that some vCPUs are running and some are runnable",
    BLOCKED: "Fraction of time that all vCPUs are blocked or offline",
    PARTIAL_RUN: "Fraction of time that some vCPUs are running and some are blocked",
    PARTIAL_CONTENTION: "Fraction of time that some vCPUs are runnable and some are blocked",
}


def _description(name: str) -> str:
    return _DESCRIPTIONS.get(name) or f"CPU{name.removeprefix('cpu')} usage"
