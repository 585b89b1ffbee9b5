"""A driver's table from native states to canonical ones."""

from __future__ import annotations

import enum
import logging
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import Final, NamedTuple

from powerdrivers._reading import InstanceReading
from powerdrivers._states import PowerState, Transition

_LOG = logging.getLogger("powerdrivers.native")

#: How many distinct mapped (state, reason) pairs a table remembers the meaning of.
_RESOLVED_MAX = 1024


class _NoReason(enum.Enum):
    """The type of :data:`NO_REASON`: one value, distinct from ``None`` and from every string."""

    NO_REASON = "no reason"

    def __repr__(self) -> str:
        return "powerdrivers.NO_REASON"


#: The ``native_reason`` of a row for readings that come with no reason at all (``None``),
#: as opposed to ``None`` in a row, which stands for any reason.
NO_REASON: Final = _NoReason.NO_REASON


class NativeMapping(NamedTuple):
    """One row: a native state (and optionally reason) and what it means canonically.

    ``native_reason`` says which readings of the state the row is for:

    - a string: readings with exactly that reason;
    - :data:`NO_REASON`: readings that come with no reason (their
      ``native_reason`` is ``None``);
    - ``None``: any reason, the state's catch-all: readings whose reason
      (or lack of one) has no row of its own.

    ``None`` keeps the meaning it has had since interface 1.0 ("any"), so
    existing tables read as before; a driver that must tell "no reason"
    apart from "some other reason" adds a :data:`NO_REASON` row. ``why``
    says why the mapping is right; it is rendered
    into the documentation. ``forced`` says the native value records that the
    instance was stopped without its guest (libvirt's ``shutoff``/``destroyed``):
    a graceful shutdown that finds it so reports ``forced``, and a stop event
    showing it is attributed only to an operation that forces.
    """

    native_state: str
    native_reason: str | _NoReason | None
    power_state: PowerState
    transition: Transition | None
    why: str = ""
    forced: bool = False

    def reason_label(self) -> str:
        """Return the row's reason as tables show it: the reason, ``(any)`` or ``(none)``."""
        if self.native_reason is None:
            return "(any)"
        if self.native_reason is NO_REASON:
            return "(none)"
        return str(self.native_reason)


class NativeStateTable:
    """Maps a hypervisor's (state, reason) pairs to canonical (power state, transition).

    Lookups never raise: a pair the table does not know maps to
    ``PowerState.UNKNOWN`` with a logged warning, and the reading keeps the
    native values so nothing is lost.
    """

    def __init__(self, driver: str, rows: Iterable[NativeMapping]) -> None:
        self.driver = driver
        self._rows = tuple(rows)
        self._index: dict[tuple[str, str | _NoReason | None], NativeMapping] = {}
        for row in self._rows:
            key = (row.native_state, row.native_reason)
            if key in self._index:
                raise ValueError(f"{driver}: native state {key} is mapped twice")
            self._index[key] = row
        self._warned: set[tuple[str, str | None]] = set()
        # Every reading looks its pair up: remember what each pair resolved to (its own
        # row or its state's catch-all), so that is one dictionary look-up.
        self._resolved: dict[tuple[str, str | None], tuple[PowerState, Transition | None]] = {}

    def __iter__(self) -> Iterator[NativeMapping]:
        return iter(self._rows)

    def __len__(self) -> int:
        return len(self._rows)

    def row_for(self, native_state: str, native_reason: str | None = None) -> NativeMapping | None:
        """Return the row a native pair maps by, or ``None`` when the table does not cover it.

        The pair's own row (a reason of ``None`` is looked up as
        :data:`NO_REASON`), else its state's catch-all (``None``) row.
        """
        own = self._index.get((native_state, NO_REASON if native_reason is None else native_reason))
        return own or self._index.get((native_state, None))

    def covers(self, native_state: str, native_reason: str | None = None) -> bool:
        """Whether the pair has a row of its own or its state has a catch-all row."""
        return self.row_for(native_state, native_reason) is not None

    def forced(self, native_state: str, native_reason: str | None = None) -> bool:
        """Whether the pair's row records a stop without the guest (see :class:`NativeMapping`)."""
        row = self.row_for(native_state, native_reason)
        return row is not None and row.forced

    def lookup(
        self, native_state: str, native_reason: str | None = None
    ) -> tuple[PowerState, Transition | None]:
        """Return the canonical (power state, transition) for a native pair."""
        return self._resolved.get((native_state, native_reason)) or self._resolve(native_state, native_reason)

    def _resolve(self, native_state: str, native_reason: str | None) -> tuple[PowerState, Transition | None]:
        key = (native_state, native_reason)
        row = self.row_for(native_state, native_reason)
        if row is None:
            if key not in self._warned:
                self._warned.add(key)
                _LOG.warning(
                    "%s: unmapped native state %r (reason %r); reporting unknown",
                    self.driver,
                    native_state,
                    native_reason,
                )
            return PowerState.UNKNOWN, None
        resolved = row.power_state, row.transition
        # Reasons are open-ended: a catch-all row may see any number of them.
        if len(self._resolved) < _RESOLVED_MAX:
            self._resolved[key] = resolved
        return resolved

    def reading(
        self,
        instance_id: str,
        name: str,
        native_state: str,
        native_reason: str | None = None,
        *,
        transition: Transition | None = None,
        observed_at: datetime | None = None,
    ) -> InstanceReading:
        """Build a reading from native values; ``transition`` overrides the table's."""
        power_state, mapped_transition = self._resolved.get((native_state, native_reason)) or self._resolve(
            native_state, native_reason
        )
        # Positional: building readings is the hot path of listings and operations.
        return InstanceReading(
            instance_id,
            name,
            power_state,
            transition or mapped_transition,
            native_state,
            native_reason,
            observed_at or datetime.now(UTC),
        )
