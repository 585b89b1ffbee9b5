"""The fake's VCPU counters: every field measured, consistent, steady, and read in bulk."""

from __future__ import annotations

import time

import pytest
from fake_helpers import DriverFactory
from powerdrivers_fake import FakeDriver

from powerdrivers import HypervisorError, InstanceSpec, PowerState, VcpuSampler, stats_between


def test_every_field_is_measured_and_consistent(empty_driver: FakeDriver) -> None:
    empty_driver.spawn(InstanceSpec("busy", vcpus=4))
    for stats in empty_driver.vcpu_stats("busy", window=0.05):
        assert stats.running + stats.blocked + stats.waiting == pytest.approx(1.0)
        assert stats.halted is not None and 0 < stats.halted <= stats.blocked
        for rate in (stats.halt_exits, stats.io_exits, stats.mmio_exits):
            assert rate is not None and rate >= 0


def test_two_windows_agree_and_vcpus_differ(empty_driver: FakeDriver) -> None:
    empty_driver.spawn(InstanceSpec("steady", vcpus=2))
    first = empty_driver.vcpu_stats("steady", window=0.05)
    second = empty_driver.vcpu_stats("steady", window=0.1)
    for a, b in zip(first, second, strict=True):
        assert a.running == pytest.approx(b.running, abs=0.02)
        assert a.halted == pytest.approx(b.halted, abs=0.02)
    assert first[0].running != pytest.approx(first[1].running, abs=1e-6)


def test_bulk_counters_cover_every_running_instance_only(demo_driver: FakeDriver) -> None:
    running = {r.id for r in demo_driver.list_instances() if r.power_state is PowerState.RUNNING}
    assert running and len(running) < len(demo_driver.list_instances())
    readings = demo_driver.vcpu_counters()
    assert {reading.id for reading in readings} == running
    later = {reading.id: reading for reading in demo_driver.vcpu_counters()}
    for reading in readings:
        assert len(reading.vcpus) == len(later[reading.id].vcpus) >= 1
        assert later[reading.id].taken_at_s >= reading.taken_at_s


def test_a_sampler_window_matches_the_single_instance_statistics(empty_driver: FakeDriver) -> None:
    empty_driver.spawn(InstanceSpec("one"))
    sampler = VcpuSampler(empty_driver)
    sampler.sample()
    time.sleep(0.05)
    [sampled] = sampler.sample()
    [single] = empty_driver.vcpu_stats("one", window=0.05)
    assert sampled.name == "one" and sampled.vcpus[0].running == pytest.approx(single.running, abs=0.02)


def test_fail_vcpu_stats_fails_the_bulk_reading_too(make_driver: DriverFactory) -> None:
    driver = make_driver(fail_vcpu_stats="hypervisor")
    with pytest.raises(HypervisorError):
        driver.vcpu_counters()
    with pytest.raises(HypervisorError):
        VcpuSampler(driver).sample()


def test_counters_of_a_shared_state_file_agree_across_drivers(
    make_driver: DriverFactory, state_uri: str
) -> None:
    one, other = make_driver(state_uri), make_driver(state_uri)
    first = {reading.id: reading for reading in one.vcpu_counters()}
    time.sleep(0.05)
    for reading in other.vcpu_counters():
        [stats, *_] = stats_between(first[reading.id], reading)
        assert 0 < stats.running < 1 and stats.halted is not None
