"""The VcpuSampler and the core's VCPU primitives: bulk counters, statistics built from counters."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import pytest

import powerdrivers
from powerdrivers import (
    Capability,
    Driver,
    InstanceNotFound,
    InstanceReading,
    InstanceVcpuCounters,
    NativeMapping,
    NativeStateTable,
    PowerState,
    UnsupportedOperation,
    VcpuCounters,
    VcpuSampler,
)
from powerdrivers._loader import validate_driver_class

TABLE = NativeStateTable(
    "counting",
    [
        NativeMapping("up", None, PowerState.RUNNING, None),
        NativeMapping("down", None, PowerState.SHUTOFF, None),
    ],
)


class CountingDriver(Driver):
    """Instances whose counters the test sets; reads them all at once, as a hypervisor's bulk call does."""

    name: ClassVar[str] = "counting"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.START, Capability.POWER_OFF, Capability.VCPU_STATS}
    )
    native_states = TABLE

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        super().__init__(uri)
        self.running_ns: dict[str, int] = {}
        self.clock = 100.0
        self.bulk_reads = 0

    def _read_all(self) -> Iterable[InstanceReading]:
        return [self._read_one(name) for name in self.running_ns]

    def _read_one(self, ref: str) -> InstanceReading:
        if ref not in self.running_ns:
            raise InstanceNotFound(ref)
        return TABLE.reading(ref, ref, "up")

    def _start(self, instance: InstanceReading) -> None:
        pass

    def _power_off(self, instance: InstanceReading) -> None:
        pass

    def _vcpu_counters(self, instance: InstanceReading) -> InstanceVcpuCounters:
        return InstanceVcpuCounters(
            instance.id, instance.name, time.monotonic(), (VcpuCounters(0, time.monotonic_ns() // 2, 0),)
        )

    def _all_vcpu_counters(self) -> Iterable[InstanceVcpuCounters]:
        self.bulk_reads += 1
        return [
            InstanceVcpuCounters(name, name, self.clock, (VcpuCounters(0, running, 0, halted_ns=0),))
            for name, running in self.running_ns.items()
        ]


@pytest.fixture
def counting() -> Iterator[CountingDriver]:
    with CountingDriver() as driver:
        yield driver


def test_the_first_sample_primes_and_the_next_covers_the_time_between(counting: CountingDriver) -> None:
    counting.running_ns = {"a": 0, "b": 0}
    sampler = VcpuSampler(counting)
    assert sampler.sample() == []
    counting.clock += 2.0
    counting.running_ns = {"a": 1_000_000_000, "b": 2_000_000_000}
    [a, b] = sampler.sample()
    assert (a.name, a.window_s, b.name, b.window_s) == ("a", 2.0, "b", 2.0)
    assert a.vcpus[0].running == pytest.approx(0.5) and a.vcpus[0].halted == 0.0
    assert b.vcpus[0].running == pytest.approx(1.0)
    assert counting.bulk_reads == 2
    # Each call covers the time since the previous one only.
    counting.clock += 1.0
    counting.running_ns = {"a": 1_100_000_000, "b": 2_000_000_000}
    [a, b] = sampler.sample()
    assert (a.window_s, b.vcpus[0].running) == (1.0, 0.0)
    assert a.vcpus[0].running == pytest.approx(0.1)


def test_new_restarted_and_gone_instances(counting: CountingDriver) -> None:
    counting.running_ns = {"a": 5_000_000_000, "gone": 0}
    sampler = VcpuSampler(counting)
    sampler.sample()
    counting.clock += 1.0
    # "a" restarted (its counters began again), "new" started, "gone" stopped.
    counting.running_ns = {"a": 100, "new": 0}
    assert sampler.sample() == []
    counting.clock += 1.0
    counting.running_ns = {"a": 500_000_100, "new": 250_000_000}
    [a, new] = sampler.sample()
    assert (a.name, new.name) == ("a", "new")
    assert a.vcpus[0].running == pytest.approx(0.5) and new.vcpus[0].running == pytest.approx(0.25)


def test_a_sample_at_the_same_moment_keeps_the_older_baseline(counting: CountingDriver) -> None:
    counting.running_ns = {"a": 0}
    sampler = VcpuSampler(counting)
    sampler.sample()
    assert sampler.sample() == []
    counting.clock += 1.0
    counting.running_ns = {"a": 300_000_000}
    [a] = sampler.sample()
    assert a.window_s == 1.0 and a.vcpus[0].running == pytest.approx(0.3)


def test_vcpu_stats_is_built_from_the_counters_when_the_driver_reads_only_counters(
    counting: CountingDriver,
) -> None:
    counting.running_ns = {"a": 0}
    validate_driver_class("counting", CountingDriver)
    [stats] = counting.vcpu_stats("a", window=0.05)
    # The scripted counter runs at half the monotonic clock's pace.
    assert stats.window_s == 0.05 and stats.running == pytest.approx(0.5, abs=0.05)
    assert stats.halted is None


class StatsOnlyDriver(CountingDriver):
    """A driver written before counters: it implements only ``_vcpu_stats``."""

    name: ClassVar[str] = "stats-only"
    _vcpu_counters = Driver._vcpu_counters
    _all_vcpu_counters = Driver._all_vcpu_counters

    def _vcpu_stats(self, instance: InstanceReading, window_s: float) -> list[powerdrivers.VcpuStats]:
        return [powerdrivers.VcpuStats(0, 0.25, 0.75, 0.0, window_s)]


def test_a_driver_with_only_vcpu_stats_still_loads_and_samples_but_has_no_bulk_counters() -> None:
    validate_driver_class("stats-only", StatsOnlyDriver)
    with StatsOnlyDriver() as driver:
        driver.running_ns = {"a": 0}
        assert driver.vcpu_stats("a", window=0.01) == [powerdrivers.VcpuStats(0, 0.25, 0.75, 0.0, 0.01)]
        with pytest.raises(UnsupportedOperation, match="vcpu_counters"):
            VcpuSampler(driver).sample()


def test_bulk_counters_need_the_capability(counting: CountingDriver) -> None:
    class NoStats(CountingDriver):
        capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.START, Capability.POWER_OFF})

    with NoStats() as driver, pytest.raises(UnsupportedOperation, match="vcpu_stats"):
        driver.vcpu_counters()


def test_sampling_the_fake_reports_every_running_instance_with_every_field() -> None:
    with powerdrivers.load_driver("fake") as driver:
        running = {r.id for r in driver.list_instances() if r.power_state is PowerState.RUNNING}
        sampler = VcpuSampler(driver)
        assert sampler.sample() == []
        time.sleep(0.05)
        sampled = sampler.sample()
    assert {s.id for s in sampled} == running
    for instance in sampled:
        assert instance.window_s >= 0.05
        for stats in instance.vcpus:
            assert stats.running + stats.blocked + stats.waiting == pytest.approx(1.0)
            assert stats.halted is not None and 0 < stats.halted <= stats.blocked
            assert None not in (stats.halt_exits, stats.io_exits, stats.mmio_exits)
