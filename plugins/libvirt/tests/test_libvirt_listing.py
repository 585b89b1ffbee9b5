"""The bulk listing: the C module and the public API agree, and no domain handle leaks."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import libvirt
import pytest
from libvirt_support.nodes import RUNSTATES, node_xml, require_real
from powerdrivers_libvirt import LibvirtDriver
from powerdrivers_libvirt._listing import DomainLister, bulk_module

import powerdrivers
from powerdrivers import HypervisorError, InstanceReading, PowerState

#: Enough domains that a listing overlaps its managed-save query with the bulk call.
COUNT = 300
SAVED = ("d00000", "d00005", "d00295")


def conn_of(driver: LibvirtDriver) -> libvirt.virConnect:
    """The driver's libvirt connection, for tests that call libvirt beside it."""
    return driver._connection.locked(lambda handle: handle.conn)


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    """A node of COUNT test-driver domains in every run state, round robin."""
    path = tmp_path / "node.xml"
    states = list(RUNSTATES)
    path.write_text(node_xml([(f"d{i:05d}", states[i % len(states)]) for i in range(COUNT)]))
    return f"test://{path}"


@pytest.fixture
def driver(node_uri: str) -> Iterator[LibvirtDriver]:
    """The libvirt driver on the node, with three running domains suspended by managed save."""
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        for name in SAVED:
            assert loaded.suspend(name).native_reason == "managed_save"
        yield loaded


def _without_time(readings: list[InstanceReading]) -> dict[str, tuple[object, ...]]:
    return {reading.id: tuple(reading)[:-1] for reading in readings}


def _listing_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith("powerdrivers-libvirt-listing")}


def test_loading_the_driver_leaves_the_listing_machinery_for_the_first_listing(node_uri: str) -> None:
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        assert loaded._lister is None


def test_the_bulk_c_module_is_built_and_used(driver: LibvirtDriver) -> None:
    # The extension builds wherever libvirt-python does (same compiler and headers);
    # under CI its absence is a failure, not a quiet fallback.
    require_real("powerdrivers_libvirt._bulk", bulk_module() is not None, "the C extension was not built")
    driver.list_instances()
    assert driver._lister is not None and driver._lister.path == "bulk"


def _listers(driver: LibvirtDriver) -> dict[str, DomainLister]:
    listers = {"public": DomainLister(driver._reading_of, None)}
    bulk = bulk_module()
    if bulk is not None:
        listers["bulk"] = DomainLister(driver._reading_of, bulk)
    for path, lister in listers.items():
        assert lister.path == path
    return listers


def test_every_path_gives_the_same_readings(driver: LibvirtDriver) -> None:
    conn = conn_of(driver)
    listers = _listers(driver)
    for lister in listers.values():
        lister._overlap.close()  # in line only: the overlap has tests of its own
    for _ in range(3):  # the first listing asks for managed saves in line, later ones beside
        by_path = {path: lister.read_all(conn) for path, lister in listers.items()}
        expected = _without_time(by_path["public"])
        for readings in by_path.values():
            assert _without_time(readings) == expected
    for path, readings in [("driver", driver.list_instances()), *by_path.items()]:
        assert len(readings) == COUNT, path
        assert all(type(reading) is InstanceReading for reading in readings)
        assert len({reading.observed_at for reading in readings}) == 1
        by_name = {reading.name: reading for reading in readings}
        for name in SAVED:
            assert by_name[name].power_state is PowerState.SUSPENDED
            assert by_name[name].native_reason == "managed_save"
        # The node's other shut-off domains say "unknown" and have no image: plain off.
        assert by_name["d00002"].power_state is PowerState.SHUTOFF
        assert by_name["d00002"].native_reason == "unknown"
    expected_names = {d.UUIDString(): d.name() for d in conn.listAllDomains(0)}
    assert {reading.id: reading.name for reading in by_path["public"]} == expected_names


def test_a_removed_image_is_noticed_by_the_next_listing(driver: LibvirtDriver) -> None:
    driver.list_instances()
    conn_of(driver).lookupByName("d00005").managedSaveRemove(0)
    by_name = {reading.name: reading for reading in driver.list_instances()}
    assert by_name["d00005"].power_state is PowerState.SHUTOFF
    assert by_name["d00000"].power_state is PowerState.SUSPENDED


def test_listings_free_every_domain_handle(driver: LibvirtDriver, node_uri: str) -> None:
    for path, lister in _listers(driver).items():
        conn = libvirt.open(node_uri)
        for _ in range(3):  # the later ones with the managed-save query beside the bulk call
            assert len(lister.read_all(conn)) == COUNT
        assert lister._overlap._running is not None
        lister.close()
        # virConnectClose answers how many references remain: each leaked domain handle holds one.
        assert conn.close() == 0, path


def test_a_failing_listing_frees_every_domain_handle_too(driver: LibvirtDriver, node_uri: str) -> None:
    def broken(state: int, reason: int, managed_save: bool, observed_at: object) -> InstanceReading:
        raise RuntimeError("boom")

    for path, lister in _listers(driver).items():
        lister._reading_of = broken
        conn = libvirt.open(node_uri)
        with pytest.raises(RuntimeError, match="boom"):
            lister.read_all(conn)
        lister.close()
        assert conn.close() == 0, path


def test_a_failing_bulk_call_is_a_typed_error(driver: LibvirtDriver) -> None:
    class Failing:
        def domain_states(self, _handle: object, /) -> None:
            return None

    driver._lister = DomainLister(driver._reading_of, Failing())
    with pytest.raises(HypervisorError):
        driver.list_instances()


def _failing_query(_flags: int) -> list[libvirt.virDomain]:
    raise libvirt.libvirtError("virConnectListAllDomains() failed")


@pytest.mark.parametrize("with_bulk", [True, False], ids=["bulk", "public"])
def test_a_failing_managed_save_query_is_a_typed_error(
    driver: LibvirtDriver, with_bulk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(conn_of(driver), "listAllDomains", _failing_query)
    driver._lister = DomainLister(driver._reading_of, bulk_module() if with_bulk else None)
    for _ in range(2):  # in line, then on the overlap thread
        with pytest.raises(HypervisorError):
            driver.list_instances()
        driver._lister._previous_asked = True
        driver._lister._previous_count = COUNT
    assert driver._lister._overlap._running is not None


def test_the_bulk_module_refuses_what_is_not_a_connection_handle(driver: LibvirtDriver) -> None:
    bulk = bulk_module()
    require_real("powerdrivers_libvirt._bulk", bulk is not None, "the C extension was not built")
    assert bulk is not None
    domain = conn_of(driver).listAllDomains(0)[0]
    for wrong in (object(), domain._o):
        with pytest.raises((TypeError, ValueError)):
            bulk.domain_states(wrong)


def test_closing_the_driver_ends_the_overlap_thread(node_uri: str) -> None:
    before = _listing_threads()
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        for _ in range(2):
            loaded.list_instances()
        started = _listing_threads() - before
        assert len(started) == 1
    overlap = started.pop()
    overlap.join(timeout=5)
    assert not overlap.is_alive()


def test_without_the_c_module_the_public_api_lists(monkeypatch: pytest.MonkeyPatch, node_uri: str) -> None:
    import powerdrivers_libvirt

    monkeypatch.delattr(powerdrivers_libvirt, "_bulk", raising=False)
    monkeypatch.setitem(sys.modules, "powerdrivers_libvirt._bulk", None)  # as where it was not built
    assert bulk_module() is None
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        assert len(loaded.list_instances()) == COUNT
        assert loaded._lister is not None and loaded._lister.path == "public"


def _overlapping(driver: LibvirtDriver, bulk: bool = True) -> DomainLister:
    """A lister whose next listing starts its managed-save query on the overlap thread."""
    lister = DomainLister(driver._reading_of, bulk_module() if bulk else None)
    lister._previous_asked = True
    lister._previous_count = COUNT
    return lister


@pytest.mark.parametrize("with_bulk", [True, False], ids=["bulk", "public"])
def test_no_managed_save_query_outlives_its_listing(
    tmp_path: Path, with_bulk: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every domain runs, so this listing never needs the query's answer: it must still
    # wait for the query before returning, or the query could run on a connection its
    # caller has since closed.
    path = tmp_path / "running.xml"
    path.write_text(node_xml([(f"r{i:03d}", "running") for i in range(20)]))
    finished: list[float] = []

    with powerdrivers.load_driver("libvirt", f"test://{path}") as loaded:
        assert isinstance(loaded, LibvirtDriver)
        conn = conn_of(loaded)
        list_all_domains = conn.listAllDomains

        def slow_query(flags: int) -> list[libvirt.virDomain]:
            time.sleep(0.3)
            answer: list[libvirt.virDomain] = list_all_domains(flags)
            finished.append(time.monotonic())
            return answer

        monkeypatch.setattr(conn, "listAllDomains", slow_query)
        lister = _overlapping(loaded, with_bulk)
        assert len(lister.read_all(conn)) == 20
        returned = time.monotonic()
        assert finished and finished[0] <= returned
        assert not lister._previous_asked  # nothing here could have an image
        lister.close()


def test_a_thread_that_cannot_start_means_the_query_runs_in_line(
    driver: LibvirtDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    lister = _overlapping(driver)
    ran: list[str] = []

    def query(name: str) -> Callable[[], set[str]]:
        def run() -> set[str]:
            ran.append(name)
            return set()

        return run

    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    readings = lister.read_all(conn_of(driver))
    assert sum(r.native_reason == "managed_save" for r in readings) == len(SAVED)
    assert lister._overlap.submit(query("refused")) is None
    monkeypatch.undo()
    # Still usable; a query that was refused never runs later; closing does not wait for anything.
    later = lister._overlap.submit(query("later"))
    assert later is not None
    assert later.result(timeout=5) == set()
    assert ran == ["later"]
    began = time.monotonic()
    lister.close()
    assert time.monotonic() - began < 1


def test_a_closed_overlap_declines_queries_and_its_thread_ends(driver: LibvirtDriver) -> None:
    before = _listing_threads()
    lister = _overlapping(driver)
    lister.read_all(conn_of(driver))
    (thread,) = _listing_threads() - before
    assert thread.is_alive()
    lister.close()
    assert lister._overlap.submit(set) is None
    thread.join(timeout=5)
    assert not thread.is_alive()
    # Listings still work, asking in line.
    assert sum(r.native_reason == "managed_save" for r in lister.read_all(conn_of(driver))) == len(SAVED)


def test_a_dropped_lister_lets_its_thread_end(driver: LibvirtDriver) -> None:
    before = _listing_threads()
    lister = _overlapping(driver)
    lister.read_all(conn_of(driver))
    (thread,) = _listing_threads() - before
    del lister
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_one_driver_lists_from_many_threads_at_once(driver: LibvirtDriver) -> None:
    expected = _without_time(driver.list_instances())
    results: list[dict[str, tuple[object, ...]]] = []
    errors: list[BaseException] = []

    def list_often() -> None:
        try:
            for _ in range(10):
                results.append(_without_time(driver.list_instances()))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=list_often) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert len(results) == 40 and all(result == expected for result in results)


def test_a_record_without_its_reason_reads_unknown_with_the_number_kept(
    driver: LibvirtDriver, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = conn_of(driver)
    get_all_domain_stats = conn.getAllDomainStats

    def without_reasons(stats: int, flags: int = 0) -> list[tuple[libvirt.virDomain, dict[str, Any]]]:
        records: list[tuple[libvirt.virDomain, dict[str, Any]]] = get_all_domain_stats(stats, flags)
        for _, record in records:
            record.pop("state.reason", None)
        return records

    monkeypatch.setattr(conn, "getAllDomainStats", without_reasons)
    lister = DomainLister(driver._reading_of, None)
    readings = lister.read_all(conn)
    lister.close()
    assert len(readings) == COUNT
    assert {r.native_reason for r in readings} == {"-1"}
