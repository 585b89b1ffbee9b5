"""A service's reads of the store: pages of instances, counts, every instance's history, actions by id."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest
from store_support import both_databases

from powerdrivers import InstanceReading, InvalidOption, PowerState
from powerdrivers.keeper import ActionStatus, Cause, KeeperError, Policy, SqlStore, UnknownAction
from powerdrivers.keeper._store_views import encode_cursor

pytestmark = both_databases

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
HOSTS = ("alpha", "beta", "gamma")
STATES = (PowerState.RUNNING, PowerState.SHUTOFF, PowerState.PAUSED)
PER_HOST = 40


def fill(store: SqlStore) -> list[tuple[str, str]]:
    """Register ``HOSTS`` with ``PER_HOST`` instances each, states in turn; return all (host, id), sorted."""
    made = []
    for host in HOSTS:
        store.register_host(host, "fake", None)
        for number in range(PER_HOST):
            instance_id = f"{host[0]}-{number:03d}"
            state = STATES[number % len(STATES)]
            reading = InstanceReading(instance_id, instance_id, state, None, state.value, None, T0)
            store.record_observation(host, reading, previous=None, cause=Cause.APPEARED)
            made.append((host, instance_id))
    return sorted(made)


def walk(store: SqlStore, limit: int, **filters: object) -> list[tuple[str, str]]:
    """Every (host, id) the pages of ``limit`` give, following the cursors to the end."""
    seen: list[tuple[str, str]] = []
    after = None
    while True:
        page, after = store.instances_page(after=after, limit=limit, **filters)  # type: ignore[arg-type]
        assert len(page) <= limit
        seen.extend((view.host, view.id) for view in page)
        if after is None:
            return seen
        assert len(page) == limit


def test_pages_walk_every_instance_once_in_host_then_id_order(store: SqlStore) -> None:
    made = fill(store)
    for limit in (1, 7, 40, 1000):
        assert walk(store, limit) == made
    first, after = store.instances_page(limit=5)
    assert after is not None and all(c.isalnum() or c in "-_" for c in after)
    assert [view.id for view in first] == [instance_id for _, instance_id in made[:5]]
    assert store.instances_page(limit=len(made))[1] is None  # exactly the last: no next page


def test_every_filter_and_their_combination_narrows_the_pages(store: SqlStore) -> None:
    made = fill(store)
    store.set_policy("b-004", Policy.ALWAYS, "alice")
    store.set_policy("g-007", Policy.ALWAYS, "alice")
    store.set_policy("a-001", Policy.ON_FAILURE, "alice")
    assert walk(store, 6, host="beta") == [pair for pair in made if pair[0] == "beta"]
    paused = walk(store, 6, power_state=PowerState.PAUSED)
    assert len(paused) == len(HOSTS) * sum(1 for n in range(PER_HOST) if n % 3 == 2)
    assert all(store.instance(instance_id).power_state is PowerState.PAUSED for _, instance_id in paused)
    assert walk(store, 1, policy=Policy.ALWAYS) == [("beta", "b-004"), ("gamma", "g-007")]
    assert walk(store, 10, policy="always", host="gamma", power_state="shutoff") == [("gamma", "g-007")]
    assert walk(store, 10, policy="always", host="gamma", power_state="running") == []
    assert walk(store, 10, host="nowhere") == []
    assert walk(store, 10, host="alpha", policy=Policy.MANUAL) == [
        pair for pair in made if pair[0] == "alpha" and pair[1] != "a-001"
    ]


def test_a_page_shows_each_instance_s_open_action(store: SqlStore) -> None:
    fill(store)
    opened = store.open_action("a-002", "start", {}, "alice")
    page, _ = store.instances_page(host="alpha", limit=5)
    flights = {view.id: view.in_flight for view in page}
    assert flights["a-002"] == opened
    assert [instance_id for instance_id, flight in flights.items() if flight is not None] == ["a-002"]


def test_a_page_after_an_instance_removed_since_goes_on_from_where_it_was(
    store: SqlStore,
) -> None:
    made = fill(store)
    first, after = store.instances_page(limit=10)
    store.record_vanished("alpha", first[-1].id, T0 + timedelta(seconds=1))
    page, _ = store.instances_page(after=after, limit=200)
    assert [(view.host, view.id) for view in page] == made[10:]


@pytest.mark.parametrize(
    "cursor",
    [
        "",
        "not base64 !",
        "@@@@",
        base64.urlsafe_b64encode(b"not json").decode(),
        base64.urlsafe_b64encode(b'{"host": "a"}').decode(),
        base64.urlsafe_b64encode(b'["a"]').decode(),
        base64.urlsafe_b64encode(b'["a", 1]').decode(),
        base64.urlsafe_b64encode(b"\xff\xfe").decode(),
        encode_cursor("h" * 300, "x"),
        "A" * 5000,
    ],
)
def test_a_bad_cursor_is_refused_naming_the_cursor(store: SqlStore, cursor: str) -> None:
    fill(store)
    with pytest.raises(InvalidOption, match=r"^cursor ") as caught:
        store.instances_page(after=cursor)
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 200


@pytest.mark.parametrize(
    ("options", "named"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"power_state": "asleep"}, "power_state"),
        ({"policy": "sometimes"}, "policy"),
        ({"host": 7}, "host"),
        ({"after": 12}, "cursor"),
    ],
)
def test_bad_page_options_are_refused_naming_them(
    store: SqlStore, options: dict[str, object], named: str
) -> None:
    with pytest.raises(InvalidOption, match=named):
        store.instances_page(**options)  # type: ignore[arg-type]


def test_instance_counts_are_per_host_and_power_state(store: SqlStore) -> None:
    assert store.instance_counts() == {}
    fill(store)
    counts = store.instance_counts()
    per_state = {state: sum(1 for n in range(PER_HOST) if STATES[n % 3] is state) for state in STATES}
    assert counts == {(host, state.value): per_state[state] for host in HOSTS for state in STATES}


def test_records_after_reads_every_instance_s_history_in_id_order(store: SqlStore) -> None:
    assert store.last_record_id() == 0
    assert store.records_after(0) == []
    fill(store)
    store.set_policy("b-001", Policy.ALWAYS, "alice")
    everything = store.records_after(0, limit=10_000)
    assert len(everything) == len(HOSTS) * PER_HOST + 1
    ids = [record.id for record in everything]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert store.last_record_id() == ids[-1]
    assert everything[-1].instance_id == "b-001" and everything[-1].requested_by == "alice"
    paged = []
    last = 0
    while batch := store.records_after(last, limit=17):
        assert len(batch) <= 17
        paged.extend(batch)
        last = batch[-1].id
    assert paged == everything
    assert store.records_after(ids[-1]) == []


@pytest.mark.parametrize(
    ("after_id", "limit"), [(-1, 10), ("x", 10), (True, 10), (0, 0), (0, 10_001), (2**64, 10)]
)
def test_records_after_refuses_bad_arguments(store: SqlStore, after_id: object, limit: object) -> None:
    with pytest.raises(InvalidOption):
        store.records_after(after_id, limit)  # type: ignore[arg-type]


@pytest.mark.parametrize("action_id", [999, 0, -1, 2**63, 2**80, True, "1", 1.5, None])
def test_an_unknown_or_impossible_action_id_is_unknown_action(store: SqlStore, action_id: object) -> None:
    with pytest.raises(UnknownAction) as caught:
        store.action(action_id)  # type: ignore[arg-type]
    assert isinstance(caught.value, KeeperError)
    assert "\n" not in str(caught.value)


def test_a_known_action_is_read_back(store: SqlStore) -> None:
    fill(store)
    opened = store.open_action("g-001", "reboot", {"force": True}, "alice")
    assert store.action(opened.id) == opened
    done = store.finish_action(opened.id, ActionStatus.DONE, T0 + timedelta(seconds=2))
    assert store.action(opened.id) == done


def test_available_says_the_database_answers(store: SqlStore) -> None:
    assert store.available() is True
