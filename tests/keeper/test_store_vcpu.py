"""The store's VCPU samples: rounds written and read back, retention, bad input, writers side by side."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from store_support import both_databases

from powerdrivers import InstanceVcpuStats, InvalidOption, VcpuStats
from powerdrivers.keeper import KeeperError, SqlStore, VcpuSample
from powerdrivers.keeper._store_db import CHANNEL

T0 = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
#: VCPU statistics a driver with a bug might give: not statistics at all, a VCPU numbered below 0.
NOT_STATS = InstanceVcpuStats("a", "a", 1.0, ("x",))  # type: ignore[arg-type]
BELOW_0 = InstanceVcpuStats("a", "a", 1.0, (VcpuStats(-1, 0.5, 0.5, 0.0, 1.0),))


def round_of(
    instance_id: str, vcpus: int = 2, measured: bool = True, window_s: float = 5.0
) -> InstanceVcpuStats:
    """One instance's statistics over a window: VCPU n runs a tenth more than VCPU n-1."""
    stats = tuple(
        VcpuStats(
            vcpu,
            0.1 + 0.1 * vcpu,
            0.5,
            0.05,
            5.0,
            *((0.25, 100.0 + vcpu, 20.5, 3.0) if measured else ()),
        )
        for vcpu in range(vcpus)
    )
    return InstanceVcpuStats(instance_id, f"name-{instance_id}", 5.0, stats)


@both_databases
def test_a_round_is_stored_per_vcpu_and_read_back_whole_in_time_order(store: SqlStore) -> None:
    assert store.record_vcpu_samples("h1", T0, [round_of("a"), round_of("b", vcpus=1, measured=False)]) == 3
    assert store.record_vcpu_samples("h1", T0 + timedelta(seconds=5), [round_of("a")]) == 2
    samples = store.vcpu_samples("a", T0 - timedelta(seconds=1))
    assert [(s.at, s.vcpu) for s in samples] == [
        (T0, 0),
        (T0, 1),
        (T0 + timedelta(seconds=5), 0),
        (T0 + timedelta(seconds=5), 1),
    ]
    assert samples[1] == VcpuSample("a", "h1", 1, T0, 5.0, 0.2, 0.5, 0.05, 0.25, 101.0, 20.5, 3.0)
    assert samples[1].at.tzinfo is not None and samples[1].at.utcoffset() == timedelta(0)
    (unmeasured,) = store.vcpu_samples("b", T0 - timedelta(seconds=1))
    assert (unmeasured.halted, unmeasured.halt_exits, unmeasured.io_exits, unmeasured.mmio_exits) == (
        None,
        None,
        None,
        None,
    )
    assert unmeasured.to_dict() == {
        "instance_id": "b",
        "host": "h1",
        "vcpu": 0,
        "at": "2026-12-03T04:00:00+00:00",
        "window_s": 5.0,
        "running": 0.1,
        "blocked": 0.5,
        "waiting": 0.05,
        "halted": None,
        "halt_exits": None,
        "io_exits": None,
        "mmio_exits": None,
    }


@both_databases
def test_the_period_is_open_at_since_closed_at_until_and_the_limit_keeps_the_oldest(store: SqlStore) -> None:
    for second in range(5):
        store.record_vcpu_samples("h1", T0 + timedelta(seconds=second), [round_of("a", vcpus=1)])
    in_period = store.vcpu_samples("a", T0, T0 + timedelta(seconds=3))
    assert [s.at for s in in_period] == [T0 + timedelta(seconds=n) for n in (1, 2, 3)]
    assert [s.at for s in store.vcpu_samples("a", T0 - timedelta(seconds=1), limit=2)] == [
        T0,
        T0 + timedelta(seconds=1),
    ]
    # Another zone is the same instant.
    plus_two = timezone(timedelta(hours=2))
    assert store.vcpu_samples("a", (T0 + timedelta(seconds=3)).astimezone(plus_two)) == store.vcpu_samples(
        "a", T0 + timedelta(seconds=3)
    )
    assert store.vcpu_samples("never-seen", T0 - timedelta(days=1)) == []


@both_databases
def test_the_latest_samples_are_each_vcpu_s_newest_by_host(store: SqlStore) -> None:
    store.record_vcpu_samples("h1", T0, [round_of("a"), round_of("gone", vcpus=1)])
    store.record_vcpu_samples("h1", T0 + timedelta(seconds=5), [round_of("a")])
    store.record_vcpu_samples("h2", T0 + timedelta(seconds=7), [round_of("c", vcpus=1)])
    latest = store.latest_vcpu_samples("h1")
    assert [(s.instance_id, s.vcpu, s.at) for s in latest] == [
        ("a", 0, T0 + timedelta(seconds=5)),
        ("a", 1, T0 + timedelta(seconds=5)),
        ("gone", 0, T0),  # no longer sampled: its last sample is still its newest
    ]
    assert [(s.instance_id, s.host) for s in store.latest_vcpu_samples()] == [
        ("a", "h1"),
        ("a", "h1"),
        ("c", "h2"),
        ("gone", "h1"),
    ]
    assert store.latest_vcpu_samples("no-such-host") == []


@both_databases
def test_the_latest_samples_are_each_instance_s_newest_round_wherever_it_was_taken(store: SqlStore) -> None:
    store.record_vcpu_samples("h1", T0, [round_of("moved", vcpus=2)])
    store.record_vcpu_samples("h2", T0 + timedelta(seconds=5), [round_of("moved", vcpus=1)])
    (latest,) = store.latest_vcpu_samples()
    assert (latest.host, latest.vcpu, latest.at) == ("h2", 0, T0 + timedelta(seconds=5))
    assert store.latest_vcpu_samples("h1") == []
    assert store.latest_vcpu_samples("h2") == [latest]


@both_databases
def test_trimming_deletes_only_what_is_older_and_says_how_much(store: SqlStore) -> None:
    for second in range(4):
        store.record_vcpu_samples("h1", T0 + timedelta(seconds=second), [round_of("a")])
    assert store.trim_vcpu_samples(T0 + timedelta(seconds=2)) == 4
    assert [s.at for s in store.vcpu_samples("a", T0 - timedelta(seconds=1))][::2] == [
        T0 + timedelta(seconds=2),
        T0 + timedelta(seconds=3),
    ]
    assert store.trim_vcpu_samples(T0) == 0


@both_databases
def test_an_empty_round_writes_nothing(store: SqlStore) -> None:
    assert store.record_vcpu_samples("h1", T0, []) == 0
    assert store.record_vcpu_samples("h1", T0, [InstanceVcpuStats("a", "a", 1.0, ())]) == 0
    assert store.latest_vcpu_samples() == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda s: s.record_vcpu_samples("h1", datetime(2026, 12, 3), [round_of("a")]), "timezone-aware"),
        (lambda s: s.record_vcpu_samples("h1", "2026-12-03", [round_of("a")]), "must be a time"),
        (lambda s: s.record_vcpu_samples("", T0, [round_of("a")]), "host must be text"),
        (lambda s: s.record_vcpu_samples("h1", T0, [round_of("x" * 256)]), "instance id must be text"),
        (lambda s: s.record_vcpu_samples("h1", T0, [{"id": "a"}]), "not dict"),
        (lambda s: s.record_vcpu_samples("h1", T0, round_of("a")), "not InstanceVcpuStats"),
        (lambda s: s.record_vcpu_samples("h1", T0, [round_of("a"), ("a", "a", 1.0, [0.5])]), "not tuple"),
        (lambda s: s.record_vcpu_samples("h1", T0, "abc"), "not str"),
        (lambda s: s.record_vcpu_samples("h1", T0, [NOT_STATS]), "not str"),
        (lambda s: s.record_vcpu_samples("h1", T0, [BELOW_0]), "VCPU number"),
        (lambda s: s.vcpu_samples("a", datetime(2026, 12, 3)), "since must be a timezone-aware"),
        (lambda s: s.vcpu_samples("a", T0, datetime(2026, 12, 4)), "until must be a timezone-aware"),
        (lambda s: s.vcpu_samples(7, T0), "an instance id is text"),
        (lambda s: s.trim_vcpu_samples(datetime(2026, 12, 3)), "before must be a timezone-aware"),
    ],
)
def test_bad_input_is_one_typed_error_and_writes_nothing(store: SqlStore, call: Any, message: str) -> None:
    with pytest.raises(KeeperError, match=message) as caught:
        call(store)
    assert "\n" not in str(caught.value)
    assert store.latest_vcpu_samples() == []


@pytest.mark.parametrize("limit", [0, -1, 100_001, True, 2.5, "ten"])
def test_a_limit_outside_one_to_a_hundred_thousand_is_refused(store: SqlStore, limit: object) -> None:
    with pytest.raises(InvalidOption, match="limit"):
        store.vcpu_samples("a", T0, limit=limit)  # type: ignore[arg-type]
    assert len(store.vcpu_samples("a", T0, limit=100_000)) == 0


def test_samples_move_no_change_cursor_and_wake_no_listener_of_this_store(store: SqlStore) -> None:
    cursor, _ = store.changes_since(0)
    wakes: list[None] = []
    store.add_change_listener(lambda: wakes.append(None))
    store.record_vcpu_samples("h1", T0, [round_of("a")])
    store.trim_vcpu_samples(T0 + timedelta(seconds=1))
    # A store's own writes call its listeners in the writer's thread, before the call returns.
    assert wakes == []
    assert store.changes_since(cursor) == (cursor, [])
    store.register_host("h1", "fake", None)
    assert len(wakes) >= 1  # the same listener does hear an ordinary write


def test_samples_send_no_notification_to_other_processes_on_postgresql(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    dsn = postgres_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listening:
        listening.execute(f"LISTEN {CHANNEL}")
        store.record_vcpu_samples("h1", T0, [round_of("a")])
        store.trim_vcpu_samples(T0 + timedelta(seconds=1))
        store.register_host("h1", "fake", None)
        # Notifications arrive in commit order: the ordinary write's comes, and nothing before it.
        heard = list(listening.notifies(timeout=10, stop_after=1))
        assert len(heard) == 1
        assert list(listening.notifies(timeout=0.2)) == []
    store.close()


@both_databases
def test_threads_with_their_own_stores_write_rounds_side_by_side(store_url: str, store: SqlStore) -> None:
    rounds, errors = 40, []

    def write(host: str) -> None:
        own = SqlStore(store_url)
        try:
            for number in range(rounds):
                own.record_vcpu_samples(host, T0 + timedelta(seconds=number), [round_of(f"{host}-vm")])
                own.trim_vcpu_samples(T0 - timedelta(days=1))
        except BaseException as error:  # reported by the test's thread
            errors.append(error)
        finally:
            own.close()

    threads = [threading.Thread(target=write, args=(f"h{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    for n in range(4):
        stored = store.vcpu_samples(f"h{n}-vm", T0 - timedelta(seconds=1))
        assert [(s.at, s.vcpu) for s in stored] == [
            (T0 + timedelta(seconds=number), vcpu) for number in range(rounds) for vcpu in range(2)
        ]
        assert {s.host for s in stored} == {f"h{n}"}


#: A child process writing rounds of its own host; the store's URL comes in the environment.
WRITER = """
import os, sys
from datetime import UTC, datetime, timedelta
from powerdrivers import InstanceVcpuStats, VcpuStats
from powerdrivers.keeper import SqlStore
store = SqlStore(os.environ["STORE_URL"])
host = sys.argv[1]
start = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
for number in range(30):
    stats = InstanceVcpuStats(host + "-vm", "x", 1.0, (VcpuStats(0, 0.5, 0.25, 0.25, 1.0),))
    store.record_vcpu_samples(host, start + timedelta(seconds=number), [stats])
store.close()
"""


@both_databases
def test_processes_write_rounds_into_one_store(store_url: str, store: SqlStore) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, f"p{n}"],
            env={**os.environ, "STORE_URL": store_url},
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(3)
    ]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    for n in range(3):
        stored = store.vcpu_samples(f"p{n}-vm", T0 - timedelta(seconds=1))
        assert [s.at for s in stored] == [T0 + timedelta(seconds=number) for number in range(30)]
