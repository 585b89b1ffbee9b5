"""VCPU statistics on Xen, from the RRD rows xapi publishes at ``/rrd_updates``.

Per VCPU, xcp-rrdd publishes ``cpuN``: the fraction of each step VCPU N ran. Per domain it
publishes run-state fractions of the step; three of them hold all the time a VCPU waited for a
physical CPU: ``runstate_full_contention`` (all VCPUs runnable), ``runstate_concurrency_hazard``
(some running, some runnable) and ``runstate_partial_contention`` (some runnable, some
blocked). With C, H and P those fractions and n VCPUs, the mean waiting fraction of the VCPUs
is C + (H + P)/n exactly when n is 1 or 2 (in H and P exactly one VCPU of two waits), and at
least that when n is 3 or more; it is what each VCPU's ``waiting`` is, never more than what the
VCPU did not run. ``blocked`` is the rest of the step. Halts and exits are not published: None.

xcp-rrdd records the run-state sources only once asked (``VM.record_data_source``), so the
first time a VM's answer lacks them they are asked for; until they arrive a row's time that the
VCPU did not run is left unattributed (neither waiting nor blocked), not called blocked.

Counters accumulate the rows since the driver first read a VM, to the end of the newest row:
their reading time is that row's end, so two readings differ by whole steps of xapi's data.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from powerdrivers import (
    HypervisorError,
    InstanceReading,
    InstanceVcpuCounters,
    PowerDriversError,
    VcpuCounters,
    VcpuStats,
    stats_between,
)
from powerdrivers_xen._rrd_updates import RrdRow, RrdUpdate, RrdUpdatesReader, Values, vcpu_number
from powerdrivers_xen._session import XapiSession

_LOG = logging.getLogger("powerdrivers.xen")
FULL_CONTENTION = "runstate_full_contention"
CONCURRENCY_HAZARD = "runstate_concurrency_hazard"
PARTIAL_CONTENTION = "runstate_partial_contention"
CONTENTION_SOURCES = (FULL_CONTENTION, CONCURRENCY_HAZARD, PARTIAL_CONTENTION)
"""The run-state data sources waiting is computed from; the driver asks xapi to record them."""
#: How far back a first read looks for rows: the finest archive's newest rows, with room for
#: a host clock that differs from this one.
_FIRST_LOOK_S = 120
_NS = 1_000_000_000


@dataclass
class _Totals:
    """One VM's accumulated nanoseconds per VCPU, through the end of a row (xapi's epoch seconds)."""

    through: float
    running_ns: dict[int, int] = field(default_factory=dict)
    waiting_ns: dict[int, int] = field(default_factory=dict)
    blocked_ns: dict[int, int] = field(default_factory=dict)

    def add(self, values: Values, seconds: float) -> None:
        """Count ``seconds`` of a row with these values."""
        vcpus = {n: values[name] for name in values if (n := vcpu_number(name)) is not None}
        contention = [values.get(name, math.nan) for name in CONTENTION_SOURCES]
        waiting_mean = None
        if vcpus and not any(math.isnan(value) for value in contention):
            full, hazard, partial = contention
            waiting_mean = full + (hazard + partial) / len(vcpus)
        for vcpu, running in vcpus.items():
            for totals in (self.running_ns, self.waiting_ns, self.blocked_ns):
                totals.setdefault(vcpu, 0)
            if math.isnan(running):
                continue
            self.running_ns[vcpu] += round(running * seconds * _NS)
            if waiting_mean is None:
                continue
            waiting = min(waiting_mean, 1.0 - running)
            self.waiting_ns[vcpu] += round(waiting * seconds * _NS)
            self.blocked_ns[vcpu] += round(max(1.0 - running - waiting, 0.0) * seconds * _NS)

    def counters(self) -> tuple[VcpuCounters, ...]:
        """Return the totals as the core's counters, one per VCPU."""
        return tuple(
            VcpuCounters(vcpu, self.running_ns[vcpu], self.waiting_ns[vcpu], self.blocked_ns[vcpu])
            for vcpu in sorted(self.running_ns)
        )


def _accumulate(totals: _Totals, rows: Iterable[RrdRow], uuid: str, step: float) -> None:
    """Add the part after ``totals.through`` of each row (a row covers the step before its end)."""
    for row in rows:
        values = row.vms.get(uuid)
        if values is None or row.end <= totals.through:
            continue
        totals.add(values, min(step, row.end - totals.through))
        totals.through = row.end


class XenVcpuStatistics:
    """Turns ``/rrd_updates`` answers into VCPU statistics and cumulative counters.

    Counters are kept per VM between reads so that each read asks only for the rows since the
    last one. Raises only powerdrivers errors (see :meth:`RrdUpdatesReader.read`).
    """

    def __init__(self, reader: RrdUpdatesReader, session: XapiSession) -> None:
        self._reader = reader
        self._session = session
        self._totals: dict[str, _Totals] = {}
        self._asked_to_record: set[str] = set()
        self._lock = threading.Lock()
        # Reading times are row ends (xapi's clock) on the monotonic clock's scale.
        self._monotonic_offset = time.monotonic() - time.time()

    def window(self, instance: InstanceReading, window_s: float) -> list[VcpuStats]:
        """Return each VCPU's statistics over the rows that ended in the last ``window_s`` seconds.

        xapi's rows are its resolution: the newest row stands for a shorter window, and the
        statistics report the time the rows cover as their window.
        """
        update = self._read([instance.id], int(time.time() - max(window_s, _FIRST_LOOK_S)))
        rows = [row for row in update.rows if instance.id in row.vms]
        if not rows:
            raise _no_statistics(instance)
        newest = rows[-1].end
        chosen = [row for row in rows if row.end > newest - window_s] or rows[-1:]
        start = chosen[0].end - update.step
        totals = _Totals(start)
        _accumulate(totals, chosen, instance.id, update.step)
        before = InstanceVcpuCounters(
            instance.id, instance.name, start, tuple(VcpuCounters(c.vcpu, 0, 0, 0) for c in totals.counters())
        )
        after = InstanceVcpuCounters(instance.id, instance.name, newest, totals.counters())
        return stats_between(before, after, newest - start)

    def counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        """Return the cumulative counters of one running instance (one ``/rrd_updates`` request)."""
        with self._lock:
            known = self._totals.get(instance.id)
            start = int(known.through) if known else int(time.time() - _FIRST_LOOK_S)
        update = self._read([instance.id], start)
        found = self._advance(instance, update)
        if found is None:
            raise _no_statistics(instance)
        return found

    def all_counters(self, instances: Sequence[InstanceReading]) -> list[InstanceVcpuCounters]:
        """Return the counters of every instance xapi has rows for, from one ``/rrd_updates`` request.

        Instances resident on another host of a pool have no rows here and are left out. An
        instance read before whose rows have not moved on keeps its counters.
        """
        if not instances:
            return []
        with self._lock:
            throughs = [self._totals[i.id].through for i in instances if i.id in self._totals]
            for gone in set(self._totals) - {instance.id for instance in instances}:
                del self._totals[gone]
        start = int(time.time() - _FIRST_LOOK_S)
        if throughs:
            start = int(min(throughs)) if len(throughs) == len(instances) else min(start, int(min(throughs)))
        update = self._read([], start)
        found = (self._advance(instance, update) for instance in instances)
        return [counters for counters in found if counters is not None]

    def _read(self, vm_uuids: Sequence[str], start: int) -> RrdUpdate:
        update = self._reader.read(start, vm_uuids)
        for uuid in update.vm_uuids():
            with self._lock:
                asked = uuid in self._asked_to_record
                self._asked_to_record.add(uuid)
            if not asked and _lacks_contention(update, uuid):
                self._ask_to_record(uuid)
        return update

    def _advance(self, instance: InstanceReading, update: RrdUpdate) -> InstanceVcpuCounters | None:
        """Count the instance's new rows; None when it was never read and has no row here."""
        rows = [row for row in update.rows if instance.id in row.vms]
        with self._lock:
            totals = self._totals.get(instance.id)
            if totals is None:
                if not rows:
                    return None
                # The first reading is the origin of the counters: no row is counted yet.
                totals = self._totals[instance.id] = _Totals(rows[-1].end)
                totals.add(rows[-1].vms[instance.id], 0.0)
            _accumulate(totals, rows, instance.id, update.step)
            counters = totals.counters()
            taken_at = totals.through + self._monotonic_offset
        return InstanceVcpuCounters(instance.id, instance.name, taken_at, counters)

    def _ask_to_record(self, uuid: str) -> None:
        """Ask xapi to record the contention sources of a VM; a refusal is logged, once."""

        def record(api: Any) -> None:
            vm = api.VM.get_by_uuid(uuid)
            for name in CONTENTION_SOURCES:
                api.VM.record_data_source(vm, name)

        try:
            self._session.call(record, instance=uuid, operation="vcpu_stats")
        except PowerDriversError as error:
            _LOG.warning("xen: could not ask xapi to record the contention of VM %s: %s", uuid, error)
            return
        _LOG.info("xen: asked xapi to record %s for VM %s", ", ".join(CONTENTION_SOURCES), uuid)


def _lacks_contention(update: RrdUpdate, uuid: str) -> bool:
    return any(uuid in row.vms and not set(CONTENTION_SOURCES) <= set(row.vms[uuid]) for row in update.rows)


def _no_statistics(instance: InstanceReading) -> HypervisorError:
    return HypervisorError(
        f"xapi has no statistics for {instance.name} yet (just started, or resident on another host)",
        code="NO_STATISTICS",
    )
