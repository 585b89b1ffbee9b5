"""The Xen powerdrivers driver: xapi (XenServer, XCP-ng) through the official XenAPI SDK.

``powerdrivers_xen.testing`` holds a xapi simulator written from the
XenAPI reference, for tests (ours and yours) where no Xen host is at hand.
"""

from powerdrivers_xen._driver import XenDriver
from powerdrivers_xen._states import NATIVE_STATES, POWER_OPERATIONS

__all__ = ["NATIVE_STATES", "POWER_OPERATIONS", "XenDriver"]
