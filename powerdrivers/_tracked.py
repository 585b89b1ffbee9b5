"""An operation of a driver in flight, for a ``with`` block around its primitive."""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Final

from powerdrivers._exceptions import (
    ConfigurationError,
    InstanceNotFound,
    InvalidStateTransition,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers._operations import Operation

if TYPE_CHECKING:
    from powerdrivers._driver import Driver

_LOG = logging.getLogger("powerdrivers.driver")

#: Errors that say an operation was refused before it changed anything: it caused no event.
_REFUSED: Final = (ConfigurationError, InstanceNotFound, InvalidStateTransition, UnsupportedOperation)


class Tracked:
    """Marks an operation in flight on an instance while the ``with`` block runs.

    While it runs, readings of the instance show the operation's transition
    and events are attributed to it; a conflicting operation already in
    flight makes entering raise :class:`InvalidStateTransition` naming the
    instance by ``label`` in its ``state``. On a clean exit a polling source
    looks at once, so the change is attributed while the operation is still
    in flight. An operation that failed with a refusal is owed no event.
    (A class rather than a generator: this is every operation's hot path.)
    """

    __slots__ = ("_driver", "_instance_id", "_label", "_operation", "_state", "_token")

    def __init__(
        self, driver: Driver, instance_id: str, operation: Operation, label: str, state: str
    ) -> None:
        self._driver = driver
        self._instance_id = instance_id
        self._operation = operation
        self._label = label
        self._state = state

    def __enter__(self) -> None:
        self._token = self._driver._tracker.begin(
            self._instance_id, self._operation, label=self._label, state=self._state
        )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        driver = self._driver
        try:
            # A polling source would otherwise notice the change only after the operation
            # ended, perhaps after the next one began: look now, while it is in flight.
            if exc_type is None:
                try:
                    polled = driver._event_source.poll_now()
                except PowerDriversError as error:
                    _LOG.debug("polling after %s failed: %s", self._operation.value, error)
                else:
                    if polled:
                        driver._tracker.caught_up(self._instance_id)
        finally:
            driver._tracker.end(
                self._token, reached_hypervisor=exc_type is None or not issubclass(exc_type, _REFUSED)
            )
