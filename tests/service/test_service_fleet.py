"""The Fleet on SQLite: one process owns every host, keeps it, and publishes what changes."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar

import pytest

from powerdrivers import (
    HypervisorConnectionError,
    InstanceReading,
    InvalidOption,
    InvalidStateTransition,
    PowerDriversError,
    PowerState,
    load_driver,
)
from powerdrivers.keeper import ActionStatus, Cause, Policy, RecordKind, StoreError, UnknownInstance
from powerdrivers.service._bus import EventBus, ServiceEvent, SubscriptionClosed, SubscriptionOverflow
from powerdrivers.service._config import ServiceConfig, load_config
from powerdrivers.service._fleet import Fleet

_T = TypeVar("_T")
_WAIT_S = 15.0


def _wait_for(condition: Callable[[], _T | None], what: str) -> _T:
    deadline = time.monotonic() + _WAIT_S
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def test_every_host_is_owned_and_its_instances_appear(fleet: Fleet) -> None:
    assert fleet.owned_hosts() == ["host-1", "host-2"]
    hosts = {host.name: host for host in fleet.hosts()}
    assert sorted(hosts) == ["host-1", "host-2"]
    assert all(host.reachable and host.driver == "fake" and host.owner for host in hosts.values())
    items, following = fleet.instances(limit=1000)
    assert following is None
    assert len(items) == 8
    assert {view.host for view in items} == {"host-1", "host-2"}
    assert {view.power_state for view in items} == {PowerState.RUNNING, PowerState.SHUTOFF}
    running, _ = fleet.instances(host="host-1", power_state="running")
    assert sorted(view.name for view in running) == ["h1-vm-0", "h1-vm-2"]
    assert fleet.available()


def test_pages_and_filters_are_checked(fleet: Fleet) -> None:
    first, cursor = fleet.instances(limit=3)
    assert len(first) == 3 and cursor is not None
    rest, end = fleet.instances(after=cursor, limit=100)
    assert end is None and len(rest) == 5
    assert not {view.id for view in first} & {view.id for view in rest}
    with pytest.raises(InvalidOption, match="power_state is one of"):
        fleet.instances(power_state="asleep")
    with pytest.raises(InvalidOption, match="policy is one of"):
        fleet.instances(policy="sometimes")


def test_a_requested_action_is_carried_out_by_the_owner(fleet: Fleet) -> None:
    (target, *_), _ = fleet.instances(host="host-2", power_state="running")
    action = fleet.request(target.id, "shutdown", "ops", timeout=5, force=True)
    assert action.status is ActionStatus.PENDING and action.requested_by == "ops"
    _wait_for(lambda: fleet.action(action.id).status is ActionStatus.DONE, "the shutdown to be done")
    ended = fleet.action(action.id)
    assert ended.outcome is not None
    _wait_for(lambda: fleet.instance(target.id).power_state is PowerState.SHUTOFF, "the instance to be off")
    records = fleet.history(target.id)
    assert any(record.kind.value == "action" and record.requested_by == "ops" for record in records)


def test_an_operation_the_state_does_not_allow_names_the_allowed_states(fleet: Fleet) -> None:
    (off, *_), _ = fleet.instances(power_state="shutoff")
    before = fleet.history(off.id)
    with pytest.raises(InvalidStateTransition) as caught:
        fleet.request(off.id, "pause", "ops")
    assert caught.value.allowed == ("running",)
    assert "shutoff" in str(caught.value) and "allowed from: running" in str(caught.value)
    assert fleet.instance(off.id).in_flight is None
    assert fleet.history(off.id) == before
    with pytest.raises(InvalidOption, match="takes no option"):
        fleet.request(off.id, "start", "ops", force=True)
    with pytest.raises(UnknownInstance):
        fleet.request("no-such-instance", "start", "ops")


def test_a_policy_is_kept_by_the_owner(fleet: Fleet) -> None:
    (off, *_), _ = fleet.instances(host="host-1", power_state="shutoff")
    view = fleet.set_policy(off.id, Policy.ALWAYS, "ops")
    assert view.policy is Policy.ALWAYS
    _wait_for(lambda: fleet.instance(off.id).power_state is PowerState.RUNNING, "the keeper to start it")
    assert any(
        record.kind is RecordKind.POLICY and record.requested_by == "ops" for record in fleet.history(off.id)
    )
    released = fleet.release_quarantine(off.id, "ops")
    assert released.quarantined is False


def test_changes_are_published_on_the_bus(fleet: Fleet, service_config: ServiceConfig) -> None:
    events: list[ServiceEvent] = []
    lock = threading.Lock()

    def listen(event: ServiceEvent) -> None:
        with lock:
            events.append(event)

    fleet.bus.add_listener(listen)
    (target, *_), _ = fleet.instances(host="host-1", power_state="running")
    # Changed behind the service's back, as another tool would: the keeper sees it, the feed tells.
    with load_driver("fake", service_config.hosts[0].uri) as driver:
        driver.power_off(target.id)

    def published() -> list[ServiceEvent] | None:
        with lock:
            found = [e for e in events if e.data.get("instance_id", e.data.get("id")) == target.id]
        kinds = [e.type for e in found]
        return found if "record" in kinds and "instance" in kinds else None

    found = _wait_for(published, "a record and an instance event")
    record = next(e for e in found if e.type == "record")
    assert record.id is not None and record.id == record.data["id"] and record.data["to_state"] == "shutoff"
    assert next(e for e in found if e.type == "instance").id is None
    assert fleet.records_since(record.id - 1)[0].id == record.id


def test_an_unloadable_host_is_recorded_unreachable_and_retried(
    service_config_factory: Callable[..., ServiceConfig],
) -> None:
    path = service_config_factory(hosts=1).path
    with path.open("a") as config_file:
        config_file.write(
            '[[hosts]]\nname = "broken"\ndriver = "fake"\nuri = "fake:///"\n'
            'options = { fail_connect = "connection" }\n'
        )
    config = load_config(path)
    with Fleet(config) as running:
        assert running.owned_hosts() == ["host-1"]
        broken = next(host for host in running.hosts() if host.name == "broken")
        assert not broken.reachable and broken.owner is None
        assert broken.error and "connect" in broken.error
        items, _ = running.instances(host="host-1")
        assert len(items) == 4


def test_the_bus_delivers_to_asyncio_subscribers_and_drops_a_slow_one() -> None:
    bus = EventBus()

    async def scenario() -> None:
        fast = bus.subscribe(maxsize=10)
        slow = bus.subscribe(maxsize=2)
        publisher = threading.Thread(target=_publish, args=(bus, 3))
        publisher.start()
        publisher.join()
        assert [(await fast.get()).id for _ in range(3)] == [1, 2, 3]
        with pytest.raises(SubscriptionOverflow):
            await slow.get()
        assert bus.subscribers == 1
        bus.close()
        with pytest.raises(SubscriptionClosed):
            await fast.get()

    asyncio.run(scenario())


def _publish(bus: EventBus, count: int) -> None:
    for number in range(1, count + 1):
        bus.publish(ServiceEvent(number, "record", {"n": number}))


def test_the_bus_survives_bad_listeners_closed_loops_and_bad_sizes(caplog: pytest.LogCaptureFixture) -> None:
    bus = EventBus()
    seen: list[int | None] = []

    def broken(event: ServiceEvent) -> None:
        raise RuntimeError("listener bug")

    remove_broken = bus.add_listener(broken)
    remove_seen = bus.add_listener(lambda event: seen.append(event.id))

    async def subscribe_and_close() -> None:
        subscription = bus.subscribe()
        assert subscription.pending == 0
        subscription.close()
        subscription.close()
        with pytest.raises(SubscriptionClosed):
            await subscription.get()

    asyncio.run(subscribe_and_close())

    async def abandon() -> None:
        bus.subscribe()  # never read, and its loop ends with it

    asyncio.run(abandon())
    assert bus.subscribers == 1
    bus.publish(ServiceEvent(7, "record"))
    assert seen == [7] and bus.subscribers == 0
    assert "an event listener failed" in caplog.text
    remove_broken()
    remove_seen()
    remove_seen()
    bus.publish(ServiceEvent(8, "record"))
    assert seen == [7]

    async def bad_size() -> None:
        with pytest.raises(InvalidOption, match="maxsize"):
            bus.subscribe(maxsize=0)

    asyncio.run(bad_size())


def test_a_fleet_starts_once_and_leaves_a_given_store_open(service_config: ServiceConfig) -> None:
    from powerdrivers.keeper._store import open_store

    store = open_store(service_config.store_url())
    try:
        with Fleet(service_config, store) as running:
            assert running.store is store
            with pytest.raises(PowerDriversError, match="already started"):
                running.start()
        assert store.available()
        assert [host.owner for host in store.hosts()] == [None, None]
    finally:
        store.close()
    idle = Fleet(service_config)
    assert not idle.available()
    with pytest.raises(PowerDriversError, match="not started"):
        idle.hosts()
    with pytest.raises(PowerDriversError, match="not started"):
        idle.history("x")


def test_a_store_that_cannot_be_opened_leaves_nothing_running(
    service_config_factory: Callable[..., ServiceConfig], tmp_path: Path
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    config = service_config_factory(hosts=1, store=f"sqlite:///{blocker / 'service.db'}")
    before = threading.active_count()
    with pytest.raises(StoreError):
        Fleet(config).start()
    assert threading.active_count() == before


def test_a_second_fleet_on_the_same_sqlite_file_owns_nothing_until_the_first_stops(
    service_config_factory: Callable[..., ServiceConfig],
) -> None:
    first = Fleet(service_config_factory(extra="takeover_interval = 0.1", name="first.toml"))
    first.start()
    try:
        with Fleet(service_config_factory(extra="takeover_interval = 0.1", name="second.toml")) as second:
            assert second.owned_hosts() == []
            first.stop()
            _wait_for(lambda: second.owned_hosts() == ["host-1", "host-2"], "the take-over")
    finally:
        first.stop()


def test_a_host_that_cannot_be_loaded_is_tried_again_until_it_can(
    service_config_factory: Callable[..., ServiceConfig], tmp_path: Path
) -> None:
    path = service_config_factory(hosts=1, extra="takeover_interval = 0.05").path
    later = tmp_path / "later.json"
    later.mkdir()  # a folder where the fake wants its state file: its driver cannot be loaded
    with path.open("a") as config_file:
        config_file.write(f'[[hosts]]\nname = "later"\ndriver = "fake"\nuri = "fake://{later}"\n')
    with Fleet(load_config(path)) as running:
        assert running.owned_hosts() == ["host-1"]
        assert "is a directory" in (next(h for h in running.hosts() if h.name == "later").error or "")
        later.rmdir()
        _wait_for(lambda: running.owned_hosts() == ["host-1", "later"], "the host to be loaded on a retry")
        _wait_for(
            lambda: next(h for h in running.hosts() if h.name == "later").reachable, "it to be reachable"
        )


def test_hosts_are_taken_on_concurrently_so_a_slow_one_holds_up_no_other(
    service_config_factory: Callable[..., ServiceConfig],
) -> None:
    # Every call of both hosts' drivers takes 2 s: each first resync lasts that long. Taken on one
    # after the other, the second would begin when the first ended; together, both end at once.
    config = service_config_factory(hosts=2, host_options="latency = 2")
    fleet = Fleet(config)
    ended: dict[str, float] = {}

    def first_resync_ended(host: str, seconds: float) -> None:
        ended.setdefault(host, time.monotonic())

    fleet.add_sync_listener(first_resync_ended)
    fleet.start()
    try:
        assert fleet.owned_hosts() == ["host-1", "host-2"]
        assert set(ended) == {"host-1", "host-2"}
        assert abs(ended["host-1"] - ended["host-2"]) < 1.0
    finally:
        fleet.stop()


def test_an_action_on_a_host_nobody_can_reach_is_refused_and_nothing_is_written(fleet: Fleet) -> None:
    (target, *_), _ = fleet.instances(host="host-1", power_state="running")
    fleet.store.set_host_reachable("host-1", False, datetime.now(UTC), "connection refused")
    with pytest.raises(HypervisorConnectionError, match="'host-1' cannot be reached now"):
        fleet.request(target.id, "power_off", "ops")
    # A host no process keeps (its owner gone, nobody took it over yet) cannot act either.
    fleet.store.register_host("ghost", "fake", None)
    ghost = InstanceReading(
        "ghost-1", "ghost-1", PowerState.RUNNING, None, "running", None, datetime.now(UTC)
    )
    fleet.store.record_observation("ghost", ghost, previous=None, cause=Cause.APPEARED)
    with pytest.raises(HypervisorConnectionError, match="no service process keeps host 'ghost'"):
        fleet.request("ghost-1", "power_off", "ops")
    assert fleet.store.open_actions() == []
    fleet.store.set_host_reachable("host-1", True, datetime.now(UTC))
    action = fleet.request(target.id, "power_off", "ops")
    _wait_for(lambda: fleet.action(action.id).status is ActionStatus.DONE, "the action once it answers")
