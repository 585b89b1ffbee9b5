"""The dashboard's VCPU plots: the columns and paths drawn from known samples (pure values, no page)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from powerdrivers.keeper import VcpuSample
from powerdrivers.service._dashboard_timeline import WIDTH
from powerdrivers.service._dashboard_vcpu import COLUMNS, HEIGHT, PLOT_HEIGHT, build_vcpu_plots

END = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
#: 1000 s over 200 columns: each column is 5 s and 5 user units wide.
PERIOD = timedelta(seconds=1000)
START = END - PERIOD


def sample(
    seconds: float,
    running: float = 0.5,
    blocked: float = 0.3,
    waiting: float = 0.1,
    *,
    vcpu: int = 0,
    window: float = 5.0,
    halted: float | None = 0.2,
) -> VcpuSample:
    """A sample whose window ends ``seconds`` after the period's start."""
    return VcpuSample(
        instance_id="i-1",
        host="host-1",
        vcpu=vcpu,
        at=START + timedelta(seconds=seconds),
        window_s=window,
        running=running,
        blocked=blocked,
        waiting=waiting,
        halted=halted,
        halt_exits=None if halted is None else 12.0,
        io_exits=None,
        mmio_exits=None,
    )


def test_the_columns_share_the_timelines_axis() -> None:
    assert WIDTH == 1000.0 and COLUMNS == 200 and PLOT_HEIGHT == HEIGHT - 2
    plots = build_vcpu_plots([sample(10.0)], END, PERIOD, 15.0)
    assert (plots.start, plots.end) == (START, END)
    (column,) = plots.plots[0].columns
    # The window (5 s, 10 s] is the second column: x 5 to 10 of 1000, as the timeline draws 5 s to 10 s.
    assert (column.x, column.width) == (5.0, 5.0)
    assert (column.start, column.end) == (START + timedelta(seconds=5), START + timedelta(seconds=10))


def test_layers_stack_running_blocked_waiting_with_halted_at_blockeds_foot() -> None:
    plot = build_vcpu_plots([sample(10.0)], END, PERIOD, 15.0).plots[0]
    # 48 units are 100 %: running 0.5 is 24 high from the foot (50), blocked 0.3 (14.4) on it,
    # halted 0.2 (9.6) within blocked from its foot, waiting 0.1 (4.8) on top of blocked.
    assert plot.running_path == "M5.0 26.0h5.0v24.0h-5.0Z"
    assert plot.blocked_path == "M5.0 11.6h5.0v14.4h-5.0Z"
    assert plot.halted_path == "M5.0 16.4h5.0v9.6h-5.0Z"
    assert plot.waiting_path == "M5.0 6.8h5.0v4.8h-5.0Z"
    (column,) = plot.columns
    assert column.title == (
        "VCPU 0, 2026-12-03 11:43:25 to 11:43:30 UTC: "
        "running 50%, blocked 30% (halted 20%), waiting 10% (1 sample)"
    )


def test_a_window_over_two_columns_counts_in_both_weighted_by_overlap() -> None:
    # The first sample's window (7.5 s, 10 s] is within the column 5-10 s; the second's,
    # (5 s, 15 s], covers that column and the next whole.
    samples = [sample(10.0, 1.0, 0.0, 0.0, window=2.5, halted=None), sample(15.0, 0.0, 0.0, 1.0, window=10.0)]
    plot = build_vcpu_plots(samples, END, PERIOD, 15.0).plots[0]
    first, second = plot.columns
    assert (first.x, second.x) == (5.0, 10.0)
    # Column 5-10 s: 2.5 s of running 1.0 and 5 s of waiting 1.0.
    assert first.running == pytest.approx(2.5 / 7.5)
    assert first.waiting == pytest.approx(5.0 / 7.5)
    assert first.samples == 2
    # Halted is averaged over the samples that measured it only.
    assert first.halted == pytest.approx(0.2)
    assert (second.running, second.waiting, second.samples) == (0.0, 1.0, 1)


def test_only_samples_ending_in_the_period_are_drawn() -> None:
    samples = [sample(0.0), sample(-3.0), sample(1000.0, 0.9, 0.1, 0.0), sample(1000.5)]
    plot = build_vcpu_plots(samples, END, PERIOD, 15.0).plots[0]
    assert plot.samples == 1
    (column,) = plot.columns
    assert (column.x, column.running) == (995.0, 0.9)


def test_a_window_reaching_back_before_the_period_is_clipped_to_it() -> None:
    plot = build_vcpu_plots([sample(2.0, window=30.0)], END, PERIOD, 15.0).plots[0]
    assert [column.x for column in plot.columns] == [0.0]


def test_one_plot_per_vcpu_in_order_and_unmeasured_halted_is_not_drawn() -> None:
    samples = [sample(10.0, vcpu=2, halted=None), sample(10.0, vcpu=0, halted=None), sample(20.0, vcpu=2)]
    plots = build_vcpu_plots(samples, END, PERIOD, 15.0)
    assert [plot.vcpu for plot in plots.plots] == [0, 2]
    assert [plot.samples for plot in plots.plots] == [1, 2]
    assert [plot.last - START for plot in plots.plots] == [timedelta(seconds=10), timedelta(seconds=20)]
    assert plots.plots[0].halted_path == ""
    assert "halted" not in plots.plots[0].columns[0].title
    assert plots.halted_measured
    assert plots.note is None


def test_a_column_over_midnight_dates_both_ends() -> None:
    end = datetime(2026, 12, 3, 0, 0, 2, tzinfo=UTC)
    over_midnight = replace(sample(0.0), at=end)
    (column,) = build_vcpu_plots([over_midnight], end, PERIOD, 15.0).plots[0].columns
    assert column.title.startswith("VCPU 0, 2026-12-02 23:59:57 to 2026-12-03 00:00:02 UTC: ")


def test_a_zero_fraction_draws_nothing_of_its_layer() -> None:
    plot = build_vcpu_plots([sample(10.0, 1.0, 0.0, 0.0, halted=0.0)], END, PERIOD, 15.0).plots[0]
    assert plot.running_path == "M5.0 2.0h5.0v48.0h-5.0Z"
    assert (plot.blocked_path, plot.halted_path, plot.waiting_path) == ("", "", "")


def test_without_samples_a_note_says_why() -> None:
    assert build_vcpu_plots([], END, PERIOD, 0.0).note == "VCPU sampling is off."
    assert build_vcpu_plots([], END, PERIOD, 15.0).note == "No VCPU samples in this period."
    assert build_vcpu_plots([sample(-1.0)], END, PERIOD, 15.0).plots == ()


def test_a_read_cut_short_says_where_the_plots_begin() -> None:
    plots = build_vcpu_plots([sample(10.0), sample(20.0)], END, PERIOD, 15.0, complete=False)
    assert plots.note == (
        "The period holds more samples than a page draws: the plots begin at 2026-12-03 11:43:30 UTC."
    )
