"""Fixtures for the libvirt driver tests: libvirt's test driver on generated node XML, and real QEMU."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_support.nodes import RUNSTATES, node_xml

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
