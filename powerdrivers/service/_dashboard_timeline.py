"""An instance's timeline for the dashboard: its power states over a period, as bands to draw.

Pure values computed from history records (newest first, as the store returns them); the
template turns them into SVG. Nothing here touches a store or HTTP.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from powerdrivers import PowerState, Transition
from powerdrivers.keeper import HistoryRecord, RecordKind

#: The periods a timeline can show, by the name the page's buttons use.
PERIODS: Final = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7)}
DEFAULT_PERIOD: Final = "1h"
#: The SVG's drawing width in user units (it scales to the page's width).
WIDTH: Final = 1000.0


@dataclass(frozen=True, slots=True)
class Band:
    """One stretch of time the instance spent in one power state."""

    state: str
    start: datetime
    end: datetime
    x: float
    width: float
    title: str


@dataclass(frozen=True, slots=True)
class Marker:
    """A point in time something happened to the instance: an action ended, the policy changed."""

    kind: str
    x: float
    title: str


@dataclass(frozen=True, slots=True)
class Timeline:
    """What the page draws: bands in time order, markers, and the period's ends."""

    start: datetime
    end: datetime
    bands: tuple[Band, ...]
    markers: tuple[Marker, ...]
    states: tuple[str, ...]
    """The states the bands show, in the legend's order."""
    transitions: tuple[Band, ...] = ()
    """The stretches the instance spent in a transition (shutting down, ...), drawn over the bands."""
    ongoing: Band | None = None
    """What is in progress now (a transition or an open action), drawn above the bands."""


def _shown(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC")


def _x(moment: datetime, start: datetime, span: float) -> float:
    return round((moment - start).total_seconds() / span * WIDTH, 2)


def _state_at_start(
    records: Sequence[HistoryRecord], start: datetime
) -> tuple[PowerState | None, Transition | None]:
    """Return the state (and transition) the instance was in when the period started, if the records say."""
    for record in records:  # newest first: the first observation at or before the start wins
        if record.kind is RecordKind.OBSERVED and record.time <= start:
            return record.to_state, record.transition
    earliest = [r for r in records if r.kind is RecordKind.OBSERVED and r.time > start]
    return (earliest[-1].from_state if earliest else None), None


def _marker(record: HistoryRecord, start: datetime, span: float) -> Marker | None:
    at = f"at {_shown(record.time)}"
    by = f" by {record.requested_by}" if record.requested_by else ""
    if record.kind is RecordKind.ACTION:
        title = f"{record.operation}: {record.outcome}{by} {at}"
    elif record.kind is RecordKind.POLICY:
        title = f"policy {record.detail}{by} {at}"
    elif record.kind is RecordKind.QUARANTINE:
        title = f"quarantine: {record.detail or 'released'}{by} {at}"
    else:
        return None
    return Marker(kind=record.kind.value, x=_x(record.time, start, span), title=title)


def _ongoing(doing: tuple[str, datetime] | None, start: datetime, end: datetime, span: float) -> Band | None:
    if doing is None:
        return None
    what, since = doing
    since = min(max(since, start), end)
    x = _x(since, start, span)
    title = f"{what} since {_shown(since)}"
    return Band(what, since, end, x, max(round(WIDTH - x, 2), 2.0), title)


def build_timeline(
    records: Sequence[HistoryRecord],
    end: datetime,
    period: timedelta,
    ongoing: tuple[str, datetime] | None = None,
) -> Timeline:
    """Return the timeline of ``records`` (newest first) over ``period`` up to ``end``.

    A band starts at each observed change; the first one starts with the period if an earlier
    record says what the state then was, else at the first record. A vanished instance has no
    band after it vanished. ``ongoing`` is what is in progress now and since when (a transition,
    an open action): history records only what ended.
    """
    start = end - period
    span = period.total_seconds()
    in_period = [r for r in reversed(records) if start < r.time <= end]
    bands: list[Band] = []
    transitions: list[Band] = []
    state, transition = _state_at_start(records, start)
    since = transition_since = start

    def band(what: str, begun: datetime, until: datetime) -> Band:
        x = _x(begun, start, span)
        title = f"{what} from {_shown(begun)} to {_shown(until)}"
        return Band(what, begun, until, x, max(round(_x(until, start, span) - x, 2), 1.0), title)

    for record in in_period:
        if record.kind is not RecordKind.OBSERVED:
            continue
        if record.to_state is not state:
            if state is not None and record.time > since:
                bands.append(band(state.value, since, record.time))
            state, since = record.to_state, record.time
        if record.transition is not transition:
            if transition is not None:
                transitions.append(band(transition.value, transition_since, record.time))
            transition, transition_since = record.transition, record.time
    if state is not None and end > since:
        bands.append(band(state.value, since, end))
    if transition is not None:
        transitions.append(band(transition.value, transition_since, end))
    markers = tuple(m for m in (_marker(r, start, span) for r in in_period) if m is not None)
    states = tuple(s.value for s in PowerState if any(b.state == s.value for b in bands))
    return Timeline(
        start=start,
        end=end,
        bands=tuple(bands),
        markers=markers,
        states=states,
        transitions=tuple(transitions),
        ongoing=_ongoing(ongoing, start, end, span),
    )
