"""Aggregating every running instance's VCPU statistics over time, without sleeping."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from powerdrivers._vcpu import InstanceVcpuCounters, InstanceVcpuStats, stats_between

if TYPE_CHECKING:
    from powerdrivers._driver import Driver


class VcpuSampler:
    """Each call returns how every running instance's VCPUs spent the time since the previous call.

    A compute service creates one per driver and calls :meth:`sample` every
    N seconds: each call reads the cumulative counters of all running
    instances in one hypervisor round trip
    (:meth:`powerdrivers.Driver.vcpu_counters`), keeps them, and returns
    the statistics between them and the previous call's. Nothing sleeps:
    the window is the time between calls. The first call only primes the
    sampler and returns nothing; an instance that started (or restarted,
    its counters starting again) since the previous call is primed the
    same way and reported from the next call on; one that stopped is
    forgotten. Safe to call from several threads; calls are serialised.
    """

    def __init__(self, driver: Driver) -> None:
        self._driver = driver
        self._lock = threading.Lock()
        self._previous: dict[str, InstanceVcpuCounters] = {}

    def sample(self) -> list[InstanceVcpuStats]:
        """Read every running instance's counters; return each one's statistics since the previous call.

        Returns one :class:`powerdrivers.InstanceVcpuStats` per instance
        running at both calls, in the driver's order; none on the first
        call. Raises what :meth:`powerdrivers.Driver.vcpu_counters` raises
        (``UnsupportedOperation`` for a driver without bulk VCPU counters,
        the hypervisor errors), keeping the previous counters, so the next
        call covers the time since the last one that succeeded.
        """
        with self._lock:
            readings = self._driver.vcpu_counters()
            previous = self._previous
            results = []
            current = {}
            for reading in readings:
                before = previous.get(reading.id)
                if before is not None and reading.taken_at_s <= before.taken_at_s:
                    current[reading.id] = before  # no time has passed: keep the older baseline
                    continue
                current[reading.id] = reading
                if before is not None and not _restarted(before, reading):
                    stats = stats_between(before, reading)
                    results.append(
                        InstanceVcpuStats(
                            reading.id, reading.name, reading.taken_at_s - before.taken_at_s, tuple(stats)
                        )
                    )
            self._previous = current
            return results


def _restarted(before: InstanceVcpuCounters, after: InstanceVcpuCounters) -> bool:
    """Whether any VCPU's running time went backwards: the instance started again, its counters anew."""
    running_before = {counters.vcpu: counters.running_ns for counters in before.vcpus}
    return any(counters.running_ns < running_before.get(counters.vcpu, 0) for counters in after.vcpus)
