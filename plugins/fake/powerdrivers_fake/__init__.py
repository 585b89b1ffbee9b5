"""The fake powerdrivers driver: an in-memory hypervisor for CI, tests and demos.

Load it like any driver (``powerdrivers.load_driver("fake")``); it follows
the same operation table and event contract as the real drivers, and adds
controls for injecting latency, failures, uncooperative guests and crashes.
"""

from powerdrivers_fake._driver import FakeDriver
from powerdrivers_fake._native import FAKE_NATIVE_STATES, FakeNativeState
from powerdrivers_fake._options import ERRORS
from powerdrivers_fake._seed import instance_id

__all__ = ["ERRORS", "FAKE_NATIVE_STATES", "FakeDriver", "FakeNativeState", "instance_id"]
