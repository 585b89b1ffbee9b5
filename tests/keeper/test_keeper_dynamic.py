"""A keeper whose hosts come and go while it runs: how a service takes hosts over and lets them go."""

from __future__ import annotations

import threading

import pytest
from engine_support import QUICK, fake_host, wait_until
from powerdrivers_fake import instance_id

from powerdrivers import ConfigurationError, PowerState
from powerdrivers.keeper import ActionStatus, HostAlreadyKept, Keeper, KeeperError, KeeperSettings, SqlStore

WEB1 = instance_id("web-1")


def dynamic_keeper(store: SqlStore) -> Keeper:
    return Keeper(store, {}, KeeperSettings.from_options(**QUICK), dynamic=True)


def test_a_keeper_with_no_hosts_needs_to_say_it_is_dynamic(store: SqlStore) -> None:
    with pytest.raises(ConfigurationError, match="dynamic=True"):
        Keeper(store, {})


def test_a_host_added_to_a_running_keeper_is_kept_and_a_removed_one_is_let_go(store: SqlStore) -> None:
    with fake_host() as driver, dynamic_keeper(store) as keeper:
        assert keeper.kept_hosts() == []
        keeper.add_host("h1", driver)
        assert keeper.kept_hosts() == ["h1"]
        (host,) = store.hosts()
        assert host.owner is not None
        assert keeper.view(WEB1).power_state is PowerState.RUNNING  # the first resync has run
        action = keeper.request(WEB1, "power_off", requested_by="ops")
        assert keeper.wait(action.id).status is ActionStatus.DONE

        keeper.remove_host("h1")
        assert keeper.kept_hosts() == []
        assert store.hosts()[0].owner is None
        # Nobody keeps h1 now: a request is recorded and waits for a keeper.
        waiting = keeper.request(WEB1, "start", requested_by="ops")
        assert store.action(waiting.id).status is ActionStatus.PENDING
        with Keeper(store, {"h1": driver}, KeeperSettings.from_options(**QUICK)) as other:
            assert other.wait(waiting.id).status is ActionStatus.DONE  # the claim was free again


def test_a_host_added_with_a_claim_already_held_is_adopted_not_claimed_twice(store: SqlStore) -> None:
    with fake_host() as driver, dynamic_keeper(store) as keeper:
        claim = store.claim_host("h1")
        keeper.add_host("h1", driver, claim=claim)
        with pytest.raises(HostAlreadyKept):
            store.claim_host("h1")
        keeper.remove_host("h1")
        store.claim_host("h1").release()  # the adopted claim was released with the host


def test_adding_a_host_kept_elsewhere_fails_and_leaves_nothing_behind(store: SqlStore) -> None:
    with fake_host() as driver, dynamic_keeper(store) as keeper:
        held = store.claim_host("h1")
        with pytest.raises(HostAlreadyKept):
            keeper.add_host("h1", driver)
        assert keeper.kept_hosts() == []
        held.release()
        keeper.add_host("h1", driver)
        with pytest.raises(KeeperError, match="already keeps host 'h1'"):
            keeper.add_host("h1", driver)
        with pytest.raises(KeeperError, match="does not keep host 'h2'"):
            keeper.remove_host("h2")


def test_hosts_are_added_only_to_a_running_keeper(store: SqlStore) -> None:
    keeper = dynamic_keeper(store)
    with fake_host() as driver:
        with pytest.raises(KeeperError, match="not running"):
            keeper.add_host("h1", driver)
        with keeper:
            pass
        with pytest.raises(KeeperError, match="not running"):
            keeper.add_host("h1", driver)
        store.claim_host("h1").release()  # nothing was left claimed


def test_hosts_added_and_removed_from_many_threads_end_kept_once_each(store: SqlStore) -> None:
    drivers = [fake_host() for _ in range(6)]
    errors: list[BaseException] = []

    def churn(index: int) -> None:
        name = f"h{index}"
        try:
            for _ in range(3):
                keeper.add_host(name, drivers[index])
                keeper.remove_host(name)
            keeper.add_host(name, drivers[index])
        except BaseException as error:  # reported below, with the thread's host
            errors.append(error)

    try:
        with dynamic_keeper(store) as keeper:
            threads = [threading.Thread(target=churn, args=(index,)) for index in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            assert keeper.kept_hosts() == [f"h{index}" for index in range(6)]
            owners = {host.name: host.owner for host in store.hosts()}
            assert all(owners[f"h{index}"] for index in range(6))
        assert all(host.owner is None for host in store.hosts())
    finally:
        for driver in drivers:
            driver.close()


def test_a_request_written_by_another_process_wakes_the_keeper_at_once(postgres_url: str) -> None:
    # Another process's write reaches the owner through PostgreSQL's LISTEN/NOTIFY; a poll
    # interval of a minute gives the fallback no chance to be what woke it.
    settings = KeeperSettings.from_options(**{**QUICK, "poll_interval": 60})
    store, other = SqlStore(postgres_url), SqlStore(postgres_url)
    try:
        with fake_host() as driver, Keeper(store, {"h1": driver}, settings):
            action = other.open_action(WEB1, "power_off", {}, "ops")
            done = wait_until(
                lambda: other.action(action.id).status is ActionStatus.DONE, timeout=5, what="the action done"
            )
            assert done
    finally:
        other.close()
        store.close()


def test_sync_listeners_hear_each_full_resync_of_each_host_until_removed(store: SqlStore) -> None:
    heard: list[tuple[str, float]] = []
    with fake_host() as driver, dynamic_keeper(store) as keeper:
        remove = keeper.add_sync_listener(lambda host, seconds: heard.append((host, seconds)))
        keeper.add_host("h1", driver)  # returns after its first resync
        assert [host for host, _ in heard] == ["h1"]
        keeper.resync()
        assert [host for host, _ in heard] == ["h1", "h1"]
        assert all(0 <= seconds < 60 for _, seconds in heard)
        remove()
        keeper.resync()
        assert len(heard) == 2
