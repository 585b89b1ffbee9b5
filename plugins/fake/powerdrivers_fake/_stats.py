"""The fake hypervisor's VCPU counters: synthetic, steady, and consistent with each other.

Each VCPU of an instance has its own steady rates, drawn once from its
instance id and VCPU number: fractions of time running, waiting and halted
(halted is part of what running and waiting leave, so never more than
blocked), and exits per second. Its cumulative counters are those rates
times the time since the instance was created, so any two readings agree
on the same fractions, and every field is measured.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from powerdrivers import InstanceVcpuCounters, VcpuCounters


class _Rates(NamedTuple):
    running: float
    waiting: float
    halted: float
    halt_exits: float
    io_exits: float
    mmio_exits: float


@functools.lru_cache(maxsize=65536)
def _rates(instance_id: str, vcpu: int) -> _Rates:
    draw = random.Random(f"{instance_id}:{vcpu}")
    running = draw.uniform(0.05, 0.6)
    waiting = draw.uniform(0.0, 0.1)
    halted = (1.0 - running - waiting) * draw.uniform(0.5, 0.95)
    return _Rates(
        running, waiting, halted, draw.uniform(50, 500), draw.uniform(0, 2000), draw.uniform(0, 500)
    )


def read_counters(records: Iterable[Mapping[str, Any]]) -> list[InstanceVcpuCounters]:
    """Read the VCPU counters of ``records`` (instance records), all at one moment."""
    now = time.time()
    taken_at_s = time.monotonic()
    return [_instance_counters(record, now, taken_at_s) for record in records]


def _instance_counters(record: Mapping[str, Any], now: float, taken_at_s: float) -> InstanceVcpuCounters:
    age_s = max(now - float(record.get("created_at", 0.0)), 0.0)
    vcpus = tuple(_vcpu_counters(_rates(record["id"], vcpu), vcpu, age_s) for vcpu in range(record["vcpus"]))
    return InstanceVcpuCounters(record["id"], record["name"], taken_at_s, vcpus)


def _vcpu_counters(rates: _Rates, vcpu: int, age_s: float) -> VcpuCounters:
    age_ns = age_s * 1e9
    return VcpuCounters(
        vcpu,
        running_ns=int(rates.running * age_ns),
        waiting_ns=int(rates.waiting * age_ns),
        halted_ns=int(rates.halted * age_ns),
        halt_exits=int(rates.halt_exits * age_s),
        io_exits=int(rates.io_exits * age_s),
        mmio_exits=int(rates.mmio_exits * age_s),
    )
