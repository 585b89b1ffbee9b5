"""The fake's native states: every one mapped, every reading uses one, and the unknown never raises."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import pytest
from fake_helpers import REACHABLE_STATES, DriverFactory, EventLog, spawn_in_state
from powerdrivers_fake import FAKE_NATIVE_STATES, FakeDriver, FakeNativeState

from powerdrivers import (
    OPERATION_TABLE,
    InvalidStateTransition,
    NativeStateTable,
    Operation,
    PowerState,
    Transition,
)


def test_every_native_state_is_mapped_to_a_known_canonical_state() -> None:
    assert isinstance(FakeDriver.native_states, NativeStateTable)
    assert FakeDriver.native_states is FAKE_NATIVE_STATES
    for native in FakeNativeState:
        assert FAKE_NATIVE_STATES.covers(native), f"{native} has no row"
        power_state, _ = FAKE_NATIVE_STATES.lookup(native)
        assert power_state is not PowerState.UNKNOWN


def test_the_table_has_no_row_for_anything_but_fake_native_states() -> None:
    rows = list(FAKE_NATIVE_STATES)
    assert {row.native_state for row in rows} == set(FakeNativeState)
    # One catch-all row per state; the one reason with a row of its own is a forced power-off.
    assert sorted(row.native_state for row in rows if row.native_reason is None) == sorted(FakeNativeState)
    assert [(row.native_state, row.native_reason, row.forced) for row in rows if row.native_reason] == [
        (FakeNativeState.SHUTOFF, "destroyed", True)
    ]
    assert all(row.why for row in rows)


def test_transitions_in_the_native_table_are_the_guest_dependent_ones() -> None:
    transitions = {row.native_state: row.transition for row in FAKE_NATIVE_STATES if row.transition}
    assert transitions == {
        FakeNativeState.SHUTTING_DOWN: Transition.SHUTTING_DOWN,
        FakeNativeState.REBOOTING: Transition.REBOOTING,
    }
    assert all(transition.guest_dependent for transition in transitions.values())


def test_every_reading_and_event_carries_a_fake_native_state(make_driver: DriverFactory) -> None:
    driver = make_driver(seed="empty", guest_delay=0.01)
    log = EventLog()
    driver.subscribe(log)
    seen = set()
    for state in REACHABLE_STATES:
        seen.add(spawn_in_state(driver, f"vm-{state}", state).native_state)
    driver.shutdown(f"vm-{PowerState.RUNNING}", timeout=5)
    driver.start(f"vm-{PowerState.RUNNING}")
    driver.reboot(f"vm-{PowerState.RUNNING}", timeout=5)
    readings = driver.list_instances()
    seen |= {r.native_state for r in readings}
    seen |= {e.native_state for e in log.events if e.native_state is not None}
    assert seen <= set(FakeNativeState)
    # Mid-way readings (shutting_down, rebooting) show up in the events.
    assert seen == set(FakeNativeState)
    assert all(r.power_state is not PowerState.UNKNOWN for r in readings)


def test_an_unknown_native_state_maps_to_unknown_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    native = f"levitating-{uuid.uuid4().hex[:8]}"  # the table warns once per pair and process
    with caplog.at_level(logging.WARNING):
        assert FAKE_NATIVE_STATES.lookup(native, "why") == (PowerState.UNKNOWN, None)
        reading = FAKE_NATIVE_STATES.reading("id-1", "odd", native, "why")
    assert (reading.power_state, reading.native_state, reading.native_reason) == (
        PowerState.UNKNOWN,
        native,
        "why",
    )
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and native in r.getMessage()]
    assert len(warnings) == 1


def _tamper(path: Path, name: str, native: str) -> None:
    document = json.loads(path.read_text())
    for record in document["instances"].values():
        if record["name"] == name:
            record["state"] = native
    path.write_text(json.dumps(document))


def test_an_instance_in_an_unknown_native_state_reads_as_unknown(
    make_driver: DriverFactory, state_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    driver = make_driver(state_uri)
    driver.list_instances()
    native = f"migrating-{uuid.uuid4().hex[:8]}"
    _tamper(Path(state_uri.removeprefix("fake://")), "web-1", native)
    with caplog.at_level(logging.WARNING):
        readings = {r.name: r for r in driver.list_instances()}
        reading = driver.get_instance("web-1")
    assert (reading.power_state, reading.transition, reading.native_state) == (
        PowerState.UNKNOWN,
        None,
        native,
    )
    assert readings["web-1"].power_state is PowerState.UNKNOWN
    assert readings["web-2"].power_state is PowerState.RUNNING
    assert any(native in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)


@pytest.mark.parametrize("operation", [Operation.PAUSE, Operation.START, Operation.REBOOT, Operation.SUSPEND])
def test_an_unknown_instance_refuses_what_the_table_refuses(
    make_driver: DriverFactory, state_uri: str, operation: Operation
) -> None:
    assert PowerState.UNKNOWN not in OPERATION_TABLE[operation].allowed_from
    driver = make_driver(state_uri)
    driver.list_instances()
    native = f"migrating-{uuid.uuid4().hex[:8]}"
    _tamper(Path(state_uri.removeprefix("fake://")), "web-1", native)
    method = {Operation.REBOOT: "reboot"}.get(operation, operation.value)
    with pytest.raises(InvalidStateTransition) as raised:
        getattr(driver, method)("web-1")
    assert "unknown" in str(raised.value)
    assert driver.get_instance("web-1").native_state == native


@pytest.mark.parametrize("operation", [Operation.POWER_OFF, Operation.DELETE])
def test_an_unknown_instance_can_be_powered_off_or_deleted(
    make_driver: DriverFactory, state_uri: str, operation: Operation
) -> None:
    assert PowerState.UNKNOWN in OPERATION_TABLE[operation].allowed_from
    driver = make_driver(state_uri)
    driver.list_instances()
    _tamper(Path(state_uri.removeprefix("fake://")), "web-1", f"migrating-{uuid.uuid4().hex[:8]}")
    if operation is Operation.POWER_OFF:
        assert driver.power_off("web-1").power_state is PowerState.SHUTOFF
    else:
        driver.delete("web-1")
        assert "web-1" not in {r.name for r in driver.list_instances()}
