"""The store on PostgreSQL when things go wrong: dead processes' claims, lost connections, a server away."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import pytest
from engine_support import wait_until
from postgres_cluster import PostgresCluster

from powerdrivers import InstanceReading, PowerState
from powerdrivers.keeper import (
    ActionStatus,
    Cause,
    HostAlreadyKept,
    HostClaim,
    Policy,
    SqlStore,
    StoreError,
    StoreUnavailable,
)
from powerdrivers.keeper._store_claim import owner_text

HOSTS = [f"h{number}" for number in range(1, 6)]


@pytest.fixture
def pg_store(postgres_url: str) -> Iterator[SqlStore]:
    """A store on a fresh PostgreSQL database with the hosts ``HOSTS`` registered."""
    store = SqlStore(postgres_url)
    for host in HOSTS:
        store.register_host(host, "fake", None)
    try:
        yield store
    finally:
        store.close()


def sessions(postgres: PostgresCluster, url: str, role: str) -> list[int]:
    """The backend pids of the store connections named ``powerdrivers-ROLE`` on ``url``'s database."""
    with postgres.connect() as connection:
        rows = connection.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
            (url.rsplit("/", 1)[1], f"powerdrivers-{role}"),
        ).fetchall()
    return [row[0] for row in rows]


#: A child process that claims every host named on its command line, says so, and waits to die.
HOLDER = """
import os, sys, time
from powerdrivers.keeper import SqlStore
store = SqlStore(os.environ["STORE_URL"])
claims = [store.claim_host(host) for host in sys.argv[1:]]
print("claimed", flush=True)
time.sleep(600)
"""


def test_the_claims_of_a_process_killed_by_sigkill_are_released_at_once(
    pg_store: SqlStore, postgres_url: str
) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HOLDER), *HOSTS],
        env={**os.environ, "STORE_URL": postgres_url},
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    try:
        assert child.stdout.readline() == "claimed\n"
        with pytest.raises(HostAlreadyKept) as refused:
            pg_store.claim_host("h3")
        assert refused.value.owner is not None and refused.value.owner.startswith(f"pid {child.pid} on ")
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
    started = time.monotonic()
    claims = wait_until(lambda: _claim_all(pg_store), timeout=5, what="the killed process's hosts to be free")
    assert time.monotonic() - started < 1.0 and claims is not None
    assert all(claim.alive() for claim in claims)
    assert {view.name: view.owner for view in pg_store.hosts()} == dict.fromkeys(HOSTS, owner_text())
    for claim in claims:
        claim.release()


def _claim_all(store: SqlStore) -> list[HostClaim] | None:
    try:
        return [store.claim_host(host) for host in HOSTS]
    except HostAlreadyKept:
        return None


def test_all_of_a_store_s_claims_share_one_connection_and_none_is_claimed_twice(
    pg_store: SqlStore, postgres: PostgresCluster, postgres_url: str
) -> None:
    many = [f"host-{number}" for number in range(100)]
    for host in many:
        pg_store.register_host(host, "fake", None)
    claims = [pg_store.claim_host(host) for host in many]
    assert len(sessions(postgres, postgres_url, "claims")) == 1
    with pytest.raises(HostAlreadyKept):
        pg_store.claim_host("host-7")  # the same store, the same session: still refused
    other = SqlStore(postgres_url)
    try:
        with pytest.raises(HostAlreadyKept):
            other.claim_host("host-7")
        for claim in claims:
            claim.release()
        assert not claims[0].alive()
        # Nothing held: the store keeps no claims connection open.
        wait_until(lambda: sessions(postgres, postgres_url, "claims") == [], what="no claims connection")
        other.claim_host("host-7").release()
    finally:
        other.close()


def test_a_claim_whose_connection_is_terminated_is_no_longer_alive_and_the_host_goes_to_another(
    pg_store: SqlStore, postgres: PostgresCluster, postgres_url: str
) -> None:
    h1, h2 = pg_store.claim_host("h1"), pg_store.claim_host("h2")
    assert h1.alive() and h2.alive()
    [backend] = sessions(postgres, postgres_url, "claims")
    with postgres.connect() as connection:
        connection.execute("SELECT pg_terminate_backend(%s)", (backend,))
    wait_until(lambda: not h1.alive(), timeout=5, what="the claim to die with its connection")
    assert not h2.alive()
    other = SqlStore(postgres_url)
    try:
        taken = other.claim_host("h1")
        assert taken.alive()
        with pytest.raises(HostAlreadyKept):
            pg_store.claim_host("h1")  # its old claim is gone: the host is the other's now
        h3 = pg_store.claim_host("h3")  # a new claims connection for the store's next claim
        assert h3.alive() and not h1.alive()
        assert sessions(postgres, postgres_url, "claims") != [backend]
        h1.release()  # nothing to unlock any more: no error
        h2.release()
        h3.release()
        taken.release()
    finally:
        other.close()


def test_a_server_that_goes_away_fails_calls_in_one_line_and_comes_back_without_reopening(
    pg_store: SqlStore, postgres: PostgresCluster, postgres_url: str
) -> None:
    claim = pg_store.claim_host("h1")
    pg_store.register_host("h1", "fake", None)
    assert pg_store.available()
    postgres.stop()
    assert not claim.alive()
    assert not pg_store.available()
    for call in (pg_store.hosts, lambda: pg_store.register_host("h9", "fake", None)):
        with pytest.raises(StoreUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and postgres.password not in message
        assert postgres.password not in repr(caught.value)
        assert message.startswith("keeper store postgresql+psycopg://")
    with pytest.raises(StoreUnavailable):
        pg_store.claim_host("h2")
    postgres.start()
    # The same store object: its pool's dead connections are replaced as they are taken.
    assert pg_store.available()
    assert [view.name for view in pg_store.hosts()] == HOSTS
    assert not claim.alive()  # a claim lost with its connection stays lost
    again = pg_store.claim_host("h2")
    assert again.alive()
    again.release()
    claim.release()


def test_a_store_opened_while_the_server_is_down_says_so_without_the_password(
    postgres: PostgresCluster, postgres_url: str
) -> None:
    SqlStore(postgres_url).close()  # migrated while up
    postgres.stop()
    with pytest.raises(StoreUnavailable) as caught:
        SqlStore(postgres_url)
    assert "\n" not in str(caught.value) and postgres.password not in str(caught.value)
    postgres.start()
    store = SqlStore(postgres_url)
    assert store.hosts() == []
    store.close()


def test_a_bad_password_is_a_store_error_that_does_not_show_it(postgres_url: str) -> None:
    wrong = postgres_url.replace("@127.0.0.1", "x@127.0.0.1")
    with pytest.raises(StoreError) as caught:
        SqlStore(wrong)
    password = wrong.split(":")[2].split("@")[0]
    assert password not in str(caught.value) and "\n" not in str(caught.value)


def test_writes_from_many_threads_never_deadlock_and_stay_in_order(pg_store: SqlStore) -> None:
    # Writers take one lock first: history ids commit in order, so records_after misses none.
    now = datetime.now(UTC)
    for number in range(8):
        reading = InstanceReading(f"i-{number}", f"vm-{number}", PowerState.RUNNING, None, "run", None, now)
        pg_store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
    seen: list[int] = []
    last = pg_store.last_record_id()

    def work(number: int) -> None:
        for round_number in range(10):
            policy = Policy.ALWAYS if round_number % 2 == 0 else Policy.MANUAL
            pg_store.set_policy(f"i-{number}", policy, "thread")
            action = pg_store.open_action(f"i-{number}", "start", {}, "thread")
            pg_store.finish_action(action.id, ActionStatus.DONE, datetime.now(UTC))

    def read() -> None:
        nonlocal last
        for record in pg_store.records_after(last):
            seen.append(record.id)
            last = record.id

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(work, number) for number in range(8)]
        while not all(future.done() for future in futures):
            read()
        for future in futures:
            future.result()
    read()
    everything = [record.id for record in pg_store.records_after(0, limit=10_000)]
    assert seen == everything[8:]


def test_a_server_that_crashes_loses_the_claims_and_the_store_works_once_it_is_back(
    pg_store: SqlStore, postgres: PostgresCluster
) -> None:
    claim = pg_store.claim_host("h1")
    wakes: list[float] = []
    pg_store.add_change_listener(lambda: wakes.append(time.monotonic()))
    postgres.kill()
    assert not claim.alive()
    assert not pg_store.available()
    with pytest.raises(StoreUnavailable):
        pg_store.set_policy("nothing", Policy.ALWAYS, "alice")
    # Cleared before the server is back: the listener may reconnect (and wake) before start() returns.
    wakes.clear()
    postgres.start()
    assert pg_store.available()
    wait_until(lambda: wakes, timeout=10, what="the listener to be woken once reconnected")
    again = pg_store.claim_host("h1")
    assert again.alive() and not claim.alive()
    again.release()


def test_every_session_of_a_store_asks_the_server_for_keepalives(pg_store: SqlStore) -> None:
    # What lets the server end the session of a machine that vanished (and free its claims) in
    # seconds: without it, the server keeps an idle session with its locks for hours.
    pg_store.register_host("h1", "fake", None)
    claim = pg_store.claim_host("h1")
    try:
        session = pg_store._session
        assert session is not None
        claims = [session._connection.execute(f"SHOW {name}").fetchone() for name in _KEEPALIVE_SETTINGS]
        with pg_store._engine.connect() as pooled:
            written = [pooled.exec_driver_sql(f"SHOW {name}").scalar() for name in _KEEPALIVE_SETTINGS]
        assert [row[0] if row else None for row in claims] == ["5", "2", "3"]
        assert written == ["5", "2", "3"]
    finally:
        claim.release()


_KEEPALIVE_SETTINGS = ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")
