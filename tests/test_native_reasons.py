"""A native-state table tells "no reason" (NO_REASON) apart from "any reason" (None)."""

from __future__ import annotations

import pickle

import pytest

from powerdrivers import NO_REASON, NativeMapping, NativeStateTable, PowerState, Transition

TABLE = NativeStateTable(
    "reasons",
    [
        # A domain reported "shutoff" with no reason was never started; with a reason, it stopped.
        NativeMapping("shutoff", NO_REASON, PowerState.SHUTOFF, None, why="Defined, never started."),
        NativeMapping("shutoff", "destroyed", PowerState.SHUTOFF, None, forced=True),
        NativeMapping("shutoff", None, PowerState.SHUTOFF, None, why="Stopped, for any other reason."),
        NativeMapping("running", None, PowerState.RUNNING, None),
        NativeMapping("paused", NO_REASON, PowerState.PAUSED, None),
        NativeMapping("crashed", "panicked", PowerState.CRASHED, None),
        NativeMapping("ending", NO_REASON, PowerState.RUNNING, Transition.SHUTTING_DOWN, forced=True),
    ],
)


def test_no_reason_is_neither_none_nor_a_string() -> None:
    assert NO_REASON is not None and not isinstance(NO_REASON, str)
    assert repr(NO_REASON) == "powerdrivers.NO_REASON"
    assert pickle.loads(pickle.dumps(NO_REASON)) is NO_REASON


def test_a_reading_without_a_reason_takes_the_no_reason_row() -> None:
    assert TABLE.row_for("shutoff") == TABLE.row_for("shutoff", None)
    assert TABLE.row_for("shutoff", None) is next(row for row in TABLE if row.native_reason is NO_REASON)
    assert TABLE.lookup("ending", None) == (PowerState.RUNNING, Transition.SHUTTING_DOWN)
    assert TABLE.forced("ending") and not TABLE.forced("shutoff")


def test_any_reason_covers_the_reasons_without_a_row_of_their_own() -> None:
    any_reason = TABLE.row_for("shutoff", "whatever")
    assert any_reason is not None and any_reason.why == "Stopped, for any other reason."
    assert TABLE.forced("shutoff", "destroyed") and not TABLE.forced("shutoff", "whatever")
    # Without a NO_REASON row, a reading with no reason falls to the catch-all, as always.
    assert TABLE.lookup("running", None) == (PowerState.RUNNING, None)
    assert TABLE.lookup("running", "booted") == (PowerState.RUNNING, None)


def test_a_no_reason_row_does_not_cover_readings_with_a_reason(caplog: pytest.LogCaptureFixture) -> None:
    assert TABLE.covers("paused") and not TABLE.covers("paused", "user")
    assert TABLE.lookup("paused", "user") == (PowerState.UNKNOWN, None)
    assert "unmapped native state 'paused' (reason 'user')" in caplog.text
    # Nor does a row of one reason cover the absence of one.
    assert not TABLE.covers("crashed") and TABLE.covers("crashed", "panicked")


def test_a_no_reason_row_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="mapped twice"):
        NativeStateTable(
            "twice",
            [
                NativeMapping("off", NO_REASON, PowerState.SHUTOFF, None),
                NativeMapping("off", NO_REASON, PowerState.SHUTOFF, None),
            ],
        )


def test_rows_show_their_reason_as_tables_do() -> None:
    assert [row.reason_label() for row in TABLE if row.native_state == "shutoff"] == [
        "(none)",
        "destroyed",
        "(any)",
    ]
