"""Checking a libvirt URI before libvirt tries, so a typo is a clear error, not a socket error."""

from __future__ import annotations

from urllib.parse import urlsplit

from powerdrivers import InvalidURI, redact_uri

#: libvirt's hypervisor drivers (the part of the scheme before any '+transport').
DRIVERS = frozenset(
    {
        "qemu", "kvm", "test", "xen", "libxl", "lxc", "ch", "vz", "parallels", "bhyve", "openvz",
        "vbox", "esx", "gsx", "vpx", "hyperv", "vmwareplayer", "vmwarews", "vmwarefusion", "uml", "phyp",
    }
)  # fmt: skip
TRANSPORTS = frozenset({"unix", "ssh", "tcp", "tls", "libssh", "libssh2", "ext"})


def check_uri(uri: str) -> None:
    """Raise ``InvalidURI`` unless ``uri`` names a libvirt driver and transport."""
    try:
        scheme = urlsplit(uri).scheme
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    driver, _, transport = scheme.partition("+")
    if not scheme or "://" not in uri:
        raise InvalidURI(
            f"{redact_uri(uri)!r} is not a libvirt URI such as qemu:///system or test:///default"
        )
    if driver not in DRIVERS:
        raise InvalidURI(
            f"{redact_uri(uri)!r}: {driver!r} is not a libvirt driver (try qemu, test, xen, lxc, ...)"
        )
    if transport and transport not in TRANSPORTS:
        raise InvalidURI(
            f"{redact_uri(uri)!r}: {transport!r} is not a libvirt transport ({', '.join(sorted(TRANSPORTS))})"
        )
