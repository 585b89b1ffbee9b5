"""The bulk listing: libvirtmod's C functions and the public API agree, and no domain handle leaks."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import libvirt
import pytest
from libvirt_support.nodes import RUNSTATES, node_xml, require_real
from powerdrivers_libvirt import LibvirtDriver
from powerdrivers_libvirt._listing import CFunctions, DomainLister, _uuid_text, bulk_module, c_functions

import powerdrivers
from powerdrivers import HypervisorError, InstanceReading, PowerState

#: Enough domains that a listing overlaps its managed-save query with the bulk call.
COUNT = 300
SAVED = ("d00000", "d00005", "d00295")


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


def test_loading_the_driver_leaves_the_listing_machinery_for_the_first_listing(node_uri: str) -> None:
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        assert loaded._lister is None


def test_the_bulk_c_module_is_built_and_used(driver: LibvirtDriver) -> None:
    # The extension builds wherever libvirt-python does (same compiler and headers);
    # under CI its absence is a failure, not a quiet fallback.
    require_real("powerdrivers_libvirt._bulk", bulk_module() is not None, "the C extension was not built")
    assert c_functions() is not None
    driver.list_instances()
    assert driver._lister is not None and driver._lister.path == "bulk"


def _listers(driver: LibvirtDriver) -> dict[str, DomainLister]:
    listers = {
        "libvirtmod": DomainLister(driver._reading_of, c_functions()),
        "public": DomainLister(driver._reading_of, None),
    }
    bulk = bulk_module()
    if bulk is not None:
        listers["bulk"] = DomainLister(driver._reading_of, c_functions(), bulk)
    for path, lister in listers.items():
        assert lister.path == path
    return listers


def test_every_path_gives_the_same_readings(driver: LibvirtDriver) -> None:
    conn = driver._connection()
    listers = _listers(driver)
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
    driver._connection().lookupByName("d00005").managedSaveRemove(0)
    by_name = {reading.name: reading for reading in driver.list_instances()}
    assert by_name["d00005"].power_state is PowerState.SHUTOFF
    assert by_name["d00000"].power_state is PowerState.SUSPENDED


def test_listings_free_every_domain_handle(driver: LibvirtDriver, node_uri: str) -> None:
    for path, lister in _listers(driver).items():
        conn = libvirt.open(node_uri)
        for _ in range(3):
            assert len(lister.read_all(conn)) == COUNT
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
        assert conn.close() == 0, path


def test_a_failing_bulk_call_is_a_typed_error(driver: LibvirtDriver) -> None:
    class Failing:
        def domain_states(self, _handle: object, /) -> None:
            return None

    driver._lister = DomainLister(driver._reading_of, c_functions(), Failing())
    with pytest.raises(HypervisorError):
        driver.list_instances()


@pytest.mark.parametrize("with_bulk", [True, False], ids=["bulk", "libvirtmod"])
def test_a_failing_managed_save_query_is_a_typed_error(driver: LibvirtDriver, with_bulk: bool) -> None:
    c = c_functions()
    assert c is not None
    failing = c._replace(list_all_domains=lambda _conn, _flags: None)
    driver._lister = DomainLister(driver._reading_of, failing, bulk_module() if with_bulk else None)
    for _ in range(2):  # in line, then on the overlap thread
        with pytest.raises(HypervisorError):
            driver.list_instances()
        driver._lister._previous_asked = True
        driver._lister._previous_count = COUNT


def test_the_bulk_module_refuses_what_is_not_a_connection_handle(driver: LibvirtDriver) -> None:
    bulk = bulk_module()
    require_real("powerdrivers_libvirt._bulk", bulk is not None, "the C extension was not built")
    assert bulk is not None
    domain = driver._connection().listAllDomains(0)[0]
    for wrong in (object(), domain._o):
        with pytest.raises((TypeError, ValueError)):
            bulk.domain_states(wrong)


def test_closing_the_driver_ends_the_overlap_thread(node_uri: str) -> None:
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        for _ in range(2):
            loaded.list_instances()
        assert any(t.name == "powerdrivers-libvirt-listing" for t in threading.enumerate())
        assert loaded._lister is not None
        overlap = loaded._lister._overlap._thread
    assert overlap is not None
    overlap.join(timeout=5)
    assert not overlap.is_alive()


def test_without_the_c_functions_the_public_api_lists(monkeypatch: pytest.MonkeyPatch, node_uri: str) -> None:
    import libvirtmod

    monkeypatch.delattr(libvirtmod, "virDomainGetUUID")
    assert c_functions() is None
    lister = DomainLister(
        lambda *args: InstanceReading("", "", PowerState.RUNNING, None, "x", None, args[3]), None
    )
    conn = libvirt.open(node_uri)
    assert len(lister.read_all(conn)) == COUNT
    assert conn.close() == 0


def test_uuid_text_is_the_canonical_form() -> None:
    for _ in range(100):
        value = uuid.uuid4()
        assert _uuid_text(value.bytes) == str(value)


def test_c_functions_are_the_libvirtmod_ones() -> None:
    c = c_functions()
    assert isinstance(c, CFunctions)
    assert all(callable(function) for function in c)


def test_a_domain_without_a_uuid_is_a_typed_error_and_leaks_nothing(
    driver: LibvirtDriver, node_uri: str
) -> None:
    c = c_functions()
    assert c is not None
    driver._lister = DomainLister(driver._reading_of, c._replace(domain_uuid=lambda _handle: None))
    with pytest.raises(HypervisorError, match="virDomainGetUUID"):
        driver.list_instances()
    conn = libvirt.open(node_uri)
    with pytest.raises(libvirt.libvirtError):
        DomainLister(driver._reading_of, c._replace(domain_uuid=lambda _handle: None)).read_all(conn)
    assert conn.close() == 0
