"""The keeper on the fake driver: policies, causes and the rules learned from Nova, Ironic and KubeVirt."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from engine_support import behind_the_back, fake_host, records, running_keeper, wait_until
from powerdrivers_fake import instance_id

from powerdrivers import PowerState, Transition
from powerdrivers.keeper import ActionStatus, Cause, Policy, RecordKind, SqlStore

WEB1 = instance_id("web-1")
BATCH = instance_id("batch-7")


def test_an_instance_first_seen_is_recorded_as_appeared_under_manual(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        view = keeper.view(WEB1)
        assert (view.policy, view.power_state, view.host) == (Policy.MANUAL, PowerState.RUNNING, "h1")
        [appeared] = records(keeper, WEB1)
        assert appeared.kind is RecordKind.OBSERVED and appeared.cause is Cause.APPEARED


def test_under_always_an_out_of_band_stop_is_undone_and_recorded_as_out_of_band(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        behind_the_back(driver, "web-1", "shutoff", "destroyed")
        wait_until(lambda: any(r.kind is RecordKind.ACTION for r in records(keeper, WEB1)), what="a start")
        wait_until(lambda: driver.get_instance(WEB1).power_state is PowerState.RUNNING, what="running")
        history = records(keeper, WEB1)
        stop = next(r for r in history if r.to_state is PowerState.SHUTOFF)
        assert stop.cause is Cause.OUT_OF_BAND and stop.native_reason == "destroyed"
        action = next(r for r in history if r.kind is RecordKind.ACTION)
        assert (action.operation, action.outcome) == ("start", "done")
        assert action.requested_by == keeper.settings.who
        policy = next(r for r in history if r.kind is RecordKind.POLICY)
        assert policy.requested_by == "alice"


def test_under_manual_and_on_failure_a_clean_stop_is_adopted(store: SqlStore) -> None:
    web2 = instance_id("web-2")
    with fake_host() as driver, running_keeper(store, {"h1": driver}, reboot_window=0.1) as keeper:
        keeper.set_policy(WEB1, Policy.MANUAL, "alice")
        keeper.set_policy(web2, Policy.ON_FAILURE, "alice")
        behind_the_back(driver, "web-1", "shutoff", "shutdown")
        behind_the_back(driver, "web-2", "shutoff", "shutdown")
        for instance in (WEB1, web2):
            wait_until(lambda: keeper.view(instance).power_state is PowerState.SHUTOFF, what="the stop")  # noqa: B023
        time.sleep(0.5)
        keeper.resync()
        assert store.open_actions() == []
        for instance in (WEB1, web2):
            assert not records(keeper, instance, RecordKind.ACTION)
            assert driver.get_instance(instance).power_state is PowerState.SHUTOFF
            assert records(keeper, instance, RecordKind.OBSERVED)[-1].cause is Cause.OUT_OF_BAND


def test_under_halted_an_out_of_band_start_is_undone(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(BATCH, Policy.HALTED, "alice")
        behind_the_back(driver, "batch-7", "running", "booted")
        wait_until(lambda: records(keeper, BATCH, RecordKind.ACTION), what="the shutdown")
        [action] = records(keeper, BATCH, RecordKind.ACTION)
        assert (action.operation, action.outcome) == ("shutdown", "graceful")
        assert driver.get_instance(BATCH).power_state is PowerState.SHUTOFF
        start = next(r for r in records(keeper, BATCH) if r.to_state is PowerState.RUNNING)
        assert start.cause is Cause.OUT_OF_BAND


def test_a_change_found_by_a_resync_is_out_of_band_and_acted_on(store: SqlStore, tmp_path: Path) -> None:
    uri = f"fake://{tmp_path / 'state.json'}"
    # The keeper's own driver looks at the file only every 3 s: the resync finds the stop first.
    with (
        fake_host(uri, poll_interval=3) as driver,
        fake_host(uri) as other,
        running_keeper(store, {"h1": driver}, resync_interval=3600) as keeper,
    ):
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        behind_the_back(other, "web-1", "shutoff", "destroyed")
        keeper.resync()
        stop = next(r for r in records(keeper, WEB1) if r.to_state is PowerState.SHUTOFF)
        assert stop.cause is Cause.OUT_OF_BAND and stop.detail
        wait_until(lambda: records(keeper, WEB1, RecordKind.ACTION), what="the start")
        assert other.get_instance(WEB1).power_state is PowerState.RUNNING


def test_stop_joins_every_thread_the_keeper_started(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.crash("web-1")
            wait_until(lambda: records(keeper, WEB1, RecordKind.ACTION), what="the restart")
            assert any(t.name.startswith("keeper-") for t in threading.enumerate())
        assert not [t.name for t in threading.enumerate() if t.name.startswith("keeper-")]
        keeper.stop()  # twice is harmless


def test_stop_during_an_action_lets_it_finish_and_closes_its_intent(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.set_latency(0.5)
            driver.crash("web-1")
            [intent] = wait_until(store.open_actions, what="the restart's intent")
        assert store.open_actions() == []
        assert store.action(intent.id).status is ActionStatus.DONE
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


def test_a_transition_is_recorded_with_the_observation_that_began_it(store: SqlStore) -> None:
    # The guest takes a second to shut down: long enough for the transition to be seen under load.
    with fake_host(guest_delay=1.0) as driver, running_keeper(store, {"h1": driver}) as keeper:
        action = keeper.request(WEB1, "shutdown", requested_by="ops", timeout=5)
        assert keeper.wait(action.id).status is ActionStatus.DONE
        # The action is closed before its final reading is recorded (by the host's worker): wait for it.
        wait_until(
            lambda: records(keeper, WEB1, RecordKind.OBSERVED)[-1].to_state is PowerState.SHUTOFF,
            what="the shut-off reading's record",
        )
        observed = records(keeper, WEB1, RecordKind.OBSERVED)
        began, ended = observed[-2:]
        assert (began.to_state, began.transition) == (PowerState.RUNNING, Transition.SHUTTING_DOWN)
        assert (ended.to_state, ended.transition) == (PowerState.SHUTOFF, None)
        assert began.to_dict()["transition"] == "shutting_down"
        assert ended.to_dict()["transition"] is None
