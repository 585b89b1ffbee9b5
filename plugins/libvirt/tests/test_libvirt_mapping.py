"""The libvirt tables are complete for the installed libvirt, and say what the docs say."""

from __future__ import annotations

import logging

import libvirt
import pytest
from powerdrivers_libvirt._errors import CATEGORIES, NOT_CODES
from powerdrivers_libvirt._events import EVENT_TABLE, EVENT_TYPES, detail_constants, event_meaning
from powerdrivers_libvirt._states import MANAGED_SAVE, NATIVE_STATES, STATES, native_names, reason_constants

from powerdrivers import EventKind, PowerState, Transition

ROWS = {(row.native_state, row.native_reason): row for row in NATIVE_STATES}


def test_the_state_table_names_every_virdomainstate() -> None:
    # virDomainState is numbered from 0 without gaps; libvirt exposes no LAST
    # constant, so a new state shows up as a reason-less number: check both ends.
    assert sorted(getattr(libvirt, name) for name in STATES) == list(range(len(STATES)))
    assert {state for state, _ in ROWS} == set(STATES.values())


@pytest.mark.parametrize("state_constant", sorted(STATES))
def test_every_installed_reason_has_its_own_row(state_constant: str) -> None:
    reasons = reason_constants(state_constant)
    assert reasons, state_constant
    for reason_constant in reasons:
        pair = native_names(getattr(libvirt, state_constant), getattr(libvirt, reason_constant))
        assert pair in ROWS, f"{state_constant}/{reason_constant} ({pair}) has no row in the libvirt table"


def test_every_row_has_a_justification() -> None:
    assert all(row.why for row in NATIVE_STATES)


@pytest.mark.parametrize(
    ("state", "reason", "power_state", "transition"),
    [
        ("shutdown", "user", PowerState.RUNNING, Transition.SHUTTING_DOWN),
        ("shutdown", "unknown", PowerState.RUNNING, Transition.SHUTTING_DOWN),
        ("blocked", "unknown", PowerState.RUNNING, None),
        ("pmsuspended", "unknown", PowerState.SUSPENDED, None),
        ("shutoff", MANAGED_SAVE, PowerState.SUSPENDED, None),
        ("shutoff", "saved", PowerState.SHUTOFF, None),
        ("shutoff", "crashed", PowerState.SHUTOFF, None),
        ("crashed", "panicked", PowerState.CRASHED, None),
        ("paused", "crashed", PowerState.CRASHED, None),
        ("paused", "starting_up", PowerState.PAUSED, Transition.POWERING_ON),
        ("nostate", "unknown", PowerState.UNKNOWN, None),
    ],
)
def test_the_seed_points_concretely(
    state: str, reason: str, power_state: PowerState, transition: Transition | None
) -> None:
    assert NATIVE_STATES.lookup(state, reason) == (power_state, transition)


def test_unknown_codes_read_unknown_with_the_raw_values_and_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="powerdrivers.native"):
        state, reason = native_names(libvirt.VIR_DOMAIN_RUNNING, 999)
        reading = NATIVE_STATES.reading("id", "vm", state, reason)
        unknown_state = NATIVE_STATES.reading("id", "vm", *native_names(77, 0))
    assert (reading.power_state, reading.native_state, reading.native_reason) == (
        PowerState.UNKNOWN,
        "running",
        "999",
    )
    assert (unknown_state.power_state, unknown_state.native_state) == (PowerState.UNKNOWN, "77")
    assert any("999" in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("event_type", EVENT_TYPES)
def test_every_installed_lifecycle_event_detail_is_mapped(event_type: str) -> None:
    for constant in detail_constants(event_type):
        detail = constant.removeprefix(f"VIR_DOMAIN_EVENT_{event_type}_")
        assert (event_type, detail) in EVENT_TABLE, f"{constant} is not in the event table"
        meaning = event_meaning(
            getattr(libvirt, f"VIR_DOMAIN_EVENT_{event_type}"), getattr(libvirt, constant)
        )
        assert not isinstance(meaning, str)
        if meaning is not None:
            _, state, reason = meaning
            assert (state, reason) in ROWS, f"{constant} produces an unmapped native pair"


def test_unknown_events_are_described_not_raised() -> None:
    assert isinstance(event_meaning(99, 0), str)
    assert event_meaning(libvirt.VIR_DOMAIN_EVENT_STOPPED, libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED) == (
        EventKind.STOPPED, "shutoff", "destroyed",
    )  # fmt: skip


def test_every_installed_error_code_is_categorised() -> None:
    installed = {name for name in dir(libvirt) if name.startswith("VIR_ERR_")} - NOT_CODES
    unmapped = sorted(installed - set(CATEGORIES))
    assert not unmapped, f"libvirt error codes without a translation: {unmapped}"
