"""The keeper's edges: starting and stopping, waiting, checked requests, operator decisions."""

from __future__ import annotations

import threading
import time

import pytest
from engine_support import behind_the_back, fake_host, records, running_keeper, wait_until
from powerdrivers_fake import instance_id

from powerdrivers import (
    ConfigurationError,
    HypervisorConnectionError,
    HypervisorError,
    InvalidOption,
    Operation,
    OperationTimeout,
    PowerState,
)
from powerdrivers.keeper import ActionStatus, Cause, Keeper, KeeperError, Policy, RecordKind, SqlStore

WEB1 = instance_id("web-1")
BATCH = instance_id("batch-7")


def _keeper_threads() -> list[str]:
    return [thread.name for thread in threading.enumerate() if thread.name.startswith("keeper-")]


# -- lifecycle --------------------------------------------------------------------------------------


def test_a_keeper_starts_once_stops_harmlessly_when_never_started_and_resyncs_only_while_running(
    store: SqlStore,
) -> None:
    with fake_host() as driver:
        keeper = Keeper(store, {"h1": driver})
        keeper.stop()  # never started: nothing to stop
        with pytest.raises(KeeperError, match="not running"):
            keeper.resync()
        with running_keeper(store, {"h1": driver}) as running:
            with pytest.raises(KeeperError, match="already started"):
                running.start()
            running.resync()
        with pytest.raises(KeeperError, match="not running"):
            running.resync()
        running.stop()  # a second stop is harmless too
    assert _keeper_threads() == []


def test_host_names_must_be_unique(store: SqlStore) -> None:
    with fake_host() as first, fake_host() as second, pytest.raises(ConfigurationError, match="unique"):
        Keeper(store, [("h1", first), ("h1", second)])


def test_a_start_that_fails_leaves_nothing_running_and_no_subscription(store: SqlStore) -> None:
    with fake_host() as live:
        gone = fake_host()
        gone.close()  # subscribing to a closed driver fails, after the first host subscribed
        keeper = Keeper(store, {"a": live, "b": gone})
        with pytest.raises(HypervisorConnectionError, match="closed"):
            keeper.start()
        assert not live._hub._listeners
        assert _keeper_threads() == []


def test_an_intent_left_open_on_an_instance_now_gone_or_unreadable_is_closed_saying_so(
    store: SqlStore,
) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}):
            pass
        gone = store.open_action(BATCH, "start", {}, "keeper@dead:1", status=ActionStatus.RUNNING)
        driver.delete("batch-7")
        with running_keeper(store, {"h1": driver}):
            closed = store.action(gone.id)
            assert closed.status is ActionStatus.INTERRUPTED
            assert "found the instance gone" in (closed.error or "")
        unreadable = store.open_action(WEB1, "reboot", {}, "keeper@dead:2", status=ActionStatus.RUNNING)
        driver.inject_failure(HypervisorError("the API answered 500"), "read", once=True)
        with running_keeper(store, {"h1": driver}):
            closed = store.action(unreadable.id)
            assert closed.status is ActionStatus.INTERRUPTED
            assert "could not read the instance: the API answered 500" in (closed.error or "")


# -- waiting --------------------------------------------------------------------------------------


def test_waiting_for_an_action_or_a_resync_times_out_naming_what_is_late(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        driver.set_latency(1.0)
        with pytest.raises(OperationTimeout, match=r"host h1 did not resync within 0\.1 s"):
            keeper.resync(timeout=0.1)
        action = keeper.request(BATCH, "start", "bob")
        with pytest.raises(OperationTimeout, match=f"action {action.id} is still"):
            keeper.wait(action.id, timeout=0.1)
        assert keeper.wait(action.id, timeout=10).status is ActionStatus.DONE
        with pytest.raises(InvalidOption, match="timeout"):
            keeper.wait(action.id, timeout=float("inf"))


# -- requests -------------------------------------------------------------------------------------


def test_requests_are_checked_before_anything_is_recorded(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        with pytest.raises(InvalidOption, match=r"carries out .*not 'explode'"):
            keeper.request(WEB1, "explode", "bob")
        with pytest.raises(InvalidOption, match="start takes no option timeout"):
            keeper.request(WEB1, "start", "bob", timeout=5)
        with pytest.raises(InvalidOption, match="force"):
            keeper.request(WEB1, Operation.SHUTDOWN, "bob", force="perhaps")
        assert store.open_actions() == [] and records(keeper, WEB1, RecordKind.ACTION) == []


def test_reboots_requested_through_the_keeper_are_carried_out_with_their_outcome(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        soft = keeper.wait(keeper.request(WEB1, "reboot", "bob", timeout=5, force="no").id, timeout=10)
        assert (soft.status, soft.outcome, soft.options) == (
            ActionStatus.DONE,
            "graceful",
            {"timeout": 5.0, "force": False},
        )
        hard = keeper.wait(keeper.request(WEB1, Operation.HARD_REBOOT, "bob").id, timeout=10)
        assert (hard.status, hard.outcome) == (ActionStatus.DONE, "forced")
        assert [r.operation for r in records(keeper, WEB1, RecordKind.ACTION)] == ["reboot", "hard_reboot"]
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


# -- operator decisions ---------------------------------------------------------------------------


def test_an_operator_releasing_a_quarantine_lets_the_keeper_act_again(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, quarantine_after=1) as keeper:
        keeper.set_policy(WEB1, "always", "alice")
        assert keeper.policy(WEB1) is Policy.ALWAYS
        driver.inject_failure(HypervisorError("no memory left"), Operation.START, once=True)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
        assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        released = keeper.release_quarantine(WEB1, "operator")
        assert not released.quarantined
        # The action's record is written once the driver has returned: wait for it, not the state.
        wait_until(lambda: len(records(keeper, WEB1, RecordKind.ACTION)) == 2, what="the restart's record")
        assert [r.operation for r in records(keeper, WEB1, RecordKind.ACTION)] == ["start", "start"]
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


# -- what the driver reports --------------------------------------------------------------------


def _vanished(store: SqlStore, instance: str) -> bool:
    return any(r.cause is Cause.VANISHED for r in store.history(instance, 100))


def test_a_deleted_event_records_the_instance_vanished_at_once(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, resync_interval=3600) as keeper:
        driver.delete("batch-7")
        wait_until(lambda: _vanished(store, BATCH), what="the vanished record")
        assert BATCH not in {view.id for view in keeper.views()}


def test_a_resync_the_driver_asks_for_finds_what_its_events_missed(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, resync_interval=3600):
        with driver._transaction() as document:  # removed with no event: one the stream lost
            driver._hypervisor.remove(document, driver._find(document, "batch-7"))
        driver.event_reporter.report_resync()
        wait_until(lambda: _vanished(store, BATCH), what="the resync the driver asked for")


def test_a_resync_that_fails_without_losing_the_host_keeps_it_reachable_and_fresh(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        driver.inject_failure(HypervisorError("the API answered 500"), "read", once=True)
        keeper.resync()
        assert store.hosts()[0].reachable and not keeper.view(WEB1).stale


def test_a_quarantined_instance_is_not_acted_on_whatever_happens_to_it(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, quarantine_after=1) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.inject_failure(HypervisorError("no memory left"), Operation.START, once=True)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
        behind_the_back(driver, "web-1", "shutoff", "destroyed")  # a new drift, still not desired
        wait_until(lambda: keeper.view(WEB1).power_state is PowerState.SHUTOFF, what="the stop recorded")
        time.sleep(0.5)
        assert [r.operation for r in records(keeper, WEB1, RecordKind.ACTION)] == ["start"]
        assert driver.get_instance(WEB1).power_state is PowerState.SHUTOFF and keeper.view(WEB1).quarantined
