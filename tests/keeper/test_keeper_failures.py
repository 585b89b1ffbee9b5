"""What the keeper promises when something fails: the driver, the store, or another process."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from engine_support import fake_host, running_keeper, wait_until
from powerdrivers_fake import FakeDriver, instance_id

from powerdrivers import HypervisorConnectionError, HypervisorError, Operation, PowerState
from powerdrivers.keeper import ActionStatus, Cause, Policy, RecordKind, SqlStore, _store_db

WEB1 = instance_id("web-1")
LEGACY = instance_id("legacy-db")
BATCH = instance_id("batch-7")


@pytest.fixture
def quick_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqlStore]:
    """The real store, giving up on another connection's write lock after 0.3 s instead of 30 s.

    Only the wait is shortened (it is read when the store opens its engine), so a held lock makes
    the store unavailable quickly enough for a test.
    """
    monkeypatch.setattr(_store_db, "BUSY_TIMEOUT_S", 0.3)
    opened = SqlStore(store_url)
    try:
        yield opened
    finally:
        opened.close()


@contextmanager
def write_locked(store_url: str) -> Iterator[None]:
    """Hold the database's write lock from another connection, as another process's writer would."""
    connection = sqlite3.connect(store_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield
        connection.execute("ROLLBACK")
    finally:
        connection.close()


def _actions(store: SqlStore, instance: str = WEB1) -> list[str]:
    return [r.operation or "" for r in reversed(store.history(instance, 1000)) if r.kind is RecordKind.ACTION]


# -- re-reading right before acting -----------------------------------------------------------------


def test_a_lost_connection_on_the_re_read_marks_the_host_unreachable_and_defers_the_action_until_it_answers(
    store: SqlStore,
) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        driver.set_latency(0.3)  # the re-read before the restart waits; the failure comes meanwhile
        driver.crash("web-1")
        driver.inject_failure(HypervisorConnectionError("the link dropped"), "read", once=True)
        wait_until(lambda: not store.hosts()[0].reachable, what="the host marked unreachable")
        assert "the link dropped" in (store.hosts()[0].error or "")
        wait_until(lambda: not keeper._workers["h1"].in_flight, what="the correction dropped")
        time.sleep(0.3)
        assert keeper.view(WEB1).stale
        driver.set_latency(0)
        assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        assert _actions(store) == [] and store.open_actions() == []
        keeper.resync()  # the host answers again: the crash is still there, and is corrected now
        # The action's record is written once the driver has returned: wait for it, not the state.
        wait_until(lambda: _actions(store), what="the restart's record")
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING
        assert store.hosts()[0].reachable
        assert _actions(store) == ["start"]


def test_a_failed_re_read_counts_as_a_failed_action_and_the_correction_follows_its_backoff(
    store: SqlStore,
) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, backoff_base=0.5) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        driver.set_latency(0.3)  # the re-read before the restart waits; the failure comes meanwhile
        driver.crash("web-1")
        driver.inject_failure(HypervisorError("the API answered 500"), "read", once=True)
        wait_until(lambda: keeper.view(WEB1).backoff_until is not None, what="the failure counted")
        assert keeper.view(WEB1).failures == 2  # the crash, then the failed re-read
        assert _actions(store) == [] and driver.get_instance(WEB1).power_state is PowerState.CRASHED
        assert store.hosts()[0].reachable  # an error that is not a lost connection
        driver.set_latency(0)
        wait_until(lambda: _actions(store) == ["start"], what="the restart after the backoff")
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


def test_an_instance_gone_before_the_re_read_is_not_acted_on_and_a_resync_follows_at_once(
    store: SqlStore,
) -> None:
    # The keeper's next periodic resync is an hour away: only the one the failed re-read asks for
    # can find the instance gone.
    with fake_host() as driver, running_keeper(store, {"h1": driver}, resync_interval=3600) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        driver.set_latency(0.5)  # the re-read before the restart comes after the removal
        driver.crash("web-1")
        _remove_unannounced(driver, "web-1")
        wait_until(
            lambda: any(r.cause is Cause.VANISHED for r in store.history(WEB1, 100)),
            what="the resync that finds the instance gone",
        )
        assert _actions(store) == [] and store.open_actions() == []


def _remove_unannounced(driver: FakeDriver, name: str) -> None:
    """Remove an instance from the fake with no event (one the keeper missed)."""
    with driver._transaction() as document:
        driver._hypervisor.remove(document, driver._find(document, name))


# -- intent before action -------------------------------------------------------------------------


def test_a_change_that_cannot_be_recorded_is_not_acted_on(quick_store: SqlStore, store_url: str) -> None:
    with fake_host() as driver, running_keeper(quick_store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        with write_locked(store_url):
            driver.crash("web-1")
            time.sleep(1.0)  # several busy timeouts: the worker has given up on recording it
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        time.sleep(0.3)
        assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        assert _actions(quick_store) == [] and quick_store.open_actions() == []


def test_no_action_is_taken_while_another_process_holds_the_stores_write_lock(
    quick_store: SqlStore, store_url: str
) -> None:
    with fake_host() as driver, running_keeper(quick_store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        driver.set_latency(1.5)  # the re-read after the crash is slow: the lock comes first
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).power_state is PowerState.CRASHED, what="the crash recorded")
        worker = keeper._workers["h1"]
        with write_locked(store_url):
            wait_until(lambda: not worker.in_flight, what="the correction given up")
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        assert _actions(quick_store) == [] and quick_store.open_actions() == []
        driver.set_latency(0)
        keeper.resync()  # the store answers again: the dropped correction is looked at again
        wait_until(lambda: _actions(quick_store) == ["start"], what="the restart")
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING


def test_an_action_whose_end_meets_a_blip_of_the_store_is_recorded_once_it_answers(
    quick_store: SqlStore, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with fake_host() as driver, running_keeper(quick_store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()
        driver.set_latency(0.6)
        driver.crash("web-1")
        [intent] = wait_until(quick_store.open_actions, what="the restart's intent")
        with write_locked(store_url):
            wait_until(lambda: "recording the end of action" in caplog.text, what="a refused end")
        wait_until(lambda: quick_store.action(intent.id).status is ActionStatus.DONE, what="the end recorded")
        assert quick_store.action(intent.id).outcome == "done" and quick_store.open_actions() == []


def test_an_action_whose_end_cannot_be_recorded_stays_open_and_the_next_keeper_closes_it_interrupted(
    quick_store: SqlStore, store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    with fake_host() as driver:
        with running_keeper(quick_store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            keeper.resync()
            driver.set_latency(0.6)
            driver.crash("web-1")
            [intent] = wait_until(quick_store.open_actions, what="the restart's intent")
            with write_locked(store_url):
                wait_until(
                    lambda: "could not be recorded" in caplog.text, timeout=20, what="the end given up"
                )
            driver.set_latency(0)
            assert driver.get_instance(WEB1).power_state is PowerState.RUNNING
        assert quick_store.action(intent.id).status is ActionStatus.RUNNING
        with running_keeper(quick_store, {"h1": driver}):
            closed = quick_store.action(intent.id)
            assert closed.status is ActionStatus.INTERRUPTED
            assert "found running" in (closed.error or "")


# -- requests and operations that fail -------------------------------------------------------------


def test_a_request_closed_by_someone_else_before_it_starts_is_not_carried_out(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        worker = keeper._workers["h1"]
        driver.set_latency(0.5)
        resynced = threading.Event()
        worker.post("resync", resynced)  # the worker is busy reading while the request waits
        action = keeper.request(BATCH, "start", "bob")
        store.finish_action(action.id, ActionStatus.FAILED, action.requested_at, error="withdrawn")
        assert resynced.wait(5)
        wait_until(lambda: not worker.in_flight, what="the request dropped")
        driver.set_latency(0)
        assert driver.get_instance(BATCH).power_state is PowerState.SHUTOFF
        ended = store.action(action.id)
        assert (ended.status, ended.error) == (ActionStatus.FAILED, "withdrawn")
        # The instance is free again: the keeper's own correction still runs.
        keeper.set_policy(BATCH, Policy.ALWAYS, "alice")
        wait_until(lambda: driver.get_instance(BATCH).power_state is PowerState.RUNNING, what="the start")


def test_a_shutdown_that_times_out_unforced_fails_and_counts_as_a_failure(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        action = keeper.request(LEGACY, "shutdown", "bob", timeout=0.2, force=False)
        ended = keeper.wait(action.id, timeout=10)
        assert (ended.status, ended.outcome) == (ActionStatus.FAILED, "timed_out")
        assert "shutdown timed out and forcing was not allowed" in (ended.error or "")
        assert driver.get_instance(LEGACY).power_state is PowerState.RUNNING
        wait_until(lambda: keeper.view(LEGACY).failures == 1, what="the failure counted")


def test_an_operation_that_loses_the_connection_fails_and_marks_the_host_unreachable(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        driver.inject_failure(HypervisorConnectionError("the link dropped"), Operation.START, once=True)
        action = keeper.request(BATCH, "start", "bob")
        ended = keeper.wait(action.id, timeout=10)
        assert ended.status is ActionStatus.FAILED and "the link dropped" in (ended.error or "")
        wait_until(lambda: not store.hosts()[0].reachable, what="the host marked unreachable")
        assert keeper.view(BATCH).stale
        keeper.resync()
        assert store.hosts()[0].reachable
