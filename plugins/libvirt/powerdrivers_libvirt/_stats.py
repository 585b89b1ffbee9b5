"""VCPU counters from libvirt's bulk statistics (``virConnectGetAllDomainStats``).

Which native counter feeds which field (docs/vcpu-statistics.rst shows the
same as a table): running from ``vcpu.N.time`` (the VCPU thread's CPU
time); waiting from ``vcpu.N.delay`` (the thread's run-queue delay, from
``/proc/PID/task/TID/schedstat``: runnable but not running, what the guest
sees as steal time) — not ``vcpu.N.wait``, which libvirt fills from the
scheduler statistics most kernels do not keep; and on KVM, from QEMU's
per-VCPU KVM statistics, halted from ``vcpu.N.halt_wait_ns.sum`` and the
exits from ``vcpu.N.halt_exits.sum``, ``vcpu.N.io_exits.sum`` and
``vcpu.N.mmio_exits.sum``. Under TCG, or with an older QEMU, those do not
exist, and the fields are ``None``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import libvirt

from powerdrivers import InstanceVcpuCounters, VcpuCounters

#: VcpuCounters fields read from QEMU's KVM statistics, and the name libvirt gives them.
_KVM_COUNTERS = (
    ("halted_ns", "halt_wait_ns.sum"),
    ("halt_exits", "halt_exits.sum"),
    ("io_exits", "io_exits.sum"),
    ("mmio_exits", "mmio_exits.sum"),
)


def instance_counters(conn: libvirt.virConnect, domain: libvirt.virDomain) -> InstanceVcpuCounters:
    """Read one domain's VCPU counters: one bulk-statistics call (``virDomainGetVcpus`` without them)."""
    records, taken_at_s = _timed(lambda: conn.domainListGetStats([domain], libvirt.VIR_DOMAIN_STATS_VCPU))
    return _reading(records[0] if records else (domain, {}), taken_at_s)


def running_counters(conn: libvirt.virConnect) -> list[InstanceVcpuCounters]:
    """Read the VCPU counters of every running domain in one bulk-statistics call."""
    records, taken_at_s = _timed(
        lambda: conn.getAllDomainStats(
            libvirt.VIR_DOMAIN_STATS_VCPU, libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING
        )
    )
    return [_reading(record, taken_at_s) for record in records]


def _timed(call: Callable[[], list[Any]]) -> tuple[list[Any], float]:
    """Make ``call``; return its result and the middle of the call on the monotonic clock."""
    began = time.monotonic()
    result = call()
    return result, (began + time.monotonic()) / 2


def _reading(record: tuple[libvirt.virDomain, Mapping[str, Any]], taken_at_s: float) -> InstanceVcpuCounters:
    domain, stats = record
    vcpus = vcpu_counters(stats)
    if vcpus is None:
        # Drivers without bulk VCPU statistics (the test driver) still answer virDomainGetVcpus.
        vcpus = tuple(VcpuCounters(int(info[0]), int(info[2]), 0) for info in domain.vcpus()[0])
    return InstanceVcpuCounters(domain.UUIDString(), domain.name(), taken_at_s, vcpus)


def vcpu_counters(stats: Mapping[str, Any]) -> tuple[VcpuCounters, ...] | None:
    """Each VCPU's counters from one domain's bulk statistics; ``None`` if they hold no VCPU times."""
    count = int(stats.get("vcpu.current", 0))
    if not count or f"vcpu.{count - 1}.time" not in stats:
        return None
    return tuple(_one_vcpu(stats, n) for n in range(count))


def _one_vcpu(stats: Mapping[str, Any], vcpu: int) -> VcpuCounters:
    prefix = f"vcpu.{vcpu}."
    optional = {field: _counter(stats.get(prefix + native)) for field, native in _KVM_COUNTERS}
    return VcpuCounters(
        vcpu,
        running_ns=int(stats[prefix + "time"]),
        # libvirt before 8.1 has no delay: its run-queue delay is then unknown, and counted as none.
        waiting_ns=int(stats.get(prefix + "delay", 0)),
        **optional,
    )


def _counter(value: int | None) -> int | None:
    return None if value is None else int(value)
