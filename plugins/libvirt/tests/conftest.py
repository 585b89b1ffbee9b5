"""Fixtures for the libvirt driver tests: libvirt's test driver on generated node XML, and real QEMU."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_support.guest_image import GuestImage, GuestImageError, build_guest
from libvirt_support.libvirtd import LibvirtdHarness, virsh_reachable
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


@pytest.fixture(scope="session")
def libvirtd() -> Iterator[LibvirtdHarness]:
    """A reachable libvirtd on qemu:///system; started (and stopped) by the tests if none runs."""
    present = shutil.which("libvirtd") is not None and shutil.which("qemu-system-x86_64") is not None
    require_real("libvirtd + QEMU", present, "install the Debian packages (make test does, as root)")
    require_real(
        "libvirtd", os.geteuid() == 0 or virsh_reachable(QEMU_URI), "not running, and not root to start it"
    )
    with LibvirtdHarness(QEMU_URI) as harness:
        yield harness


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The real Linux test guest (Debian cloud kernel + busybox initramfs), built once and cached."""
    try:
        return build_guest(REPO / ".cache" / "guest")
    except GuestImageError as error:
        require_real("the Linux test guest", False, str(error))
        raise


@pytest.fixture
def qemu(libvirtd: LibvirtdHarness) -> Iterator[Driver]:
    """The libvirt driver on real libvirtd + QEMU (TCG); removes the domains a test made."""
    with powerdrivers.load_driver("libvirt", QEMU_URI, domain_type="qemu") as loaded:
        yield loaded
        for reading in loaded.list_instances():
            if reading.name.startswith("pdtest-"):
                loaded.delete(reading.id)
