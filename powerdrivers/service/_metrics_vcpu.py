"""The VCPU gauges of ``/metrics``: each VCPU's latest sampling window, from the hosts this process keeps.

A listener on the fleet keeps each host's latest round in memory (a round replaces the host's
previous one, so an instance no longer running, hence no longer sampled, drops out with the
next round); a scrape yields them. A host this process no longer keeps, or whose rounds stopped
(sampling off for its driver, a host that stopped answering), drops out too. The labels are
``host``, ``instance`` (the instance's id: bounded by the running instances) and ``vcpu``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Final

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from powerdrivers.keeper import VcpuSample

#: A host's latest round is shown for at most this many sample intervals (then it went quiet).
STALE_INTERVALS: Final = 3.0
#: ... and for at least this many seconds (a short interval on a busy machine is late now and then).
MIN_STALE_S: Final = 60.0

_LABELS: Final = ["host", "instance", "vcpu"]
#: The exit counters, by the ``kind`` label their gauge carries.
_EXITS: Final = (("halt", "halt_exits"), ("io", "io_exits"), ("mmio", "mmio_exits"))


def _families() -> dict[str, GaugeMetricFamily]:
    return {
        "running": GaugeMetricFamily(
            "powerdrivers_vcpu_running_ratio",
            "Fraction of the VCPU's latest sampling window spent running guest code.",
            labels=_LABELS,
        ),
        "blocked": GaugeMetricFamily(
            "powerdrivers_vcpu_blocked_ratio",
            "Fraction of the VCPU's latest window blocked: idle or waiting on I/O in the guest.",
            labels=_LABELS,
        ),
        "halted": GaugeMetricFamily(
            "powerdrivers_vcpu_halted_ratio",
            "Fraction of the VCPU's latest window halted with nothing to run (within blocked; "
            "only where the driver measures it).",
            labels=_LABELS,
        ),
        "waiting": GaugeMetricFamily(
            "powerdrivers_vcpu_waiting_ratio",
            "Fraction of the VCPU's latest window runnable but waiting for a physical CPU (steal time).",
            labels=_LABELS,
        ),
        "exits": GaugeMetricFamily(
            "powerdrivers_vcpu_exits_per_second",
            "The VCPU's exits to the hypervisor per second over its latest window, by kind "
            "(halt, io, mmio; only where the driver measures them).",
            labels=[*_LABELS, "kind"],
        ),
    }


class VcpuCollector(Collector):
    """Each kept host's latest VCPU round, fed by :meth:`on_round` and yielded at each scrape.

    ``interval`` is the keeper's sample interval; ``kept`` returns the hosts this process keeps
    (others' rounds are dropped); a round older than ``STALE_INTERVALS`` intervals (and
    ``min_stale_s`` seconds) is dropped.
    """

    def __init__(
        self, interval: float, kept: Callable[[], list[str]] | None = None, min_stale_s: float = MIN_STALE_S
    ) -> None:
        self._stale_after = max(interval * STALE_INTERVALS, min_stale_s)
        self._kept = kept
        self._lock = threading.Lock()
        self._rounds: dict[str, tuple[float, list[VcpuSample]]] = {}

    def on_round(self, host: str, samples: list[VcpuSample]) -> None:
        """Keep ``samples`` as ``host``'s latest round (a fleet VCPU listener)."""
        with self._lock:
            self._rounds[host] = (time.monotonic(), list(samples))

    def describe(self) -> Iterator[Metric]:
        """Yield the gauges without samples."""
        yield from _families().values()

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges of every kept host's latest round that is not stale."""
        families = _families()
        for sample in self._current():
            labels = [sample.host, sample.instance_id, str(sample.vcpu)]
            families["running"].add_metric(labels, sample.running)
            families["blocked"].add_metric(labels, sample.blocked)
            families["waiting"].add_metric(labels, sample.waiting)
            if sample.halted is not None:
                families["halted"].add_metric(labels, sample.halted)
            for kind, name in _EXITS:
                rate: float | None = getattr(sample, name)
                if rate is not None:
                    families["exits"].add_metric([*labels, kind], rate)
        yield from families.values()

    def _current(self) -> list[VcpuSample]:
        kept: set[str] | None = None
        if self._kept is not None:
            try:
                kept = set(self._kept())
            except Exception:
                kept = None  # the fleet cannot say now: its rounds' age still bounds them
        now = time.monotonic()
        with self._lock:
            for host in [
                host
                for host, (received, _) in self._rounds.items()
                if now - received > self._stale_after or (kept is not None and host not in kept)
            ]:
                del self._rounds[host]
            rounds = sorted(self._rounds.items())
        return [sample for _, (_, samples) in rounds for sample in samples]
