"""powerdrivers states -d DRIVER: the driver's native-state table, with each row's why."""

from __future__ import annotations

import json

import pytest

from powerdrivers import load_driver_class
from powerdrivers._cli import main


def test_the_table_shows_each_native_state_with_its_why(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["states", "-d", "fake"]) == 0
    out = capsys.readouterr().out
    native = out[out.index("NATIVE STATE") :].splitlines()
    assert native[0].split() == ["NATIVE", "STATE", "REASON", "POWER", "STATE", "TRANSITION", "WHY"]
    rows = list(load_driver_class("fake").native_states)
    assert len(native) == 1 + len(rows)
    for line, row in zip(native[1:], rows, strict=True):
        assert line.startswith(row.native_state) and row.reason_label() in line
        assert line.endswith(row.why)


def test_json_gives_each_row_its_why_whether_any_reason_and_whether_forced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["-f", "json", "states", "-d", "fake"]) == 0
    native = json.loads(capsys.readouterr().out)["native_states"]
    rows = list(load_driver_class("fake").native_states)
    assert [(n["native_state"], n["why"], n["forced"]) for n in native] == [
        (row.native_state, row.why, row.forced) for row in rows
    ]
    assert all(n["why"] for n in native)
    destroyed = next(n for n in native if n["native_reason"] == "destroyed")
    assert (destroyed["any_reason"], destroyed["forced"]) == (False, True)
    running = next(n for n in native if n["native_state"] == "running")
    assert (running["native_reason"], running["any_reason"]) == (None, True)


def test_without_a_driver_there_is_no_native_table(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERDRIVERS_DRIVER", raising=False)
    assert main(["states"]) == 0
    assert "NATIVE STATE" not in capsys.readouterr().out
    assert main(["-f", "json", "states"]) == 0
    assert json.loads(capsys.readouterr().out)["native_states"] == []
