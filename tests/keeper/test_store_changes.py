"""Change listeners: a store's own writes wake its listeners; on PostgreSQL, any process's writes do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, datetime

import pytest
from engine_support import wait_until
from postgres_cluster import PostgresCluster
from store_support import both_databases

from powerdrivers import InstanceReading, PowerState
from powerdrivers.keeper import Cause, KeeperError, Policy, SqlStore, UnknownInstance


class Wakes:
    """A change listener that counts its calls and remembers when the last one came."""

    def __init__(self) -> None:
        self.count = 0
        self.at = 0.0
        self.event = threading.Event()

    def __call__(self) -> None:
        self.count += 1
        self.at = time.time()
        self.event.set()

    def reset(self) -> None:
        self.event.clear()


def known_instance(store: SqlStore, instance_id: str = "i-1") -> None:
    store.register_host("h1", "fake", None)
    store.record_observation(
        "h1",
        InstanceReading(
            instance_id, instance_id, PowerState.RUNNING, None, "running", None, datetime.now(UTC)
        ),
        previous=None,
        cause=Cause.APPEARED,
    )


@both_databases
def test_a_store_s_own_write_calls_its_listeners_once_committed(store: SqlStore) -> None:
    known_instance(store)
    wakes = Wakes()
    remove = store.add_change_listener(wakes)
    wakes.reset()
    store.set_policy("i-1", Policy.ALWAYS, "alice")
    # In the writer's thread, after the commit: by the time the call returns.
    assert wakes.event.is_set()
    remove()
    wakes.reset()
    time.sleep(0.1)  # a notification of PostgreSQL on its way from before the removal
    wakes.reset()
    store.set_policy("i-1", Policy.MANUAL, "alice")
    time.sleep(0.3)
    assert not wakes.event.is_set()
    remove()  # a second removal does nothing


@both_databases
def test_a_write_that_fails_calls_no_listener_and_a_failing_listener_breaks_no_write(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    known_instance(store)
    wakes = Wakes()

    def broken() -> None:
        raise RuntimeError("a listener's own bug")

    store.add_change_listener(broken)
    store.add_change_listener(wakes)
    time.sleep(0.2)
    wakes.reset()
    with pytest.raises(UnknownInstance):
        store.set_policy("nothing", Policy.ALWAYS, "alice")
    time.sleep(0.3)
    assert not wakes.event.is_set()
    assert store.set_policy("i-1", Policy.ALWAYS, "alice").policy is Policy.ALWAYS
    assert wakes.event.is_set()
    assert "a change listener failed" in caplog.text


def test_a_listener_must_be_callable(store: SqlStore) -> None:
    with pytest.raises(KeeperError, match="callable"):
        store.add_change_listener("not a function")  # type: ignore[arg-type]


def test_another_store_object_s_write_wakes_a_listener_on_postgresql(postgres_url: str) -> None:
    watching, writing = SqlStore(postgres_url), SqlStore(postgres_url)
    try:
        known_instance(writing)
        wakes = Wakes()
        watching.add_change_listener(wakes)
        time.sleep(0.2)
        wakes.reset()
        before = time.time()
        writing.set_policy("i-1", Policy.ALWAYS, "alice")
        assert wakes.event.wait(2), "the other store's write did not wake the listener"
        assert wakes.at - before < 0.2
    finally:
        watching.close()
        writing.close()


#: A child process that writes once when told to (a line on its stdin), printing the commit's time.
WRITER = """
import os, sys, time
from powerdrivers.keeper import SqlStore, Policy
store = SqlStore(os.environ["STORE_URL"])
print("ready", flush=True)
for line in sys.stdin:
    store.set_policy("i-1", Policy(line.strip()), "child")
    print(time.time(), flush=True)
"""


def test_a_write_by_another_process_wakes_a_listener_within_milliseconds(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    known_instance(store)
    wakes = Wakes()
    store.add_change_listener(wakes)
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(WRITER)],
        env={**os.environ, "STORE_URL": postgres_url},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "ready\n"
        lags = []
        for policy in ["always", "manual", "on_failure", "always", "manual"]:
            time.sleep(0.05)
            wakes.reset()
            child.stdin.write(policy + "\n")
            child.stdin.flush()
            committed = float(child.stdout.readline())
            assert wakes.event.wait(2), "the other process's write did not wake the listener"
            lags.append(wakes.at - committed)
        assert sorted(lags)[len(lags) // 2] < 0.05, lags
        assert store.instance("i-1").policy is Policy.MANUAL
    finally:
        child.stdin.close()
        child.wait(timeout=30)
        store.close()


def test_the_listening_thread_reconnects_after_the_database_comes_back_and_wakes_once(
    postgres: PostgresCluster, postgres_url: str
) -> None:
    store = SqlStore(postgres_url)
    try:
        known_instance(store)
        wakes = Wakes()
        store.add_change_listener(wakes)
        time.sleep(0.2)
        postgres.stop()
        wakes.reset()
        postgres.start()
        # Whatever was written while it was away is unknown: it wakes its listeners once back.
        assert wakes.event.wait(10), "no wake-up after the database came back"
        time.sleep(0.3)
        wakes.reset()
        other = SqlStore(postgres_url)
        other.set_policy("i-1", Policy.ALWAYS, "alice")
        other.close()
        assert wakes.event.wait(2), "another store's write no longer wakes the listener"
    finally:
        store.close()


def test_closing_a_store_stops_its_listening_thread(postgres_url: str) -> None:
    store = SqlStore(postgres_url)
    before = set(threading.enumerate())
    store.add_change_listener(Wakes())
    [listening] = [thread for thread in threading.enumerate() if thread not in before]
    assert listening.name == "keeper-store-listen"
    store.close()
    wait_until(lambda: not listening.is_alive(), what="the listening thread to end")
