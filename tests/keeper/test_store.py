"""The SQL store, method by method, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from store_support import both_databases

from powerdrivers import InstanceReading, InvalidOption, PowerState, Transition
from powerdrivers.keeper import (
    ActionInFlight,
    ActionStatus,
    Cause,
    HostAlreadyKept,
    KeeperError,
    KeeperStore,
    Policy,
    RecordKind,
    SqlStore,
    UnknownInstance,
)
from powerdrivers.keeper import _store_ops as store_ops

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)

pytestmark = both_databases


def reading(
    instance_id: str = "i-1",
    state: PowerState = PowerState.RUNNING,
    at: datetime = T0,
    transition: Transition | None = None,
) -> InstanceReading:
    return InstanceReading(instance_id, f"name-{instance_id}", state, transition, state.value, "why", at)


def seen(store: SqlStore, instance_id: str = "i-1", host: str = "h1") -> None:
    store.register_host(host, "fake", None)
    store.record_observation(host, reading(instance_id), previous=None, cause=Cause.APPEARED)


def test_the_sql_store_is_a_keeper_store(store: SqlStore) -> None:
    typed: KeeperStore = store  # mypy checks the Protocol here
    assert typed.hosts() == []


def test_register_host_stores_the_uri_redacted_and_updates_in_place(store: SqlStore) -> None:
    first = store.register_host("h1", "libvirt", "qemu+tcp://admin:hunter2@host/system")
    assert "hunter2" not in (first.uri or "")
    assert first.reachable and first.since.tzinfo is not None
    store.register_host("h1", "xen", None)
    assert [(h.name, h.driver, h.uri) for h in store.hosts()] == [("h1", "xen", None)]
    store.register_host("a0", "fake", None)
    assert [h.name for h in store.hosts()] == ["a0", "h1"]


def test_observation_creates_a_manual_instance_and_appends_its_record(store: SqlStore) -> None:
    store.register_host("h1", "fake", None)
    later = T0 + timedelta(seconds=5)
    record = store.record_observation(
        "h1", reading(transition=Transition.POWERING_ON), previous=None, cause=Cause.APPEARED
    )
    assert (record.kind, record.to_state, record.cause, record.time) == (
        RecordKind.OBSERVED,
        PowerState.RUNNING,
        Cause.APPEARED,
        T0,
    )
    view = store.instance("i-1")
    assert (view.policy, view.power_state, view.transition, view.stale) == (
        Policy.MANUAL,
        PowerState.RUNNING,
        Transition.POWERING_ON,
        False,
    )
    again = store.record_observation(
        "h1", reading(state=PowerState.SHUTOFF, at=later), previous=PowerState.RUNNING, cause=Cause.CRASH
    )
    assert (again.from_state, again.to_state, again.native_state) == (
        PowerState.RUNNING,
        PowerState.SHUTOFF,
        "shutoff",
    )
    assert store.instance("i-1").observed_at == later
    assert [r.id for r in store.history("i-1")] == [again.id, record.id]


def test_what_a_hypervisor_says_is_kept_whatever_its_length(store: SqlStore) -> None:
    store.register_host("h1", "fake", None)
    long = "x" * 2000
    store.record_observation(
        "h1",
        InstanceReading("i-1", long, PowerState.SHUTOFF, None, long, long, T0),
        previous=None,
        cause=Cause.APPEARED,
    )
    view = store.instance("i-1")
    assert (view.name, view.native_state, view.native_reason) == (long, long, long)
    assert store.history("i-1")[0].native_reason == long


def test_observation_on_an_unregistered_host_is_refused_and_writes_nothing(store: SqlStore) -> None:
    with pytest.raises(KeeperError, match="no host named 'nowhere'"):
        store.record_observation("nowhere", reading(), previous=None, cause=Cause.APPEARED)
    with pytest.raises(UnknownInstance):
        store.instance("i-1")


def test_instances_are_listed_by_host_then_id_with_their_open_action(store: SqlStore) -> None:
    seen(store, "b", "h2")
    seen(store, "a", "h2")
    seen(store, "z", "h1")
    opened = store.open_action("a", "stop", {}, "alice")
    assert [(v.host, v.id) for v in store.instances()] == [("h1", "z"), ("h2", "a"), ("h2", "b")]
    assert [v.id for v in store.instances("h2")] == ["a", "b"]
    assert {v.id: v.in_flight for v in store.instances()} == {"z": None, "a": opened, "b": None}
    assert store.instance("a").in_flight == opened


def test_unknown_instances_are_unknown_everywhere(store: SqlStore) -> None:
    for call in (
        lambda: store.instance("ghost"),
        lambda: store.set_policy("ghost", Policy.ALWAYS, "me"),
        lambda: store.set_backoff("ghost", 1, None),
        lambda: store.quarantine("ghost", "why", T0),
        lambda: store.release_quarantine("ghost", "me", T0),
        lambda: store.open_action("ghost", "start", {}, "me"),
        lambda: store.append("ghost", RecordKind.POLICY, T0),
        lambda: store.history("ghost"),
        lambda: store.record_vanished("h1", "ghost", T0),
    ):
        with pytest.raises(UnknownInstance, match="ghost"):
            call()


def test_policy_changes_are_recorded_with_who_and_a_same_policy_writes_nothing(store: SqlStore) -> None:
    seen(store)
    view = store.set_policy("i-1", Policy.ALWAYS, "alice")
    assert view.policy is Policy.ALWAYS
    newest = store.history("i-1", limit=1)[0]
    assert (newest.kind, newest.requested_by, newest.detail) == (
        RecordKind.POLICY,
        "alice",
        "manual -> always",
    )
    cursor, _ = store.changes_since(0)
    store.set_policy("i-1", "always", "bob")  # type: ignore[arg-type]  # text is accepted too
    assert store.history("i-1", limit=1)[0].id == newest.id
    assert store.changes_since(cursor) == (cursor, [])
    with pytest.raises(KeeperError, match="policy must be one of"):
        store.set_policy("i-1", "sometimes", "bob")  # type: ignore[arg-type]


def test_backoff_is_stored_and_bad_counts_are_refused(store: SqlStore) -> None:
    seen(store)
    store.set_backoff("i-1", 2, T0 + timedelta(seconds=30))
    view = store.instance("i-1")
    assert (view.failures, view.backoff_until) == (2, T0 + timedelta(seconds=30))
    with pytest.raises(InvalidOption):
        store.set_backoff("i-1", -1, None)


def test_quarantine_and_release(store: SqlStore) -> None:
    seen(store)
    store.set_backoff("i-1", 3, T0)
    view = store.quarantine("i-1", "3 failed starts", T0)
    assert (view.quarantined, view.fault) == (True, "3 failed starts")
    store.quarantine("i-1", "3 failed starts", T0)  # the same quarantine again: no second record
    released = store.release_quarantine("i-1", "operator", T0 + timedelta(seconds=1))
    assert (released.quarantined, released.fault, released.failures, released.backoff_until) == (
        False,
        None,
        0,
        None,
    )
    records = [(r.kind, r.detail, r.requested_by) for r in store.history("i-1", limit=2)]
    assert records == [
        (RecordKind.QUARANTINE, "released from quarantine", "operator"),
        (RecordKind.QUARANTINE, "3 failed starts", None),
    ]


def test_releasing_an_instance_not_quarantined_resets_only_its_backoff(store: SqlStore) -> None:
    seen(store)
    store.set_backoff("i-1", 1, T0)
    before = store.history("i-1")
    view = store.release_quarantine("i-1", "operator", T0)
    assert (view.failures, view.backoff_until, view.quarantined) == (0, None, False)
    assert store.history("i-1") == before


def test_an_action_goes_pending_running_done_and_leaves_one_record(store: SqlStore) -> None:
    seen(store)
    opened = store.open_action("i-1", "start", {"timeout": 5}, "alice")
    assert (opened.status, opened.options, opened.requested_by, opened.started_at) == (
        ActionStatus.PENDING,
        {"timeout": 5},
        "alice",
        None,
    )
    assert store.open_actions() == [opened] == store.open_actions("h1")
    assert store.open_actions("h2") == []
    started = store.start_action(opened.id, T0)
    assert (started.status, started.started_at) == (ActionStatus.RUNNING, T0)
    with pytest.raises(KeeperError, match="running, not pending"):
        store.start_action(opened.id, T0)
    done = store.finish_action(opened.id, ActionStatus.DONE, T0 + timedelta(seconds=2), outcome="started")
    assert (done.status, done.ended_at, done.outcome) == (
        ActionStatus.DONE,
        T0 + timedelta(seconds=2),
        "started",
    )
    assert store.action(opened.id) == done
    assert store.open_actions() == []
    record = store.history("i-1", limit=1)[0]
    assert (record.kind, record.operation, record.outcome, record.requested_by) == (
        RecordKind.ACTION,
        "start",
        "started",
        "alice",
    )
    with pytest.raises(KeeperError, match="already done"):
        store.finish_action(opened.id, ActionStatus.FAILED, T0)


def test_a_failed_action_records_its_error_and_status(store: SqlStore) -> None:
    seen(store)
    opened = store.open_action("i-1", "stop", {}, "keeper", status=ActionStatus.RUNNING)
    assert opened.started_at is not None
    store.finish_action(opened.id, ActionStatus.FAILED, T0, error="host said no")
    record = store.history("i-1", limit=1)[0]
    assert (record.outcome, record.detail) == ("failed", "host said no")


def test_one_open_action_per_instance(store: SqlStore) -> None:
    seen(store)
    seen(store, "i-2")
    first = store.open_action("i-1", "start", {}, "alice")
    with pytest.raises(ActionInFlight, match="start"):
        store.open_action("i-1", "stop", {}, "bob", status=ActionStatus.RUNNING)
    store.open_action("i-2", "stop", {}, "bob")  # another instance is not blocked
    store.finish_action(first.id, ActionStatus.INTERRUPTED, T0, outcome="found running")
    assert store.open_action("i-1", "stop", {}, "bob").status is ActionStatus.PENDING


def test_the_database_itself_refuses_a_second_open_action(
    store: SqlStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What stops two processes that both looked before either wrote (PostgreSQL's race)."""
    seen(store)
    store.open_action("i-1", "start", {}, "alice")
    monkeypatch.setattr(store_ops, "refuse_in_flight", lambda connection, instance_id: None)
    with pytest.raises(ActionInFlight, match="already has an action in flight"):
        store.open_action("i-1", "stop", {}, "bob")
    assert [a.requested_by for a in store.open_actions()] == ["alice"]


def test_bad_actions_are_refused_before_anything_is_written(store: SqlStore) -> None:
    seen(store)
    with pytest.raises(KeeperError, match="opens as pending or running"):
        store.open_action("i-1", "start", {}, "me", status=ActionStatus.DONE)
    with pytest.raises(KeeperError, match="cannot be stored"):
        store.open_action("i-1", "start", {"when": T0}, "me")
    opened = store.open_action("i-1", "start", {}, "me")
    with pytest.raises(KeeperError, match="closes as done, failed or interrupted"):
        store.finish_action(opened.id, ActionStatus.RUNNING, T0)
    with pytest.raises(KeeperError, match="no action 999"):
        store.action(999)
    assert store.open_actions() == [opened]


def test_append_checks_its_fields(store: SqlStore) -> None:
    seen(store)
    record = store.append("i-1", RecordKind.HOST, T0, detail="note", cause=Cause.RESYNC, to_state="shutoff")
    assert (record.cause, record.to_state, record.detail) == (Cause.RESYNC, PowerState.SHUTOFF, "note")
    with pytest.raises(KeeperError, match="no field 'colour'"):
        store.append("i-1", RecordKind.HOST, T0, colour="red")
    with pytest.raises(KeeperError, match="detail must be text, not int"):
        store.append("i-1", RecordKind.HOST, T0, detail=3)
    with pytest.raises(KeeperError, match="to_state must be one of"):
        store.append("i-1", RecordKind.HOST, T0, to_state="sideways")
    with pytest.raises(KeeperError, match="timezone-aware"):
        store.append("i-1", RecordKind.HOST, datetime(2026, 1, 1))
    assert store.history("i-1", limit=1)[0] == record


def test_times_come_back_as_utc_whatever_zone_they_were_given_in(store: SqlStore) -> None:
    seen(store)
    elsewhere = T0.astimezone(__import__("datetime").timezone(timedelta(hours=5)))
    record = store.append("i-1", RecordKind.HOST, elsewhere)
    assert record.time == T0 and record.time.utcoffset() == timedelta(0)


def test_history_pages_back_newest_first(store: SqlStore) -> None:
    seen(store)
    appended = [store.append("i-1", RecordKind.HOST, T0, detail=str(n)).id for n in range(10)]
    everything = [r.id for r in store.history("i-1", limit=100)]
    assert everything == sorted(everything, reverse=True) and everything[:10] == appended[::-1]
    page = store.history("i-1", limit=4)
    following = store.history("i-1", limit=4, before=page[-1].id)
    assert [r.id for r in page + following] == everything[:8]
    with pytest.raises(InvalidOption):
        store.history("i-1", limit=0)


def test_retention_keeps_the_newest_records_per_instance(store_url: str) -> None:
    store = SqlStore(store_url, retention=5)
    try:
        seen(store, "a")
        seen(store, "b")
        for n in range(12):
            store.append("a", RecordKind.HOST, T0, detail=str(n))
        assert [r.detail for r in store.history("a", limit=100)] == ["11", "10", "9", "8", "7"]
        assert len(store.history("b", limit=100)) == 1  # another instance's records are untouched
    finally:
        store.close()
    smaller = SqlStore(store_url, retention=2)  # a smaller retention applies from the next append
    try:
        smaller.append("a", RecordKind.HOST, T0, detail="12")
        assert [r.detail for r in smaller.history("a", limit=100)] == ["12", "11"]
    finally:
        smaller.close()
    with pytest.raises(InvalidOption):
        SqlStore(store_url, retention=0)


def test_a_vanished_instance_is_forgotten_but_its_history_stays(store: SqlStore) -> None:
    seen(store)
    record = store.record_vanished("h1", "i-1", T0)
    assert (record.cause, record.from_state, record.to_state) == (Cause.VANISHED, PowerState.RUNNING, None)
    with pytest.raises(UnknownInstance):
        store.instance("i-1")
    assert store.history("i-1")[0] == record
    store.record_observation("h1", reading(), previous=None, cause=Cause.APPEARED)  # it comes back
    assert store.instance("i-1").policy is Policy.MANUAL
    assert len(store.history("i-1")) == 3


def test_an_unreachable_host_makes_its_instances_stale_until_it_answers(store: SqlStore) -> None:
    seen(store, "a", "h1")
    seen(store, "b", "h2")
    assert store.set_host_reachable("h1", False, T0, "connection refused")
    assert not store.set_host_reachable("h1", False, T0 + timedelta(seconds=1), "still refused")
    host = {h.name: h for h in store.hosts()}["h1"]
    assert (host.reachable, host.since, host.error) == (False, T0, "connection refused")
    a, b = store.instance("a"), store.instance("b")
    assert (a.stale, a.power_state, b.stale) == (True, PowerState.RUNNING, False)
    assert store.history("a", limit=1)[0].detail == "host unreachable: connection refused"
    assert store.set_host_reachable("h1", True, T0 + timedelta(seconds=9))
    assert not store.instance("a").stale
    assert store.history("a", limit=1)[0].kind is RecordKind.HOST
    with pytest.raises(KeeperError, match="no host named 'h9'"):
        store.set_host_reachable("h9", False, T0)


def test_a_new_reading_clears_staleness(store: SqlStore) -> None:
    seen(store)
    store.set_host_reachable("h1", False, T0)
    store.record_observation(
        "h1", reading(state=PowerState.SHUTOFF), previous=PowerState.RUNNING, cause=Cause.RESYNC
    )
    assert not store.instance("i-1").stale


def test_changes_since_names_instances_whose_policy_quarantine_or_actions_changed(store: SqlStore) -> None:
    for name in ("a", "b", "c"):
        seen(store, name)
    cursor, changed = store.changes_since(0)
    assert changed == []
    store.set_policy("b", Policy.HALTED, "me")
    cursor, changed = store.changes_since(cursor)
    assert changed == ["b"]
    opened = store.open_action("c", "start", {}, "me")
    store.quarantine("a", "why", T0)
    cursor, changed = store.changes_since(cursor)
    assert changed == ["c", "a"]
    store.start_action(opened.id, T0)
    store.finish_action(opened.id, ActionStatus.DONE, T0)
    store.append("a", RecordKind.HOST, T0)  # history alone is not a change to act on
    cursor, changed = store.changes_since(cursor)
    assert changed == ["c"]
    assert store.changes_since(cursor) == (cursor, [])
    with pytest.raises(InvalidOption):
        store.changes_since(-1)


def test_threads_share_one_store(store_url: str) -> None:
    """The keeper's threads write through one store at once: every write lands, retention holds."""
    store = SqlStore(store_url, retention=15)
    names = [f"i-{n}" for n in range(8)]
    for name in names:
        seen(store, name)
    errors: list[BaseException] = []

    def work(name: str) -> None:
        try:
            for n in range(20):
                store.append(name, RecordKind.HOST, T0, detail=str(n))
            opened = store.open_action(name, "start", {}, name)
            store.finish_action(opened.id, ActionStatus.DONE, T0)
        except BaseException as error:  # reported by the test, not lost in a thread
            errors.append(error)

    threads = [threading.Thread(target=work, args=(name,)) for name in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for name in names:
        records = store.history(name, limit=100)
        assert len(records) == 15
        assert records[0].kind is RecordKind.ACTION and records[1].detail == "19"
    assert store.open_actions() == []
    store.close()


def test_a_claim_is_alive_until_released_and_refused_to_anyone_else_meanwhile(
    store: SqlStore, store_url: str
) -> None:
    store.register_host("h1", "fake", None)
    claim = store.claim_host("h1")
    assert claim.alive() and claim.host == "h1"
    other = SqlStore(store_url)
    try:
        with pytest.raises(HostAlreadyKept):
            other.claim_host("h1")
        with pytest.raises(HostAlreadyKept):
            store.claim_host("h1")  # the same store object too: one keeper per host
        claim.release()
        assert not claim.alive()
        claim.release()  # a second release does nothing
        taken = other.claim_host("h1")
        assert taken.alive()
        taken.release()
    finally:
        other.close()
