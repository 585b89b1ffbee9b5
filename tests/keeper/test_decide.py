"""The keeper's pure judgement: causes, decisions per policy, backoff and settings."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from powerdrivers import EventKind, InvalidOption, Operation, PowerState, Transition
from powerdrivers.keeper import Cause, Policy
from powerdrivers.keeper._backoff import backoff_delay, backoff_until, consecutive_failures
from powerdrivers.keeper._decide import classify, decide, is_desired
from powerdrivers.keeper._settings import KeeperSettings

_S = PowerState
NOW = datetime(2026, 1, 1, tzinfo=UTC)


# -- causes -----------------------------------------------------------------------------------


def test_an_attributed_event_is_an_operation_whatever_it_looks_like() -> None:
    assert classify(EventKind.STOPPED, _S.SHUTOFF, "destroyed", Operation.POWER_OFF) is Cause.OPERATION


@pytest.mark.parametrize(
    ("kind", "state", "reason"),
    [
        (EventKind.CRASHED, _S.CRASHED, "panicked"),
        (EventKind.STOPPED, _S.SHUTOFF, "crashed"),  # libvirt on_crash=destroy
        (None, _S.CRASHED, None),  # found by a resync
    ],
)
def test_crashes_are_told_by_event_state_or_native_reason(
    kind: EventKind | None, state: PowerState, reason: str | None
) -> None:
    assert classify(kind, state, reason, None) is Cause.CRASH


def test_a_rebooted_event_or_a_start_right_after_a_stop_is_a_guest_reboot() -> None:
    assert classify(EventKind.REBOOTED, _S.RUNNING, "booted", None) is Cause.GUEST_REBOOT
    after_stop = classify(EventKind.STARTED, _S.RUNNING, "booted", None, follows_quick_stop=True)
    assert after_stop is Cause.GUEST_REBOOT
    assert classify(EventKind.STARTED, _S.RUNNING, "booted", None) is Cause.OUT_OF_BAND


def test_unattributed_events_and_resync_finds_are_out_of_band() -> None:
    assert classify(EventKind.STOPPED, _S.SHUTOFF, "destroyed", None) is Cause.OUT_OF_BAND
    assert classify(None, _S.SHUTOFF, "shutdown", None) is Cause.OUT_OF_BAND


# -- decisions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "state", "cause", "expected"),
    [
        (Policy.ALWAYS, _S.SHUTOFF, Cause.OUT_OF_BAND, Operation.START),
        (Policy.ALWAYS, _S.CRASHED, Cause.CRASH, Operation.START),
        (Policy.ALWAYS, _S.SHUTOFF, None, Operation.START),
        (Policy.ALWAYS, _S.RUNNING, Cause.OUT_OF_BAND, None),
        (Policy.ON_FAILURE, _S.SHUTOFF, Cause.OUT_OF_BAND, None),
        (Policy.ON_FAILURE, _S.SHUTOFF, Cause.CRASH, Operation.START),
        (Policy.ON_FAILURE, _S.CRASHED, Cause.RESYNC, Operation.START),
        (Policy.MANUAL, _S.CRASHED, Cause.CRASH, None),
        (Policy.MANUAL, _S.SHUTOFF, Cause.OUT_OF_BAND, None),
        (Policy.HALTED, _S.RUNNING, Cause.OUT_OF_BAND, Operation.SHUTDOWN),
        (Policy.HALTED, _S.CRASHED, Cause.CRASH, Operation.POWER_OFF),
        (Policy.HALTED, _S.SHUTOFF, Cause.OUT_OF_BAND, None),
    ],
)
def test_each_policy_calls_for_its_action(
    policy: Policy, state: PowerState, cause: Cause | None, expected: Operation | None
) -> None:
    assert decide(policy, state, None, cause).operation is expected


@pytest.mark.parametrize("policy", list(Policy))
def test_unknown_is_never_off_and_a_transition_is_left_alone(policy: Policy) -> None:
    assert decide(policy, _S.UNKNOWN, None, Cause.OUT_OF_BAND).operation is None
    assert decide(policy, _S.RUNNING, Transition.SHUTTING_DOWN, Cause.OUT_OF_BAND).operation is None
    assert decide(policy, _S.SHUTOFF, Transition.POWERING_ON, Cause.OUT_OF_BAND).operation is None


@pytest.mark.parametrize("policy", list(Policy))
def test_a_guest_reboot_and_the_keepers_own_action_never_call_for_an_action(policy: Policy) -> None:
    for state in PowerState:
        assert decide(policy, state, None, Cause.GUEST_REBOOT).operation is None
        assert decide(policy, state, None, Cause.OPERATION, own=True).operation is None


def test_only_an_unexplained_clean_stop_waits_for_a_guest_reboot() -> None:
    assert decide(Policy.ALWAYS, _S.SHUTOFF, None, Cause.OUT_OF_BAND).await_reboot
    assert not decide(Policy.ALWAYS, _S.CRASHED, None, Cause.CRASH).await_reboot
    assert not decide(Policy.ALWAYS, _S.SHUTOFF, None, Cause.CRASH).await_reboot
    assert not decide(Policy.ALWAYS, _S.SHUTOFF, None, Cause.OPERATION).await_reboot
    assert not decide(Policy.ALWAYS, _S.SHUTOFF, None, None).await_reboot


def test_desired_states_per_policy() -> None:
    assert is_desired(Policy.ALWAYS, _S.RUNNING) and not is_desired(Policy.ALWAYS, _S.SHUTOFF)
    assert is_desired(Policy.HALTED, _S.SHUTOFF) and not is_desired(Policy.HALTED, _S.RUNNING)
    assert is_desired(Policy.ON_FAILURE, _S.SHUTOFF) and not is_desired(Policy.ON_FAILURE, _S.CRASHED)
    assert not any(is_desired(policy, _S.UNKNOWN) for policy in Policy)


# -- backoff ----------------------------------------------------------------------------------


def test_backoff_grows_with_the_square_of_failures_and_is_capped() -> None:
    settings = KeeperSettings(backoff_jitter=0.0)
    delays = [backoff_delay(n, settings, 0.0) for n in range(6)]
    assert delays == [0.0, 0.0, 10.0, 40.0, 90.0, 160.0]
    assert backoff_delay(50, settings, 0.0) == 300.0


def test_backoff_jitter_adds_at_most_its_fraction_and_never_passes_the_cap() -> None:
    settings = KeeperSettings(backoff_jitter=0.5)
    assert backoff_delay(2, settings, 0.0) == 10.0
    assert backoff_delay(2, settings, 0.999) == pytest.approx(14.995)
    assert backoff_delay(6, settings, 0.999) == 300.0
    drawn = {backoff_delay(3, settings, random.Random(seed).random()) for seed in range(20)}
    assert len(drawn) > 1 and all(40.0 <= delay <= 60.0 for delay in drawn)


def test_backoff_until_is_none_for_the_first_failure() -> None:
    settings = KeeperSettings(backoff_jitter=0.0)
    assert backoff_until(1, NOW, settings) is None
    assert backoff_until(3, NOW, settings) == NOW + timedelta(seconds=40)


def test_failures_count_up_unless_the_last_run_was_stable() -> None:
    settings = KeeperSettings(stable_after=60.0)
    assert consecutive_failures(2, NOW - timedelta(seconds=5), NOW, settings) == 3
    assert consecutive_failures(2, None, NOW, settings) == 3
    assert consecutive_failures(7, NOW - timedelta(seconds=61), NOW, settings) == 1


# -- settings ---------------------------------------------------------------------------------


def test_settings_accept_text_and_numbers() -> None:
    settings = KeeperSettings.from_options(resync_interval="5", quarantine_after=2, backoff_jitter="0")
    assert (settings.resync_interval, settings.quarantine_after, settings.backoff_jitter) == (5.0, 2, 0.0)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("resync_interval", "0"),
        ("resync_interval", "nan"),
        ("reboot_window", -1),
        ("quarantine_after", 0),
        ("quarantine_after", "1e3"),
        ("backoff_jitter", 2),
        ("backoff_cap", 1e9),
        ("identity", ""),
        ("identity", "a\nb"),
        ("no_such_setting", 1),
    ],
)
def test_bad_settings_are_invalid_options_naming_them(name: str, value: object) -> None:
    with pytest.raises(InvalidOption, match=name.split("_", maxsplit=1)[0]):
        KeeperSettings.from_options(**{name: value})


def test_a_backoff_base_above_its_cap_is_refused() -> None:
    with pytest.raises(InvalidOption, match="backoff_base"):
        KeeperSettings.from_options(backoff_base=400)
