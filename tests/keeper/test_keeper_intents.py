"""Intent before action, requests through the store, zero-write resyncs and several hosts."""

from __future__ import annotations

import time
from typing import Any

import pytest
from engine_support import QUICK, fake_host, records, running_keeper, wait_until
from powerdrivers_fake import instance_id
from sqlalchemy import event

from powerdrivers import ConfigurationError, InvalidOption, Operation, OperationTimeout, PowerState
from powerdrivers.keeper import (
    Action,
    ActionInFlight,
    ActionStatus,
    Keeper,
    KeeperSettings,
    Policy,
    RecordKind,
    SqlStore,
    StoreUnavailable,
)

WEB1 = instance_id("web-1")
BATCH = instance_id("batch-7")


class _IntentsUnwritable(SqlStore):
    """The real store, except that no intent can be recorded (the database is unreachable)."""

    def open_action(self, *args: Any, **kwargs: Any) -> Action:
        raise StoreUnavailable("the database is not answering")


def test_no_action_is_taken_when_its_intent_cannot_be_recorded(store_url: str) -> None:
    store = _IntentsUnwritable(store_url)
    try:
        with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.crash("web-1")
            wait_until(lambda: keeper.view(WEB1).power_state is PowerState.CRASHED)
            time.sleep(0.5)
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
            assert not records(keeper, WEB1, RecordKind.ACTION)
    finally:
        store.close()


class _IntentsUnwritableOnce(SqlStore):
    """The real store, except that the first intent cannot be recorded (the database blinked)."""

    refused = False

    def open_action(self, *args: Any, **kwargs: Any) -> Action:
        if not self.refused:
            self.refused = True
            raise StoreUnavailable("the database is not answering")
        return super().open_action(*args, **kwargs)


def test_a_correction_whose_intent_could_not_be_recorded_is_tried_again_at_the_next_resync(
    store_url: str,
) -> None:
    store = _IntentsUnwritableOnce(store_url)
    try:
        with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.crash("web-1")
            wait_until(lambda: store.refused and not keeper._workers["h1"].in_flight, what="the refusal")
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
            keeper.resync()
            wait_until(lambda: records(keeper, WEB1, RecordKind.ACTION), what="the restart")
            assert driver.get_instance(WEB1).power_state is PowerState.RUNNING
    finally:
        store.close()


def test_a_correction_another_process_blocked_is_tried_again_once_its_action_ended(
    store: SqlStore,
) -> None:
    # The poll interval is long here: the store's change notices alone bring the action's end.
    with fake_host() as driver, running_keeper(store, {"h1": driver}, poll_interval=60) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.resync()  # the worker has taken the new policy before the other action opens
        other = store.open_action(WEB1, "pause", {}, "another-process", status=ActionStatus.RUNNING)
        driver.crash("web-1")
        worker = keeper._workers["h1"]
        wait_until(lambda: WEB1 in worker._missed and not worker.in_flight, what="the refused correction")
        assert not records(keeper, WEB1, RecordKind.ACTION)
        store.finish_action(other.id, ActionStatus.FAILED, other.requested_at, error="gave up")
        keeper.resync()
        wait_until(lambda: driver.get_instance(WEB1).power_state is PowerState.RUNNING, what="the restart")


def test_the_intent_is_recorded_running_before_the_driver_is_called(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.set_latency(0.5)
        driver.crash("web-1")
        [intent] = wait_until(store.open_actions, what="the intent")
        assert (intent.operation, intent.status) == ("start", ActionStatus.RUNNING)
        assert driver.get_instance(WEB1).power_state is PowerState.CRASHED  # not acted yet
        assert wait_until(lambda: store.action(intent.id).status is ActionStatus.DONE)


def test_an_intent_left_running_is_closed_interrupted_at_start_and_never_reissued(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.crash("web-1")
        # What a keeper killed between intent and completion leaves behind.
        left = store.open_action(WEB1, "start", {}, "keeper@dead:1", status=ActionStatus.RUNNING)
        with running_keeper(store, {"h1": driver}) as keeper:
            closed = store.action(left.id)
            assert closed.status is ActionStatus.INTERRUPTED
            assert "found crashed" in (closed.error or "")
            time.sleep(0.5)
            keeper.resync()
            assert [r.operation for r in records(keeper, WEB1, RecordKind.ACTION)] == ["start"]
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED


def test_an_interrupted_intent_of_an_instance_that_was_backing_off_is_not_reissued(store: SqlStore) -> None:
    with fake_host() as driver:
        with running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.crash("web-1")
        # A keeper killed while it carried out the restart a backoff had held back.
        left = store.open_action(WEB1, "start", {}, "keeper@dead:1", status=ActionStatus.RUNNING)
        store.set_backoff(WEB1, 2, left.requested_at)
        with running_keeper(store, {"h1": driver}, backoff_base=0.1) as keeper:
            assert store.action(left.id).status is ActionStatus.INTERRUPTED
            time.sleep(1.0)  # well past the backoff the new reading of the crash sets
            keeper.resync()
            assert [r.operation for r in records(keeper, WEB1, RecordKind.ACTION)] == ["start"]
            assert driver.get_instance(WEB1).power_state is PowerState.CRASHED


def test_a_request_through_the_keeper_is_recorded_attributed_and_carried_out(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        action = keeper.request(WEB1, "shutdown", "bob", timeout=5)
        assert (action.status, action.requested_by, action.options) == (
            ActionStatus.PENDING,
            "bob",
            {"timeout": 5.0},
        )
        ended = keeper.wait(action.id, timeout=10)
        assert (ended.status, ended.outcome) == (ActionStatus.DONE, "graceful")
        assert driver.get_instance(WEB1).power_state is PowerState.SHUTOFF
        [record] = records(keeper, WEB1, RecordKind.ACTION)
        assert (record.operation, record.requested_by) == ("shutdown", "bob")
        with pytest.raises(InvalidOption, match="carries out"):
            keeper.request(WEB1, "delete", "bob")


def test_a_request_another_process_wrote_is_carried_out_by_the_owning_keeper(
    store: SqlStore, store_url: str
) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}):
        other = SqlStore(store_url)
        try:
            pending = other.open_action(BATCH, "start", {}, "carol")
            wait_until(lambda: other.action(pending.id).status is ActionStatus.DONE)
            done = other.action(pending.id)
            assert done.requested_by == "carol"
            assert driver.get_instance(BATCH).power_state is PowerState.RUNNING
            with pytest.raises(ActionInFlight):
                held = other.open_action(BATCH, "pause", {}, "dave", status=ActionStatus.RUNNING)
                other.open_action(BATCH, "pause", {}, "erin")
            other.finish_action(held.id, ActionStatus.DONE, done.requested_at)
        finally:
            other.close()


def test_a_policy_set_by_another_process_is_acted_on(store: SqlStore, store_url: str) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        other = SqlStore(store_url)
        try:
            other.set_policy(BATCH, Policy.ALWAYS, "operator")
        finally:
            other.close()
        [action] = wait_until(lambda: records(keeper, BATCH, RecordKind.ACTION), what="the start")
        assert action.operation == "start"
        assert driver.get_instance(BATCH).power_state is PowerState.RUNNING


def test_a_steady_state_resync_writes_nothing(store: SqlStore) -> None:
    writes: list[str] = []

    def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            writes.append(statement)

    with fake_host(instances=200) as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.resync()
        event.listen(store._engine, "before_cursor_execute", count)
        try:
            for _ in range(3):
                keeper.resync()
        finally:
            event.remove(store._engine, "before_cursor_execute", count)
        assert writes == []
        assert len(keeper.views("h1")) == 205


def test_one_keeper_keeps_several_hosts(store: SqlStore) -> None:
    with (
        fake_host() as first,
        fake_host(seed="empty", instances=2) as second,
        running_keeper(store, {"a": first, "b": second}) as keeper,
    ):
        vm = instance_id("vm-00000")
        assert {v.host for v in keeper.views()} == {"a", "b"} and keeper.view(vm).host == "b"
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        keeper.set_policy(vm, Policy.ALWAYS, "alice")
        first.crash("web-1")
        second.crash("vm-00000")
        for driver, instance in ((first, WEB1), (second, vm)):
            wait_until(lambda: driver.get_instance(instance).power_state is PowerState.RUNNING)  # noqa: B023


def test_bad_arguments_are_keeper_errors_naming_what_is_wrong(store: SqlStore) -> None:
    with pytest.raises(ConfigurationError, match="at least one host"):
        Keeper(store, {})
    with pytest.raises(ConfigurationError, match="Driver"):
        Keeper(store, {"h1": object()})  # type: ignore[arg-type]
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        with pytest.raises(InvalidOption, match="policy"):
            keeper.set_policy(WEB1, "sometimes", "alice")
        with pytest.raises(InvalidOption, match="requested_by"):
            keeper.set_policy(WEB1, Policy.ALWAYS, "")
        with pytest.raises(InvalidOption, match="timeout"):
            keeper.request(WEB1, Operation.SHUTDOWN, "bob", timeout="nan")
        with pytest.raises(InvalidOption, match="limit"):
            keeper.history(WEB1, limit=0)
    assert isinstance(KeeperSettings.from_options(**QUICK), KeeperSettings)


def test_an_action_whose_intent_someone_else_closed_still_frees_the_instance(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, backoff_base=0.1) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.set_latency(0.5)
        driver.crash("web-1")
        [intent] = wait_until(store.open_actions, what="the restart's intent")
        # What a second keeper starting on the same host does to an intent it takes for a dead one's.
        store.finish_action(intent.id, ActionStatus.INTERRUPTED, intent.requested_at, error="taken over")
        wait_until(lambda: not keeper._workers["h1"].in_flight, what="the worker told the action ended")
        assert driver.get_instance(WEB1).power_state is PowerState.RUNNING
        driver.set_latency(0)
        driver.crash("web-1")
        done = wait_until(
            lambda: [r for r in records(keeper, WEB1, RecordKind.ACTION) if r.outcome != "interrupted"],
            what="the restart after the next crash",
        )
        assert [r.operation for r in done] == ["start"]


def test_a_wait_given_its_timeout_as_text_times_out_with_a_keeper_error(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        driver.set_latency(0.5)
        action = keeper.request(WEB1, "shutdown", "bob")
        with pytest.raises(OperationTimeout, match=r"after 0\.01 s"):
            keeper.wait(action.id, timeout="0.01")  # type: ignore[arg-type]
        keeper.wait(action.id, timeout=10)


class _EndUnwritableOnce(SqlStore):
    """The real store, except that recording the first action's end fails once (a blip)."""

    refused = False

    def finish_action(self, *args: Any, **kwargs: Any) -> Action:
        if not self.refused:
            self.refused = True
            raise StoreUnavailable("the database is not answering")
        return super().finish_action(*args, **kwargs)


def test_an_action_s_end_the_store_refused_once_is_recorded_all_the_same(store_url: str) -> None:
    store = _EndUnwritableOnce(store_url)
    try:
        with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.crash("web-1")
            [record] = wait_until(lambda: records(keeper, WEB1, RecordKind.ACTION), what="the start's end")
            assert store.refused and (record.operation, record.outcome) == ("start", "done")
            assert store.open_actions() == []
    finally:
        store.close()
