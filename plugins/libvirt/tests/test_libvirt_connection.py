"""The libvirt connection under concurrency: close and reconnect never pull it from under a call,
and a closed driver leaves nothing behind (no callback keeps it, no memory grows)."""

from __future__ import annotations

import gc
import select
import socket
import threading
import time
import tracemalloc
import uuid
import weakref
from collections.abc import Callable, Iterator

import libvirt
import pytest
from libvirt_support.libvirtd import PrivateLibvirtd
from libvirt_support.nodes import settle_running
from powerdrivers_libvirt import LibvirtDriver

import powerdrivers
from powerdrivers import (
    EventKind,
    HypervisorConnectionError,
    InstanceSpec,
    PowerDriversError,
)
from powerdrivers.conformance import EventRecorder

DEFAULT = "test:///default"


@pytest.fixture
def driver() -> Iterator[LibvirtDriver]:
    """The libvirt driver on libvirt's built-in test node, its domain running."""
    with powerdrivers.load_driver("libvirt", DEFAULT) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        settle_running(loaded)
        yield loaded


def conn_of(driver: LibvirtDriver) -> libvirt.virConnect:
    """The libvirt connection the driver uses now."""
    return driver._connection.locked(lambda handle: handle.conn)


def is_closed(conn: libvirt.virConnect) -> bool:
    try:
        conn.getType()
    except libvirt.libvirtError:
        return True
    return False


def lose_connection(driver: LibvirtDriver) -> None:
    """Mark the connection lost, as libvirt's close callback does when the daemon goes away."""
    driver._connection.locked(lambda handle: setattr(handle, "broken", True))


def call_paused_mid_way(driver: LibvirtDriver) -> tuple[threading.Event, threading.Event, list[object]]:
    """Start a call that stops half-way until told to go on; it then uses its connection again."""
    inside, go_on = threading.Event(), threading.Event()
    outcome: list[object] = []

    def work(conn: libvirt.virConnect) -> tuple[libvirt.virConnect, list[str]]:
        conn.getType()
        inside.set()
        go_on.wait(10)
        return conn, [domain.name() for domain in conn.listAllDomains(0)]

    def run() -> None:
        try:
            outcome.append(driver._call(work))
        except BaseException as error:
            outcome.append(error)

    threading.Thread(target=run, daemon=True).start()
    assert inside.wait(10)
    return inside, go_on, outcome


def finished(outcome: list[object]) -> tuple[libvirt.virConnect, list[str]]:
    deadline = time.monotonic() + 10
    while not outcome and time.monotonic() < deadline:
        time.sleep(0.005)
    assert outcome, "the call never returned"
    result = outcome[0]
    assert isinstance(result, tuple), f"the call in flight failed: {result!r}"
    return result


def test_close_lets_a_call_in_flight_finish_then_releases_its_connection(driver: LibvirtDriver) -> None:
    _, go_on, outcome = call_paused_mid_way(driver)
    driver.close()
    with pytest.raises(HypervisorConnectionError, match="has been closed"):
        driver.list_instances()
    go_on.set()
    conn, names = finished(outcome)
    assert names == ["test"]
    assert is_closed(conn)


def test_reconnecting_lets_a_call_in_flight_finish_on_the_old_connection(driver: LibvirtDriver) -> None:
    _, go_on, outcome = call_paused_mid_way(driver)
    old = conn_of(driver)
    lose_connection(driver)
    assert [r.name for r in driver.list_instances()] == ["test"]  # on a new connection
    assert conn_of(driver) is not old and not is_closed(old)
    go_on.set()
    conn, names = finished(outcome)
    assert conn is old and names == ["test"]
    assert is_closed(old) and not is_closed(conn_of(driver))


def hammer(driver: LibvirtDriver, stop: threading.Event, errors: list[BaseException]) -> Callable[[], None]:
    """A loop of reads and operations that records every exception it meets."""

    def loop() -> None:
        while not stop.is_set():
            try:
                driver.list_instances()
                driver.get_instance("test")
                driver.vcpu_stats("test", window=0.001)
            except BaseException as error:
                errors.append(error)
                if driver._closed:
                    return

    return loop


def run_threads(target: Callable[[], None], count: int) -> list[threading.Thread]:
    threads = [threading.Thread(target=target, daemon=True) for _ in range(count)]
    for thread in threads:
        thread.start()
    return threads


def test_closing_under_concurrent_calls_fails_them_only_as_closed(driver: LibvirtDriver) -> None:
    conn = conn_of(driver)
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = run_threads(hammer(driver, stop, errors), 4)
    time.sleep(0.3)
    driver.close()
    time.sleep(0.1)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert not any(thread.is_alive() for thread in threads)
    unexpected = [
        error
        for error in errors
        if not (isinstance(error, HypervisorConnectionError) and "has been closed" in str(error))
    ]
    assert unexpected == []
    assert is_closed(conn)


def test_reconnecting_under_concurrent_calls_fails_none_of_them(driver: LibvirtDriver) -> None:
    first = conn_of(driver)
    stop = threading.Event()
    errors: list[BaseException] = []
    threads = run_threads(hammer(driver, stop, errors), 4)
    replaced = []
    for _ in range(40):
        replaced.append(conn_of(driver))
        lose_connection(driver)
        time.sleep(0.01)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert all(is_closed(conn) for conn in {*replaced, first} - {conn_of(driver)})


def cycle(
    count: int, work: Callable[[LibvirtDriver], object], **options: object
) -> list[weakref.ref[object]]:
    refs: list[weakref.ref[object]] = []
    for _ in range(count):
        loaded = powerdrivers.load_driver("libvirt", DEFAULT, **options)
        assert isinstance(loaded, LibvirtDriver)
        work(loaded)
        loaded.close()
        refs.append(weakref.ref(loaded))
        del loaded
    return refs


def subscribe_then_leave(driver: LibvirtDriver) -> None:
    settle_running(driver)
    with driver.subscribe(lambda event: None):
        driver.pause("test")
        driver.unpause("test")


def reconnect_with_events(driver: LibvirtDriver) -> None:
    driver.subscribe(lambda event: None)
    lose_connection(driver)
    driver.list_instances()


WORKLOADS: dict[str, Callable[[LibvirtDriver], object]] = {
    "listing": lambda driver: driver.list_instances(),
    "events": subscribe_then_leave,
    "events left subscribed, reconnected": reconnect_with_events,
}


def alive(refs: list[weakref.ref[object]]) -> list[weakref.ref[object]]:
    """The referenced objects that survive collection, given time for late events to be delivered."""
    deadline = time.monotonic() + 5
    while True:
        gc.collect()
        left = [ref for ref in refs if ref() is not None]
        # An event of a closed driver being delivered holds it for the delivery only.
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_closed_drivers_are_freed(workload: str) -> None:
    assert alive(cycle(20, WORKLOADS[workload])) == []


def test_closed_drivers_with_credentials_are_freed() -> None:
    assert alive(cycle(20, lambda driver: driver.list_instances(), username="admin", password="pw")) == []


def test_open_close_cycles_do_not_grow_memory() -> None:
    work = WORKLOADS["events"]
    cycle(50, work)  # warm up: imports, caches, the event loop
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cycle(500, work)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Each leaked driver kept about 3.5 kB: 500 of them would be 1.7 MB.
    assert grown < 256 * 1024, f"{grown} bytes more after 500 open/close cycles"


def test_only_powerdrivers_errors_escape_a_closed_driver(driver: LibvirtDriver) -> None:
    driver.close()
    for call in (driver.list_instances, lambda: driver.start("test"), lambda: driver.get_instance("test")):
        with pytest.raises(PowerDriversError):
            call()


def test_a_listener_may_read_at_once_on_the_resync_after_a_reconnection(driver: LibvirtDriver) -> None:
    seen: list[list[str]] = []

    def reread(event: powerdrivers.Event) -> None:
        if event.kind is powerdrivers.EventKind.RESYNC:
            seen.append([reading.name for reading in driver.list_instances()])

    with driver.subscribe(reread):
        old = conn_of(driver)
        lose_connection(driver)
        assert [reading.name for reading in driver.list_instances()] == ["test"]
    assert seen == [["test"]]
    assert is_closed(old)


def test_close_with_events_returns_at_once_while_a_reconnection_hangs(driver: LibvirtDriver) -> None:
    # A daemon that accepts no connection and answers nothing (a black-holed host): libvirt's
    # open waits on it, so the reconnection holds the connection lock for as long as it lasts.
    black_hole = socket.socket()
    black_hole.bind(("127.0.0.1", 0))
    black_hole.listen(8)
    # Were close() to wait for the reconnection, the host coming back would end the wait.
    comes_back = threading.Timer(5, black_hole.close)
    try:
        outcome: list[object] = []
        with driver.subscribe(lambda event: None):
            old = conn_of(driver)
            driver.uri = f"qemu+tcp://127.0.0.1:{black_hole.getsockname()[1]}/system"
            lose_connection(driver)

            def reconnect() -> None:
                try:
                    outcome.append(driver.list_instances())
                except BaseException as error:
                    outcome.append(error)

            reconnecting = threading.Thread(target=reconnect, daemon=True)
            reconnecting.start()
            deadline = time.monotonic() + 10
            while not _queued(black_hole) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _queued(black_hole), "the reconnection never reached the daemon"
            comes_back.start()
            began = time.monotonic()
            driver.close()
            took = time.monotonic() - began
    finally:
        black_hole.close()  # the connection waiting in its queue is reset: libvirt's open fails
        comes_back.cancel()
    reconnecting.join(10)
    assert took < 1.0, f"close() took {took:.1f} s"
    assert not reconnecting.is_alive() and len(outcome) == 1
    assert isinstance(outcome[0], PowerDriversError), repr(outcome[0])
    assert is_closed(old)
    with pytest.raises(HypervisorConnectionError, match="has been closed"):
        driver.list_instances()


def _queued(listener: socket.socket) -> bool:
    """Whether a connection waits, unaccepted, in ``listener``'s queue."""
    ready, _, _ = select.select([listener], [], [], 0)
    return bool(ready)


def test_a_consumer_that_only_listens_is_reconnected_after_libvirtd_restarts(
    private_libvirtd: PrivateLibvirtd,
) -> None:
    private_libvirtd.start_libvirtd()  # a test before may have left it killed
    recorder = EventRecorder()
    name = f"pdtest-{uuid.uuid4().hex[:8]}"
    with powerdrivers.load_driver("libvirt", private_libvirtd.uri, domain_type="qemu") as driver:
        assert isinstance(driver, LibvirtDriver)
        try:
            driver.spawn(InstanceSpec(name, memory_mib=64))
            with driver.subscribe(recorder):
                old = conn_of(driver)
                private_libvirtd.kill_libvirtd()
                private_libvirtd.start_libvirtd()
                # No call made: libvirt's close callback alone brings the connection back.
                recorder.wait_for_event(kind=EventKind.RESYNC, timeout=20)
                assert is_closed(old)
                # Event callbacks were registered again: another client's pause is reported.
                other = libvirt.open(private_libvirtd.uri)
                try:
                    other.lookupByName(name).suspend()
                finally:
                    other.close()
                paused = recorder.wait_for_event(kind=EventKind.PAUSED, name=name, timeout=10)
                assert paused.caused_by_operation is None
        finally:
            driver.delete(name)


def test_a_call_waiting_on_a_failed_reconnection_fails_with_it_rather_than_wait_again() -> None:
    with powerdrivers.load_driver("libvirt", DEFAULT, reconnect_timeout=2) as driver:
        assert isinstance(driver, LibvirtDriver)
        driver.uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"  # a daemon gone for good
        lose_connection(driver)
        began = time.monotonic()
        first: list[BaseException] = []

        def call() -> None:
            try:
                driver.list_instances()
            except BaseException as error:
                first.append(error)

        reconnecting = threading.Thread(target=call, daemon=True)
        reconnecting.start()
        while driver._connection._current is not None and time.monotonic() < began + 10:
            time.sleep(0.005)  # until the first call's reconnection has begun
        with pytest.raises(HypervisorConnectionError):
            driver.list_instances()
        waited = time.monotonic() - began
        reconnecting.join(10)
        assert len(first) == 1 and isinstance(first[0], HypervisorConnectionError)
        # One reconnection (its backoff gives up after 1.5 s of the 2) for both calls, not one
        # each, one after the other (3 s).
        assert waited < 2.4, f"the second call took {waited:.1f} s"
