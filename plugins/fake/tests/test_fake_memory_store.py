"""The in-memory store: transactions change the one document in place and an undo journal rolls them back."""

from __future__ import annotations

import copy
import threading

import pytest
from fake_helpers import DriverFactory
from powerdrivers_fake._seed import new_record, seed_document
from powerdrivers_fake._store import Document, MemoryStore

from powerdrivers import InstanceSpec, PowerState


class _Boom(Exception):
    pass


def _store(instances: int = 3) -> MemoryStore:
    return MemoryStore(lambda: seed_document("empty", instances))


def _change_everything(store: MemoryStore, document: Document) -> None:
    """Replace, add and remove records, log an event and move the sequence number."""
    first, second, *_ = list(document["instances"].values())
    changed = dict(first, state="paused", reason="user")
    store.put(document, changed)
    changed["reason"] = "changed after put"
    store.put(document, dict(changed, reason="put twice"))
    store.remove(document, second["id"])
    store.put(document, new_record("added", "running", "booted"))
    document["seq"] += 1
    document["events"].append({"seq": document["seq"]})


def test_a_transaction_that_raises_leaves_the_document_as_it_was() -> None:
    store = _store()
    before = copy.deepcopy(store.committed)
    records = dict(store.committed["instances"])
    with pytest.raises(_Boom), store.transaction() as document:
        _change_everything(store, document)
        raise _Boom
    assert store.committed == before
    # The very record objects are back: a committed record is never changed in place.
    assert all(store.committed["instances"][key] is record for key, record in records.items())


def test_a_committed_transaction_keeps_its_changes_and_a_later_rollback_keeps_them_too() -> None:
    store = _store()
    with store.transaction() as document:
        _change_everything(store, document)
    committed = copy.deepcopy(store.committed)
    with pytest.raises(_Boom), store.transaction() as document:
        store.remove(document, next(iter(document["instances"])))
        raise _Boom
    assert store.committed == committed


def test_a_nested_transaction_that_raises_undoes_only_its_own_changes() -> None:
    store = _store()
    with store.transaction() as outer:
        _change_everything(store, outer)
        after_outer = copy.deepcopy(outer)
        with pytest.raises(_Boom), store.transaction() as inner:
            store.remove(inner, next(iter(inner["instances"])))
            inner["seq"] += 1
            inner["events"].append({"seq": inner["seq"]})
            raise _Boom
        assert outer == after_outer
    assert store.committed == after_outer


def test_transactions_cost_no_copy_of_the_instances() -> None:
    store = _store(instances=10)
    instances = store.committed["instances"]
    with store.transaction() as document:
        assert document["instances"] is instances


def test_readers_never_see_a_transaction_that_is_rolled_back(make_driver: DriverFactory) -> None:
    driver = make_driver(seed="empty", instances=50)
    names = [f"vm-{number:05d}" for number in range(0, 50, 2)]
    store = driver._store
    assert isinstance(store, MemoryStore)
    stop = threading.Event()
    seen: list[PowerState] = []

    def write_and_roll_back() -> None:
        while not stop.is_set():
            with pytest.raises(_Boom), store.transaction() as document:
                for name in names:
                    record = driver._find(document, name)
                    store.put(document, dict(record, state="paused", reason="user"))
                raise _Boom

    writer = threading.Thread(target=write_and_roll_back)
    writer.start()
    try:
        for _ in range(200):
            seen.extend(reading.power_state for reading in driver.list_instances() if reading.name in names)
            seen.append(driver.get_instance(names[-1]).power_state)
    finally:
        stop.set()
        writer.join(10)
    assert set(seen) == {PowerState.RUNNING}


def test_lookups_by_name_follow_spawn_delete_and_respawn(make_driver: DriverFactory) -> None:
    driver = make_driver(seed="empty", instances=20)
    assert driver.get_instance("vm-00019").name == "vm-00019"
    first = driver.spawn(InstanceSpec("again"))
    assert driver.get_instance("again").id == first.id
    driver.delete("again")
    second = driver.spawn(InstanceSpec("again"))
    assert second.id != first.id
    assert driver.get_instance("again").id == second.id
    assert driver.pause("again").id == second.id
