"""Generated node XML for libvirt's test driver, and the rule for real components under CI."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import pytest

from powerdrivers import Driver, PowerState

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"

#: libvirt's numeric run states, for seeding node XML.
RUNSTATES = {"running": 1, "paused": 3, "shutoff": 5, "crashed": 6, "pmsuspended": 7}


def node_xml(domains: list[tuple[str, str]]) -> str:
    """Node XML for libvirt's test driver: (name, initial run state) per domain."""
    ET.register_namespace("test", TEST_NS)
    node = ET.Element("node")
    for index, (name, state) in enumerate(domains):
        domain = ET.SubElement(node, "domain", type="test")
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "uuid").text = f"00000000-0000-4000-8000-{index:012d}"
        ET.SubElement(domain, "memory").text = "65536"
        ET.SubElement(domain, "vcpu").text = "2"
        os_element = ET.SubElement(domain, "os")
        ET.SubElement(os_element, "type").text = "hvm"
        ET.SubElement(domain, f"{{{TEST_NS}}}runstate").text = str(RUNSTATES[state])
    return ET.tostring(node, encoding="unicode")


def require_real(component: str, available: bool, why: str) -> None:
    """Skip a test whose real component is missing, except under CI, where that is a failure."""
    if available:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{component} is required under CI=true: {why}")
    pytest.skip(f"{component} unavailable: {why}")


def settle_running(driver: Driver) -> None:
    """Run the built-in test node's one domain, ``test``: the node outlives a test's connections."""
    state = driver.get_instance("test").power_state
    if state is PowerState.PAUSED:
        driver.unpause("test")
    elif state in (PowerState.SHUTOFF, PowerState.SUSPENDED):
        driver.start("test")
