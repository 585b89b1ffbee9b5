"""An instance's VCPU plots for the dashboard: per VCPU, how its time went over a period.

Pure values computed from the keeper's VCPU samples (``VcpuSample``: a window ending at ``at``,
with the fractions of it spent running, blocked and waiting for a physical CPU, and, where the
driver measures it, halted within blocked). The period is cut into columns on the same axis as
the power timeline (``WIDTH`` user units from the period's start to its end); a column shows the
average of the samples whose windows overlap it, weighted by the overlap, stacked from the
bottom: running, blocked (halted drawn within it, at its foot), waiting. The template turns the
values into SVG. Nothing here touches a store or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Protocol

from powerdrivers.service._dashboard_timeline import WIDTH

#: Columns a plot has at most (a sample interval longer than a column leaves none empty between).
COLUMNS: Final = 200
#: The SVG's drawing height in user units; the plot's values fill ``PLOT_TOP`` to ``HEIGHT``.
HEIGHT: Final = 50.0
PLOT_TOP: Final = 2.0
PLOT_HEIGHT: Final = HEIGHT - PLOT_TOP


class SampleLike(Protocol):
    """What a plot reads of a sample (``powerdrivers.keeper.VcpuSample`` has it)."""

    @property
    def vcpu(self) -> int:
        """The VCPU's index."""

    @property
    def at(self) -> datetime:
        """The end of the sample's window (aware, UTC)."""

    @property
    def window_s(self) -> float:
        """The window's length in seconds."""

    @property
    def running(self) -> float:
        """Fraction of the window running."""

    @property
    def blocked(self) -> float:
        """Fraction of the window blocked."""

    @property
    def waiting(self) -> float:
        """Fraction of the window waiting for a physical CPU."""

    @property
    def halted(self) -> float | None:
        """Fraction of the window halted (within blocked); ``None`` where not measured."""


@dataclass(frozen=True, slots=True)
class Column:
    """One stretch of the period: the weighted average of the samples overlapping it."""

    x: float
    width: float
    start: datetime
    end: datetime
    samples: int
    running: float
    blocked: float
    waiting: float
    halted: float | None
    title: str


@dataclass(frozen=True, slots=True)
class VcpuPlot:
    """One VCPU's plot: its columns (only those with samples) and one SVG path per layer."""

    vcpu: int
    samples: int
    last: datetime
    """The end of the newest window drawn."""
    columns: tuple[Column, ...]
    running_path: str
    blocked_path: str
    halted_path: str
    waiting_path: str


@dataclass(frozen=True, slots=True)
class VcpuPlots:
    """What the page draws: one plot per VCPU sampled in the period, or a note saying why none."""

    start: datetime
    end: datetime
    interval: float
    plots: tuple[VcpuPlot, ...]
    note: str | None
    halted_measured: bool
    """Whether any sample measured halted (the legend shows it only then)."""


def _shown(moment: datetime, since: datetime | None = None) -> str:
    """Return the moment as the page shows times; its time only when ``since`` is the same day."""
    same_day = since is not None and since.date() == moment.date()
    return moment.strftime("%H:%M:%S" if same_day else "%Y-%m-%d %H:%M:%S")


def _percent(value: float) -> str:
    return f"{value * 100:.0f}%"


def _bar(x: float, width: float, bottom: float, fraction: float) -> tuple[str, float]:
    """Return the path of a bar of ``fraction`` standing on ``bottom`` (a fraction), and its top."""
    height = round(fraction * PLOT_HEIGHT, 2)
    top = bottom + fraction
    if height <= 0:
        return "", top
    y = round(HEIGHT - top * PLOT_HEIGHT, 2)
    return f"M{x} {y}h{width}v{height}h{-width}Z", top


def _column(vcpu: int, index: int, start: datetime, step: timedelta, found: _Sums) -> Column:
    begun = start + step * index
    ended = begun + step
    x = round(index * WIDTH / COLUMNS, 2)
    width = round(WIDTH / COLUMNS, 2)
    weight = found.weight
    running, blocked, waiting = found.running / weight, found.blocked / weight, found.waiting / weight
    halted = found.halted / found.halted_weight if found.halted_weight > 0 else None
    halted_text = f" (halted {_percent(halted)})" if halted is not None else ""
    title = (
        f"VCPU {vcpu}, {_shown(begun)} to {_shown(ended, begun)} UTC: running {_percent(running)}, "
        f"blocked {_percent(blocked)}{halted_text}, waiting {_percent(waiting)}"
        f" ({found.samples} sample{'s' if found.samples != 1 else ''})"
    )
    return Column(x, width, begun, ended, found.samples, running, blocked, waiting, halted, title)


@dataclass(slots=True)
class _Sums:
    weight: float = 0.0
    running: float = 0.0
    blocked: float = 0.0
    waiting: float = 0.0
    halted: float = 0.0
    halted_weight: float = 0.0
    samples: int = 0


def _plot(vcpu: int, samples: Sequence[SampleLike], start: datetime, end: datetime) -> VcpuPlot:
    span = (end - start).total_seconds()
    step = (end - start) / COLUMNS
    sums: dict[int, _Sums] = {}
    count = 0
    for sample in samples:
        count += 1
        # The window (at - window_s, at], clipped to the period, in seconds from its start.
        window_end = min((sample.at - start).total_seconds(), span)
        window_start = max(window_end - sample.window_s, 0.0)
        first = int(window_start / span * COLUMNS)
        last = min(int(window_end / span * COLUMNS), COLUMNS - 1)
        for index in range(first, last + 1):
            low, high = index * span / COLUMNS, (index + 1) * span / COLUMNS
            weight = min(high, window_end) - max(low, window_start)
            if weight <= 0:
                continue  # the window ends on this column's first instant
            found = sums.setdefault(index, _Sums())
            found.weight += weight
            found.running += sample.running * weight
            found.blocked += sample.blocked * weight
            found.waiting += sample.waiting * weight
            if sample.halted is not None:
                found.halted += sample.halted * weight
                found.halted_weight += weight
            found.samples += 1
    columns = tuple(_column(vcpu, index, start, step, sums[index]) for index in sorted(sums))
    layers: dict[str, list[str]] = {"running": [], "blocked": [], "halted": [], "waiting": []}
    for column in columns:
        running, top = _bar(column.x, column.width, 0.0, column.running)
        blocked, blocked_top = _bar(column.x, column.width, top, column.blocked)
        if column.halted is not None:
            halted, _ = _bar(column.x, column.width, top, min(column.halted, column.blocked))
            layers["halted"].append(halted)
        waiting, _ = _bar(column.x, column.width, blocked_top, column.waiting)
        layers["running"].append(running)
        layers["blocked"].append(blocked)
        layers["waiting"].append(waiting)
    paths = {name: "".join(parts) for name, parts in layers.items()}
    return VcpuPlot(
        vcpu=vcpu,
        samples=count,
        last=max(sample.at for sample in samples),
        columns=columns,
        running_path=paths["running"],
        blocked_path=paths["blocked"],
        halted_path=paths["halted"],
        waiting_path=paths["waiting"],
    )


def build_vcpu_plots(
    samples: Sequence[SampleLike],
    end: datetime,
    period: timedelta,
    interval: float,
    complete: bool = True,
) -> VcpuPlots:
    """Return one plot per VCPU of ``samples`` over ``period`` up to ``end``.

    Only samples whose window ends in the period (``start < at <= end``) are drawn. ``interval``
    is the keeper's sample interval (0: sampling is off), which the note without samples names;
    ``complete`` false says the samples are the period's newest ones only (a read's limit).
    """
    start = end - period
    shown = [sample for sample in samples if start < sample.at <= end]
    by_vcpu: dict[int, list[SampleLike]] = {}
    for sample in shown:
        by_vcpu.setdefault(sample.vcpu, []).append(sample)
    plots = tuple(_plot(vcpu, by_vcpu[vcpu], start, end) for vcpu in sorted(by_vcpu))
    note = None
    if not plots:
        note = "VCPU sampling is off." if interval <= 0 else "No VCPU samples in this period."
    elif not complete:
        first = min(sample.at for sample in shown)
        note = f"The period holds more samples than a page draws: the plots begin at {_shown(first)} UTC."
    return VcpuPlots(
        start=start,
        end=end,
        interval=interval,
        plots=plots,
        note=note,
        halted_measured=any(sample.halted is not None for sample in shown),
    )
