"""The kit's run: one connection, checked before any test runs, and the given instances put back after.

Everything the command line names is tried once, up front: the driver loads,
the URI and options connect, the instances exist, and a driver asked to spawn
declares spawn. What fails is one ``pytest.UsageError`` naming the flag, so
pytest exits with its usage-error status (4) and one line instead of the
same error in every test.
"""

from __future__ import annotations

from typing import NamedTuple

import pytest

from powerdrivers._capabilities import Capability
from powerdrivers._driver import Driver
from powerdrivers._exceptions import InstanceNotFound, InvalidOption, PowerDriversError
from powerdrivers._states import PowerState
from powerdrivers.conformance._harness import steer, untyped
from powerdrivers.conformance._settings import KitSettings

#: How many instance names a usage error about a missing instance lists.
_LISTED = 10

#: Where the kit puts back an instance whose state before the run it cannot recreate.
_NEAREST = {PowerState.CRASHED: PowerState.SHUTOFF}


class Restored(NamedTuple):
    """What became of one given instance at the end of the run."""

    ref: str
    ok: bool
    message: str


class KitSession:
    """The driver connection every check shares, and each given instance's power state before the run."""

    def __init__(self, settings: KitSettings, driver: Driver, before: dict[str, tuple[str, PowerState]]):
        self.settings = settings
        self.driver = driver
        self._before = before

    @classmethod
    def open(cls, settings: KitSettings) -> KitSession:
        """Load and connect the driver and find the given instances.

        Raises ``pytest.UsageError`` naming the flag at fault: the driver
        (``--powerdrivers-driver``, ``--powerdrivers-spawn``), the connection
        (``--powerdrivers-uri``, ``--powerdrivers-option``) or an instance
        (``--powerdrivers-instance``).
        """
        try:
            capabilities = settings.driver_class().capabilities
        except PowerDriversError as error:
            raise pytest.UsageError(f"--powerdrivers-driver: {error}") from None
        if settings.spawn and Capability.SPAWN not in capabilities:
            raise pytest.UsageError(
                f"--powerdrivers-spawn: driver {settings.driver!r} does not declare spawn; "
                "name existing instances with --powerdrivers-instance instead"
            )
        driver = _connect(settings)
        try:
            before = _find_instances(driver, settings.instances)
        except BaseException:
            driver.close()
            raise
        return cls(settings, driver, before)

    def restore(self) -> list[Restored]:
        """Put each given instance back in the power state it had before the run, as far as possible.

        Never raises: what could not be done is reported in the result.
        A crashed instance is left shut off (nothing can crash it on purpose);
        one whose state was unknown is left as it is.
        """
        return [self._restore(instance_id, ref, state) for instance_id, (ref, state) in self._before.items()]

    def close(self) -> Restored | None:
        """Close the connection; return what went wrong, if anything did."""
        try:
            self.driver.close()
        except Exception as error:
            failure = f"closing the connection failed: {_described(error, 'close')}"
            return Restored(self.settings.driver, False, f"{self.settings.driver}: {failure}")
        return None

    def _restore(self, instance_id: str, ref: str, before: PowerState) -> Restored:
        target = _NEAREST.get(before, before)
        if target is PowerState.UNKNOWN:
            return Restored(ref, False, f"{ref}: its state was unknown before the run; left as it is")
        try:
            after = steer(self.driver, instance_id, target)
        except Exception as error:
            failure = f"{_described(error)}; {self._now(instance_id)}"
            return Restored(ref, False, f"{ref}: could not put it back to {target.value}: {failure}")
        if after is not target:
            return Restored(
                ref, False, f"{ref}: could not put it back to {target.value}; it is {after.value}"
            )
        if target is not before:
            return Restored(ref, True, f"{ref}: was {before.value} before the run; left {target.value}")
        return Restored(ref, True, f"{ref}: {target.value}, as before the run")

    def _now(self, instance_id: str) -> str:
        try:
            return f"it is {self.driver.get_instance(instance_id).power_state.value}"
        except Exception:  # only decorates a report that is already a failure
            return "its state cannot be read"


def _connect(settings: KitSettings) -> Driver:
    """Connect and list once; a usage error naming the URI or the options if that fails."""
    try:
        driver = settings.connect()
    except InvalidOption as error:
        raise pytest.UsageError(f"--powerdrivers-option: {error}") from None
    except PowerDriversError as error:
        raise pytest.UsageError(f"--powerdrivers-uri: cannot connect: {error}") from None
    except Exception as error:
        raise pytest.UsageError(f"--powerdrivers-uri: {untyped('connecting', error)}") from None
    try:
        driver.list_instances()  # a driver may connect lazily; this proves the connection
    except Exception as error:
        driver.close()
        raise pytest.UsageError(
            f"--powerdrivers-uri: cannot list instances: {_described(error, 'list_instances')}"
        ) from None
    return driver


def _find_instances(driver: Driver, refs: tuple[str, ...]) -> dict[str, tuple[str, PowerState]]:
    """Return each given instance's id mapped to the ref it was given as and its power state now."""
    before: dict[str, tuple[str, PowerState]] = {}
    for ref in refs:
        try:
            reading = driver.get_instance(ref)
        except InstanceNotFound as error:
            raise pytest.UsageError(f"--powerdrivers-instance {ref!r}: {error}; {_listing(driver)}") from None
        except Exception as error:
            raise pytest.UsageError(
                f"--powerdrivers-instance {ref!r}: {_described(error, 'get_instance')}"
            ) from None
        before.setdefault(reading.id, (ref, reading.power_state))
    return before


def _listing(driver: Driver) -> str:
    try:
        names = sorted(reading.name for reading in driver.list_instances())
    except Exception:  # only decorates a message that is already an error
        return "the driver's instances could not be listed"
    if not names:
        return "the driver lists no instances"
    more = f" and {len(names) - _LISTED} more" if len(names) > _LISTED else ""
    return "the driver lists " + ", ".join(names[:_LISTED]) + more


def _described(error: Exception, what: str = "the driver") -> str:
    return str(error) if isinstance(error, PowerDriversError) else untyped(what, error)
