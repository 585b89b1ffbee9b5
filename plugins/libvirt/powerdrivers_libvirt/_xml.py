"""Building domain XML from an InstanceSpec with an XML library, so input cannot inject XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from powerdrivers import InstanceSpec


def domain_xml(spec: InstanceSpec, domain_type: str) -> str:
    """Return the libvirt domain XML for ``spec``.

    ``spec.metadata["console_log"]``, if given, logs the serial console to
    that file (tests use it to watch the guest boot).
    """
    domain = ET.Element("domain", type=domain_type)
    ET.SubElement(domain, "name").text = spec.name
    ET.SubElement(domain, "memory", unit="MiB").text = str(spec.memory_mib)
    ET.SubElement(domain, "vcpu").text = str(spec.vcpus)
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type").text = "hvm"
    if spec.kernel is not None:
        ET.SubElement(os_element, "kernel").text = str(spec.kernel)
        if spec.initrd is not None:
            ET.SubElement(os_element, "initrd").text = str(spec.initrd)
        if spec.cmdline is not None:
            ET.SubElement(os_element, "cmdline").text = spec.cmdline
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    for event, action in (("on_poweroff", "destroy"), ("on_reboot", "restart"), ("on_crash", "destroy")):
        ET.SubElement(domain, event).text = action
    devices = ET.SubElement(domain, "devices")
    if spec.disk_image is not None:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "source", file=str(spec.disk_image))
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    console_log = spec.metadata.get("console_log")
    if console_log:
        serial = ET.SubElement(devices, "serial", type="file")
        ET.SubElement(serial, "source", path=console_log, append="on")
        ET.SubElement(serial, "target", port="0")
    if domain_type != "test":
        ET.SubElement(devices, "memballoon", model="none")
    return ET.tostring(domain, encoding="unicode")
