"""The VCPU values: statistics with their breakdown of blocked, counters, and the arithmetic between them."""

from __future__ import annotations

import math

import pytest

from powerdrivers import InstanceVcpuCounters, VcpuCounters, VcpuStats, stats_between


def _reading(taken_at_s: float, *vcpus: VcpuCounters) -> InstanceVcpuCounters:
    return InstanceVcpuCounters("i-1", "web", taken_at_s, vcpus)


def test_new_fields_are_optional_and_none_when_not_given() -> None:
    stats = VcpuStats(0, 0.5, 0.3, 0.2, 1.0)
    assert (stats.halted, stats.halt_exits, stats.io_exits, stats.mmio_exits) == (None, None, None, None)
    assert tuple(stats[:5]) == (0, 0.5, 0.3, 0.2, 1.0)


def test_breakdown_is_validated_and_reported() -> None:
    stats = VcpuStats(1, 0.2, 0.7, 0.1, 2.0, halted=0.5, halt_exits=10.0, io_exits=3.25, mmio_exits=0.0)
    assert stats.to_dict() == {
        "vcpu": 1,
        "running": 0.2,
        "blocked": 0.7,
        "waiting": 0.1,
        "window_s": 2.0,
        "halted": 0.5,
        "halt_exits": 10.0,
        "io_exits": 3.25,
        "mmio_exits": 0.0,
    }
    with pytest.raises(ValueError, match="halted fraction"):
        VcpuStats(0, 0.5, 0.3, 0.2, 1.0, halted=0.4)
    with pytest.raises(ValueError, match="io_exits rate"):
        VcpuStats(0, 0.5, 0.3, 0.2, 1.0, io_exits=-1.0)
    with pytest.raises(ValueError, match="mmio_exits rate"):
        VcpuStats(0, 0.5, 0.3, 0.2, 1.0, mmio_exits=math.inf)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_counters_are_whole_numbers(bad: object) -> None:
    with pytest.raises(ValueError, match="whole number"):
        VcpuCounters(0, 0, bad)  # type: ignore[arg-type]


def test_stats_between_two_readings() -> None:
    first = _reading(10.0, VcpuCounters(0, 1_000, 0, halted_ns=0, halt_exits=0, io_exits=5, mmio_exits=0))
    second = _reading(
        12.0,
        VcpuCounters(0, 1_000 + 500_000_000, 1_000_000_000, halted_ns=400_000_000, halt_exits=4, io_exits=25,
                     mmio_exits=8),
    )  # fmt: skip
    [stats] = stats_between(first, second)
    assert stats.vcpu == 0
    assert stats.window_s == 2.0
    assert stats.running == pytest.approx(0.25)
    assert stats.waiting == pytest.approx(0.5)
    assert stats.blocked == pytest.approx(0.25)
    assert stats.halted == pytest.approx(0.2)
    assert (stats.halt_exits, stats.io_exits, stats.mmio_exits) == (2.0, 10.0, 4.0)


def test_stats_between_reports_the_window_asked_for_and_leaves_unmeasured_fields_none() -> None:
    first = _reading(0.0, VcpuCounters(0, 0, 0), VcpuCounters(1, 0, 0))
    second = _reading(1.0, VcpuCounters(1, 300_000_000, 0), VcpuCounters(0, 1_000_000_000, 0))
    stats = stats_between(first, second, window_s=0.9)
    assert [s.vcpu for s in stats] == [0, 1]
    assert [s.window_s for s in stats] == [0.9, 0.9]
    assert stats[0].running == 1.0 and stats[0].blocked == 0.0
    assert stats[1].blocked == pytest.approx(0.7)
    assert all(s.halted is None and s.io_exits is None for s in stats)


def test_stats_between_keeps_halted_within_blocked_and_uses_a_measured_blocked() -> None:
    first = _reading(0.0, VcpuCounters(0, 0, 0, blocked_ns=0, halted_ns=0))
    # Halt time that began before the window overshoots what is left of it.
    second = _reading(
        1.0, VcpuCounters(0, 600_000_000, 100_000_000, blocked_ns=200_000_000, halted_ns=900_000_000)
    )
    [stats] = stats_between(first, second)
    assert stats.blocked == pytest.approx(0.2)
    assert stats.halted == pytest.approx(0.2)


def test_stats_between_leaves_out_a_hot_plugged_vcpu_and_counts_reset_counters_as_no_time() -> None:
    first = _reading(0.0, VcpuCounters(0, 5_000_000_000, 0))
    second = _reading(1.0, VcpuCounters(0, 100, 0), VcpuCounters(1, 1_000, 0))
    stats = stats_between(first, second)
    assert [s.vcpu for s in stats] == [0]
    assert stats[0].running == 0.0


def test_stats_between_needs_a_later_second_reading() -> None:
    reading = _reading(5.0, VcpuCounters(0, 0, 0))
    with pytest.raises(ValueError, match="not later"):
        stats_between(reading, reading)
