"""VCPU statistics: deterministic, plausible utilisation figures that move over time.

xapi publishes per-VCPU load in the ``VCPUs_utilisation`` map of the VM's ``VM_metrics`` record
(VCPU number as a string -> fraction of one physical CPU), and in the RRD data sources ``cpu0``,
``cpu1``... (``VM.query_data_source``, ``/rrd_updates``). Unless a test sets a VM's load
(:mod:`._rrd`), the simulator serves them from one formula: a function of the VM's uuid, the
VCPU number and the sampling interval, so two reads in one interval agree and values change
from one interval to the next.
"""

from __future__ import annotations

import math
import zlib

from ._lifecycle import PAUSED, RUNNING


def vcpu_utilisation(
    vm_uuid: str, vcpus: int, power_state: str, now: float, interval: float
) -> dict[str, float]:
    """Each VCPU's load in [0, 1] for a live VM (all zero when Paused); empty when not live."""
    if power_state not in (RUNNING, PAUSED):
        return {}
    if power_state == PAUSED:
        return {str(vcpu): 0.0 for vcpu in range(vcpus)}
    sample = math.floor(now / max(interval, 1e-3))
    seed = zlib.crc32(vm_uuid.encode())
    loads: dict[str, float] = {}
    for vcpu in range(vcpus):
        phase = ((seed >> (vcpu % 24)) % 628) / 100.0
        base = 0.05 + ((seed >> 8) % 30) / 100.0
        swing = 0.5 + 0.5 * math.sin(sample * 0.7 + phase)
        loads[str(vcpu)] = round(min(1.0, base + 0.4 * swing), 4)
    return loads
