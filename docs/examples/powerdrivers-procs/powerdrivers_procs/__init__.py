"""powerdrivers-procs: a powerdrivers driver whose instances are local processes.

A third-party driver, published as its own distribution: installed, it
registers ``procs`` in the ``powerdrivers.drivers`` entry-point group, and
``powerdrivers.load_driver("procs", "procs:///path/to/dir")`` loads it::

    import powerdrivers
    from powerdrivers_procs import define

    define("/srv/demo", "sleeper", ["sleep", "300"])
    with powerdrivers.load_driver("procs", "procs:///srv/demo") as driver:
        driver.start("sleeper")
        print(driver.shutdown("sleeper", timeout=5).outcome)  # graceful
"""

from powerdrivers_procs._define import define
from powerdrivers_procs._definitions import instance_id
from powerdrivers_procs._driver import ProcessDriver
from powerdrivers_procs._native import PROCS_NATIVE_STATES, ProcsNativeState

__all__ = ["PROCS_NATIVE_STATES", "ProcessDriver", "ProcsNativeState", "define", "instance_id"]
