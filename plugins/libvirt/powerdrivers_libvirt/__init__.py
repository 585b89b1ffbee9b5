"""The libvirt powerdrivers driver: any libvirt URI, every domain state mapped."""

from powerdrivers_libvirt._driver import LibvirtDriver
from powerdrivers_libvirt._states import NATIVE_STATES

__all__ = ["NATIVE_STATES", "LibvirtDriver"]
