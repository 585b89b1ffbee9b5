"""The timeline's bands and markers, computed from history records as the store returns them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from powerdrivers import PowerState, Transition
from powerdrivers.keeper import Cause, HistoryRecord, RecordKind
from powerdrivers.service._dashboard_timeline import WIDTH, build_timeline

END = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOUR = timedelta(hours=1)


def _observed(
    number: int, minutes_ago: float, to: PowerState | None, previous: PowerState | None
) -> HistoryRecord:
    return HistoryRecord(
        id=number,
        instance_id="vm",
        host="lab",
        time=END - timedelta(minutes=minutes_ago),
        kind=RecordKind.OBSERVED,
        from_state=previous,
        to_state=to,
        cause=Cause.OUT_OF_BAND,
    )


def _began(
    number: int, minutes_ago: float, state: PowerState, transition: Transition | None
) -> HistoryRecord:
    return HistoryRecord(
        id=number,
        instance_id="vm",
        host="lab",
        time=END - timedelta(minutes=minutes_ago),
        kind=RecordKind.OBSERVED,
        from_state=state,
        to_state=state,
        cause=Cause.OPERATION,
        transition=transition,
    )


def _newest_first(*records: HistoryRecord) -> list[HistoryRecord]:
    return sorted(records, key=lambda record: record.id, reverse=True)


def test_a_state_recorded_before_the_period_opens_the_first_band_at_the_periods_start() -> None:
    records = _newest_first(
        _observed(1, 90, PowerState.RUNNING, None),
        _observed(2, 30, PowerState.SHUTOFF, PowerState.RUNNING),
        _observed(3, 15, PowerState.RUNNING, PowerState.SHUTOFF),
    )
    timeline = build_timeline(records, END, HOUR)

    assert [band.state for band in timeline.bands] == ["running", "shutoff", "running"]
    assert [band.x for band in timeline.bands] == [0.0, 500.0, 750.0]
    assert [band.width for band in timeline.bands] == [500.0, 250.0, 250.0]
    assert timeline.bands[0].title == "running from 2026-01-01 11:00:00 UTC to 2026-01-01 11:30:00 UTC"
    assert timeline.states == ("running", "shutoff")


def test_without_an_earlier_record_the_first_change_says_what_the_state_was() -> None:
    records = _newest_first(_observed(5, 45, PowerState.PAUSED, PowerState.RUNNING))
    timeline = build_timeline(records, END, HOUR)
    assert [(band.state, band.x, band.width) for band in timeline.bands] == [
        ("running", 0.0, 250.0),
        ("paused", 250.0, 750.0),
    ]


def test_an_instance_first_seen_in_the_period_starts_when_it_appeared() -> None:
    timeline = build_timeline([_observed(1, 6, PowerState.RUNNING, None)], END, HOUR)
    assert [(band.state, band.x, band.width) for band in timeline.bands] == [("running", 900.0, 100.0)]


def test_a_vanished_instance_has_no_band_after_it_vanished() -> None:
    records = _newest_first(
        _observed(1, 50, PowerState.SHUTOFF, None),
        _observed(2, 20, None, PowerState.SHUTOFF),
    )
    timeline = build_timeline(records, END, HOUR)
    assert [(band.state, band.width) for band in timeline.bands] == [("shutoff", 500.0)]


def test_records_outside_the_period_draw_nothing_but_the_state_they_leave() -> None:
    records = _newest_first(_observed(1, 24 * 60, PowerState.CRASHED, PowerState.RUNNING))
    timeline = build_timeline(records, END, HOUR)
    assert [(band.state, band.x, band.width) for band in timeline.bands] == [("crashed", 0.0, WIDTH)]
    assert build_timeline([], END, HOUR).bands == ()


def test_actions_policy_changes_and_quarantines_are_markers_with_who_asked() -> None:
    action = HistoryRecord(
        id=2,
        instance_id="vm",
        host="lab",
        time=END - timedelta(minutes=30),
        kind=RecordKind.ACTION,
        operation="shutdown",
        outcome="done",
        requested_by="ops",
    )
    policy = HistoryRecord(
        id=3,
        instance_id="vm",
        host="lab",
        time=END - timedelta(minutes=6),
        kind=RecordKind.POLICY,
        requested_by="ops",
        detail="manual -> always",
    )
    host = HistoryRecord(id=4, instance_id="vm", host="lab", time=END, kind=RecordKind.HOST, detail="x")
    timeline = build_timeline(_newest_first(action, policy, host), END, HOUR)
    assert [(marker.kind, marker.x, marker.title) for marker in timeline.markers] == [
        ("action", 500.0, "shutdown: done by ops at 2026-01-01 11:30:00 UTC"),
        ("policy", 900.0, "policy manual -> always by ops at 2026-01-01 11:54:00 UTC"),
    ]


def test_what_is_in_progress_is_drawn_from_when_it_began_to_the_end() -> None:
    records = [_observed(1, 90, PowerState.RUNNING, None)]
    timeline = build_timeline(records, END, HOUR, ("shutdown running", END - timedelta(minutes=15)))
    assert timeline.ongoing is not None
    assert (timeline.ongoing.state, timeline.ongoing.x, timeline.ongoing.width) == (
        "shutdown running",
        750.0,
        250.0,
    )
    assert timeline.ongoing.title == "shutdown running since 2026-01-01 11:45:00 UTC"
    earlier = build_timeline(records, END, HOUR, ("shutting_down", END - 3 * HOUR)).ongoing
    assert earlier is not None and (earlier.x, earlier.width) == (0.0, WIDTH)
    assert build_timeline(records, END, HOUR).ongoing is None


def test_transitions_recorded_in_the_history_are_drawn_over_their_state() -> None:
    records = _newest_first(
        _observed(1, 90, PowerState.RUNNING, None),
        _began(2, 30, PowerState.RUNNING, Transition.SHUTTING_DOWN),
        _observed(3, 24, PowerState.SHUTOFF, PowerState.RUNNING),
        _began(4, 6, PowerState.SHUTOFF, Transition.POWERING_ON),
    )
    timeline = build_timeline(records, END, HOUR)
    # A transition beginning is no change of state: one running band, not two.
    assert [(band.state, band.x, band.width) for band in timeline.bands] == [
        ("running", 0.0, 600.0),
        ("shutoff", 600.0, 400.0),
    ]
    assert [(band.state, band.x, band.width) for band in timeline.transitions] == [
        ("shutting_down", 500.0, 100.0),
        ("powering_on", 900.0, 100.0),
    ]
    assert timeline.transitions[0].title == (
        "shutting_down from 2026-01-01 11:30:00 UTC to 2026-01-01 11:36:00 UTC"
    )


def test_a_transition_under_way_when_the_period_opens_is_drawn_from_its_start() -> None:
    records = _newest_first(
        _began(1, 90, PowerState.RUNNING, Transition.REBOOTING),
        _began(2, 45, PowerState.RUNNING, None),
    )
    timeline = build_timeline(records, END, HOUR)
    assert [(band.state, band.x, band.width) for band in timeline.transitions] == [("rebooting", 0.0, 250.0)]
    assert [(band.state, band.x, band.width) for band in timeline.bands] == [("running", 0.0, 1000.0)]
