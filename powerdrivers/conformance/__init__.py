"""The conformance kit: prove a driver behaves like powerdrivers' own, with one pytest command.

The kit is a pytest plugin registered through pytest's ``pytest11`` entry
point and inert unless asked for. Name a driver and run pytest::

    pytest --powerdrivers-driver mydriver --powerdrivers-uri my://host --powerdrivers-spawn

It checks the contract from what the driver declares: every declared
capability works and ends in the state the operation table says; every
undeclared one raises ``UnsupportedOperation``; every reading is covered
by the driver's native-state table and carries canonical and native values;
a bogus instance id raises ``InstanceNotFound``; operations the table
forbids raise ``InvalidStateTransition`` and change nothing; a deleted
instance is gone for a fresh connection too; graceful shutdown reports an
outcome; events arrive for state changes and are marked when the driver
caused them; and no untyped exception escapes.

What the command line names is tried once before any test runs (the driver
loads, connects and finds the given instances); a failure is one pytest
usage error naming the flag. Instances the kit was given are put back in
the power states they had before the run, as far as it can, and its summary
says what became of each.

:class:`EventRecorder` is the listener the kit uses; driver authors may use
it in their own tests.
"""

from powerdrivers.conformance._recorder import EventRecorder
from powerdrivers.conformance._settings import KitSettings

__all__ = ["EventRecorder", "KitSettings"]
