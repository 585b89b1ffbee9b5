"""The rules learned from the anchors' bugs, each with a test that fails when it is broken."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from engine_support import behind_the_back, fake_host, records, running_keeper, wait_until
from powerdrivers_fake import instance_id

from powerdrivers import (
    Event,
    EventKind,
    HypervisorConnectionError,
    HypervisorError,
    InstanceReading,
    Operation,
    PowerState,
)
from powerdrivers.keeper import ActionStatus, Cause, Keeper, Policy, RecordKind, SqlStore

WEB1 = instance_id("web-1")


def _feed(keeper: Keeper, host: str, kind: EventKind, state: PowerState, native: str, reason: str) -> None:
    """Hand the keeper an event as its driver would (a late or stale one the hypervisor sent)."""
    reading = InstanceReading(WEB1, "web-1", state, None, native, reason, datetime.now(UTC))
    keeper._workers[host].on_event(Event.from_reading(kind, reading, None))


def _actions(store: SqlStore, instance: str = WEB1) -> list[str]:
    return [r.operation or "" for r in reversed(store.history(instance, 1000)) if r.kind is RecordKind.ACTION]


# -- Nova: never act with an operation in flight ------------------------------------------------


def test_no_action_while_another_process_has_an_action_open(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, reboot_window=0.05) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        other = store.open_action(WEB1, "pause", {}, "another-process", status=ActionStatus.RUNNING)
        behind_the_back(driver, "web-1", "shutoff", "destroyed")
        wait_until(lambda: keeper.view(WEB1).power_state is PowerState.SHUTOFF, what="the stop")
        time.sleep(0.5)
        assert driver.get_instance(WEB1).power_state is PowerState.SHUTOFF
        assert [a.id for a in store.open_actions()] == [other.id]
        assert _actions(store) == []


def test_no_second_action_while_its_own_is_in_flight(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.set_latency(0.4)
        driver.crash("web-1")
        wait_until(store.open_actions, what="the restart's intent")
        keeper.resync()  # reads the instance still crashed while the restart runs
        keeper.resync()
        wait_until(lambda: _actions(store), what="the restart's end")
        time.sleep(0.3)
        assert _actions(store) == ["start"]
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


# -- Nova: re-read the live state right before acting ----------------------------------------------


def test_a_stale_crash_event_is_re_read_and_not_acted_on(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        _feed(keeper, "h1", EventKind.CRASHED, PowerState.CRASHED, "crashed", "panicked")
        wait_until(
            lambda: keeper.view(WEB1).power_state is PowerState.RUNNING and len(records(keeper, WEB1)) >= 4,
            what="the re-read",
        )
        time.sleep(0.2)
        assert _actions(store) == []
        assert records(keeper, WEB1, RecordKind.OBSERVED)[-1].to_state is PowerState.RUNNING


# -- Nova's 15 s hack: a guest reboot is never a crash nor a reason to act --------------------------


def test_a_rebooted_event_is_a_guest_reboot_and_triggers_nothing(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        behind_the_back(driver, "web-1", "running", "booted", kind=EventKind.REBOOTED)
        wait_until(lambda: records(keeper, WEB1, RecordKind.OBSERVED)[-1].cause is Cause.GUEST_REBOOT)
        time.sleep(0.3)
        assert _actions(store) == []
        assert keeper.view(WEB1).failures == 0


def test_a_stop_quickly_followed_by_a_start_is_a_guest_reboot_and_triggers_nothing(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, reboot_window=1.0) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        behind_the_back(driver, "web-1", "shutoff", "shutdown")
        time.sleep(0.1)
        behind_the_back(driver, "web-1", "running", "booted")
        wait_until(lambda: records(keeper, WEB1, RecordKind.OBSERVED)[-1].to_state is PowerState.RUNNING)
        time.sleep(1.5)  # past the reboot window
        assert records(keeper, WEB1, RecordKind.OBSERVED)[-1].cause is Cause.GUEST_REBOOT
        assert _actions(store) == []
        assert keeper.view(WEB1).failures == 0


def test_a_stop_a_keeper_left_uncorrected_when_it_stopped_is_corrected_by_the_next(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}, reboot_window=60) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            behind_the_back(driver, "web-1", "shutoff", "destroyed")
            wait_until(lambda: keeper.view(WEB1).power_state is PowerState.SHUTOFF, what="the stop")
        # Stopped inside the reboot window: the stop is recorded, not yet undone.
        assert _actions(store) == []
        with running_keeper(store, {"h1": driver}, reboot_window=60):
            wait_until(lambda: _actions(store) == ["start"], what="the start by the next keeper")
            assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


def test_a_stop_the_keeper_carried_out_is_not_undone_by_the_next_keeper(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            keeper.wait(keeper.request(WEB1, "power_off", "bob").id, timeout=10)
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.resync()
            time.sleep(0.3)
            assert _actions(store) == ["power_off"]
            assert driver.get_instance(WEB1).power_state is PowerState.SHUTOFF


def test_a_crash_is_restarted_without_waiting_for_the_reboot_window(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, reboot_window=60) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.crash("web-1")
        wait_until(lambda: _actions(store) == ["start"], timeout=10, what="the restart")
        crash = next(r for r in records(keeper, WEB1) if r.to_state is PowerState.CRASHED)
        assert crash.cause is Cause.CRASH and crash.native_reason == "panicked"


# -- Nova and Ironic: unknown or unreachable is never off -------------------------------------------


def test_an_unknown_state_is_never_acted_on(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        _feed(keeper, "h1", EventKind.STATE_UNKNOWN, PowerState.UNKNOWN, "nostate", "?")
        wait_until(lambda: records(keeper, WEB1, RecordKind.OBSERVED)[-1].to_state is PowerState.UNKNOWN)
        time.sleep(0.3)
        assert _actions(store) == []


def test_an_unreachable_host_is_marked_its_readings_stale_and_nothing_is_done_until_it_answers(
    store: SqlStore,
) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.inject_failure(HypervisorConnectionError("host down"), "read", once=False)
        keeper.resync()
        [host] = store.hosts()
        assert not host.reachable and "host down" in (host.error or "")
        assert keeper.view(WEB1).stale and keeper.view(WEB1).power_state is PowerState.RUNNING
        behind_the_back(driver, "web-1", "shutoff", "destroyed")
        time.sleep(1.0)
        assert _actions(store) == [] and store.open_actions() == []
        driver.clear_failures()
        keeper.resync()
        assert store.hosts()[0].reachable and not keeper.view(WEB1).stale
        wait_until(lambda: _actions(store) == ["start"], what="the start once the host answers")


def test_a_keeper_started_after_one_stopped_while_its_host_was_down_marks_it_reachable(
    store: SqlStore,
) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            driver.inject_failure(HypervisorConnectionError("host down"), "read", once=False)
            keeper.resync()
            assert keeper.view(WEB1).stale
        driver.clear_failures()
        with running_keeper(store, {"h1": driver}) as keeper:
            assert store.hosts()[0].reachable and not keeper.view(WEB1).stale


# -- KubeVirt: crash-loop backoff; Ironic: quarantine after N failed actions ------------------------


def test_repeated_crashes_back_off_and_show_until_when(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, backoff_base=1.0) as keeper:
        keeper.set_policy(WEB1, Policy.ON_FAILURE, "alice")
        driver.crash("web-1")
        wait_until(lambda: _actions(store) == ["start"], what="the first restart")
        first = keeper.view(WEB1)
        assert first.failures == 1 and first.backoff_until is None
        wait_until(lambda: driver.get_instance(WEB1).power_state is PowerState.RUNNING)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).failures == 2, what="the second failure")
        second = keeper.view(WEB1)
        assert second.backoff_until is not None
        crashed_at = next(r.time for r in reversed(records(keeper, WEB1)) if r.to_state is PowerState.CRASHED)
        # backoff_base (1 s) after the moment the keeper counted the failure, just after the crash.
        assert 1.0 <= (second.backoff_until - crashed_at).total_seconds() <= 3.0
        assert _actions(store) == ["start"]
        wait_until(lambda: _actions(store) == ["start", "start"], what="the restart after the backoff")
        assert records(keeper, WEB1, RecordKind.ACTION)[-1].time >= second.backoff_until


def test_failed_actions_quarantine_the_instance_until_its_state_reads_as_desired(store: SqlStore) -> None:
    settings: dict[str, Any] = {"backoff_base": 0.05, "quarantine_after": 3}
    with fake_host() as driver, running_keeper(store, {"h1": driver}, **settings) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.inject_failure(HypervisorError("the disk is gone"), Operation.START, once=False)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
        view = keeper.view(WEB1)
        assert "3 consecutive actions failed" in (view.fault or "") and "the disk is gone" in (
            view.fault or ""
        )
        assert _actions(store) == ["start", "start", "start"]
        time.sleep(0.5)
        assert _actions(store) == ["start", "start", "start"]
        assert records(keeper, WEB1, RecordKind.QUARANTINE)
        driver.clear_failures()
        driver.start("web-1")  # someone fixed it: the state reads as desired again
        wait_until(lambda: not keeper.view(WEB1).quarantined, what="the automatic release")


def test_an_event_older_than_the_last_reading_is_not_taken_for_news(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        before = len(records(keeper, WEB1))
        old = InstanceReading(WEB1, "web-1", PowerState.SHUTOFF, None, "shutoff", "destroyed", EPOCH)
        keeper._workers["h1"].on_event(Event.from_reading(EventKind.STOPPED, old, None))
        keeper.resync()  # handled after the event, on the same thread
        assert len(records(keeper, WEB1)) == before
        assert keeper.view(WEB1).power_state is PowerState.RUNNING


EPOCH = datetime(2020, 1, 1, tzinfo=UTC)


def test_a_view_read_before_a_quarantine_and_handed_over_late_does_not_release_it(store: SqlStore) -> None:
    settings: dict[str, Any] = {"backoff_base": 0.05, "quarantine_after": 3}
    with fake_host() as driver, running_keeper(store, {"h1": driver}, **settings) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.inject_failure(HypervisorError("the disk is gone"), Operation.START, once=False)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
        quarantined = keeper.view(WEB1)
        # What the store poller hands over when it read the instance just before the quarantine.
        before = dataclasses.replace(quarantined, quarantined=False, fault=None, in_flight=None)
        keeper._workers["h1"].post("changed", before)
        keeper.resync()  # handled after the stale view, on the same thread
        time.sleep(0.3)
        assert keeper.view(WEB1).quarantined
        assert _actions(store) == ["start", "start", "start"]


def test_an_action_s_reading_overtaken_by_a_newer_event_is_not_taken_for_news(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        driver.crash("web-1")  # under manual: recorded, nothing done
        wait_until(lambda: keeper.view(WEB1).power_state is PowerState.CRASHED, what="the crash")
        crashed_at = keeper.view(WEB1).observed_at
        # What an action thread read just before the crash, handed over after the crash's event.
        before = InstanceReading(
            WEB1, "web-1", PowerState.RUNNING, None, "running", "booted", crashed_at - timedelta(seconds=1)
        )
        keeper._workers["h1"].post("reading", (before, Operation.START))
        keeper.resync()  # handled after the reading, on the same thread
        states = [r.to_state for r in records(keeper, WEB1, RecordKind.OBSERVED)]
        assert states[states.index(PowerState.CRASHED) :] == [PowerState.CRASHED]
