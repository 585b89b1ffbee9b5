"""Fixtures for the libvirt driver tests: libvirt's test driver on generated node XML, and real QEMU."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_support.guest_image import GuestImage, GuestImageError, build_guest
from libvirt_support.libvirtd import LibvirtdHarness, PrivateLibvirtd, virsh_reachable
from libvirt_support.nodes import RUNSTATES, node_xml, require_real

import powerdrivers
from powerdrivers import Driver


@pytest.fixture
def node_uri(tmp_path: Path) -> str:
    """A test-driver URI with one domain per reachable state, fresh for each test."""
    path = tmp_path / "node.xml"
    path.write_text(node_xml([(f"vm-{state}", state) for state in RUNSTATES]))
    return f"test://{path}"


@pytest.fixture
def driver(node_uri: str) -> Iterator[Driver]:
    """The libvirt driver, loaded by name as users do, on the generated node."""
    with powerdrivers.load_driver("libvirt", node_uri) as loaded:
        yield loaded


QEMU_URI = "qemu:///system"
REPO = Path(__file__).resolve().parents[3]


def _require_libvirtd_and_qemu() -> None:
    present = shutil.which("libvirtd") is not None and shutil.which("qemu-system-x86_64") is not None
    require_real("libvirtd + QEMU", present, "install the Debian packages (make test does, as root)")


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtdHarness]:
    """A reachable libvirtd on qemu:///system; started (and stopped) by the tests if none runs.

    Tests use it as they would the system's and never kill it: when the tests start it, it
    stands in for the system's daemon.
    """
    _require_libvirtd_and_qemu()
    require_real(
        "libvirtd", os.geteuid() == 0 or virsh_reachable(QEMU_URI), "not running, and not root to start it"
    )
    with LibvirtdHarness(QEMU_URI) as harness:
        yield harness


@pytest.fixture(scope="session")
def private_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    """A libvirtd of the tests' own (own socket, run, state and configuration directories).

    For the tests that kill or restart a daemon, and the KVM tests (a fresh daemon probes
    KVM afresh). It shares nothing with the system's libvirtd, whether one runs or not.
    """
    _require_libvirtd_and_qemu()
    require_real("a private libvirtd", os.geteuid() == 0, "starting one needs root")
    with PrivateLibvirtd(log_dir=tmp_path_factory.mktemp("private-libvirtd")) as harness:
        yield harness


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The real Linux test guest (Debian cloud kernel + busybox initramfs), built once and cached."""
    try:
        return build_guest(REPO / ".cache" / "guest")
    except GuestImageError as error:
        require_real("the Linux test guest", False, str(error))
        raise


def _delete_test_domains(driver: Driver) -> None:
    for reading in driver.list_instances():
        if reading.name.startswith("pdtest-"):
            driver.delete(reading.id)


@pytest.fixture
def qemu(libvirtd: LibvirtdHarness) -> Iterator[Driver]:
    """The libvirt driver on real libvirtd + QEMU (TCG); removes the domains a test made."""
    with powerdrivers.load_driver("libvirt", QEMU_URI, domain_type="qemu") as loaded:
        yield loaded
        _delete_test_domains(loaded)


@pytest.fixture
def private_qemu(private_libvirtd: PrivateLibvirtd) -> Iterator[Driver]:
    """The libvirt driver on the private libvirtd + QEMU (TCG); removes the domains a test made."""
    private_libvirtd.start_libvirtd()  # a test before may have left it killed
    with powerdrivers.load_driver("libvirt", private_libvirtd.uri, domain_type="qemu") as loaded:
        yield loaded
        _delete_test_domains(loaded)
