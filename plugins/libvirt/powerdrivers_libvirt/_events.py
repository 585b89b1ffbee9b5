"""libvirt lifecycle events and what each means canonically."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType

import libvirt

from powerdrivers import EventKind
from powerdrivers_libvirt._states import libvirt_names

#: Lifecycle event type constant -> the prefix of its detail constants.
EVENT_TYPES = (
    "DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED", "SHUTDOWN", "PMSUSPENDED",
    "CRASHED",
)  # fmt: skip

_E = EventKind

#: (event type, detail) -> (event kind, native state, native reason), or None for
#: events that say nothing about power (a definition was updated or renamed).
#: Native values use the state/reason vocabulary of the state table.
EVENT_TABLE: Mapping[tuple[str, str], tuple[EventKind, str, str] | None] = MappingProxyType(
    {
        ("DEFINED", "ADDED"): (_E.SPAWNED, "shutoff", "unknown"),
        ("DEFINED", "UPDATED"): None,
        ("DEFINED", "RENAMED"): None,
        ("DEFINED", "FROM_SNAPSHOT"): None,
        ("UNDEFINED", "REMOVED"): (_E.DELETED, "shutoff", "unknown"),
        ("UNDEFINED", "RENAMED"): None,
        ("STARTED", "BOOTED"): (_E.STARTED, "running", "booted"),
        ("STARTED", "MIGRATED"): (_E.STARTED, "running", "migrated"),
        ("STARTED", "RESTORED"): (_E.RESUMED, "running", "restored"),
        ("STARTED", "FROM_SNAPSHOT"): (_E.STARTED, "running", "from_snapshot"),
        ("STARTED", "WAKEUP"): (_E.RESUMED, "running", "wakeup"),
        ("SUSPENDED", "PAUSED"): (_E.PAUSED, "paused", "user"),
        ("SUSPENDED", "MIGRATED"): (_E.PAUSED, "paused", "migration"),
        ("SUSPENDED", "IOERROR"): (_E.PAUSED, "paused", "ioerror"),
        ("SUSPENDED", "WATCHDOG"): (_E.PAUSED, "paused", "watchdog"),
        ("SUSPENDED", "RESTORED"): (_E.PAUSED, "paused", "unknown"),
        ("SUSPENDED", "FROM_SNAPSHOT"): (_E.PAUSED, "paused", "from_snapshot"),
        ("SUSPENDED", "API_ERROR"): (_E.PAUSED, "paused", "api_error"),
        ("SUSPENDED", "POSTCOPY"): (_E.PAUSED, "paused", "postcopy"),
        ("SUSPENDED", "POSTCOPY_FAILED"): (_E.PAUSED, "paused", "postcopy_failed"),
        ("RESUMED", "UNPAUSED"): (_E.UNPAUSED, "running", "unpaused"),
        ("RESUMED", "MIGRATED"): (_E.UNPAUSED, "running", "migrated"),
        ("RESUMED", "FROM_SNAPSHOT"): (_E.UNPAUSED, "running", "from_snapshot"),
        ("RESUMED", "POSTCOPY"): (_E.UNPAUSED, "running", "postcopy"),
        ("RESUMED", "POSTCOPY_FAILED"): (_E.UNPAUSED, "running", "postcopy_failed"),
        ("STOPPED", "SHUTDOWN"): (_E.STOPPED, "shutoff", "shutdown"),
        ("STOPPED", "DESTROYED"): (_E.STOPPED, "shutoff", "destroyed"),
        ("STOPPED", "CRASHED"): (_E.STOPPED, "shutoff", "crashed"),
        ("STOPPED", "MIGRATED"): (_E.STOPPED, "shutoff", "migrated"),
        ("STOPPED", "SAVED"): (_E.STOPPED, "shutoff", "saved"),
        ("STOPPED", "FAILED"): (_E.STOPPED, "shutoff", "failed"),
        ("STOPPED", "FROM_SNAPSHOT"): (_E.STOPPED, "shutoff", "from_snapshot"),
        # The guest finished shutting down; QEMU has not exited yet.
        ("SHUTDOWN", "FINISHED"): (_E.TRANSITION, "shutdown", "user"),
        ("SHUTDOWN", "GUEST"): (_E.TRANSITION, "shutdown", "user"),
        ("SHUTDOWN", "HOST"): (_E.TRANSITION, "shutdown", "user"),
        ("PMSUSPENDED", "MEMORY"): (_E.SUSPENDED, "pmsuspended", "unknown"),
        ("PMSUSPENDED", "DISK"): (_E.SUSPENDED, "pmsuspended", "unknown"),
        ("CRASHED", "PANICKED"): (_E.CRASHED, "crashed", "panicked"),
        ("CRASHED", "CRASHLOADED"): (_E.CRASHED, "crashed", "panicked"),
    }
)


def detail_constants(event_type: str) -> list[str]:
    """Return the installed libvirt's detail constant names for a lifecycle event type."""
    prefix = f"VIR_DOMAIN_EVENT_{event_type}_"
    return sorted(name for name in libvirt_names() if name.startswith(prefix))


@functools.cache
def _code_names() -> tuple[dict[int, str], dict[str, dict[int, str]]]:
    types = {getattr(libvirt, f"VIR_DOMAIN_EVENT_{t}"): t for t in EVENT_TYPES}
    details = {
        event_type: {
            getattr(libvirt, name): name.removeprefix(f"VIR_DOMAIN_EVENT_{event_type}_")
            for name in detail_constants(event_type)
        }
        for event_type in EVENT_TYPES
    }
    return types, details


def event_meaning(event: int, detail: int) -> tuple[EventKind, str, str] | str | None:
    """Return the table entry for numeric (event, detail), or a description if unknown."""
    types, details = _code_names()
    event_type = types.get(event)
    detail_name = details.get(event_type or "", {}).get(detail)
    if event_type is None or detail_name is None:
        return f"unknown lifecycle event {event}/{detail}"
    return EVENT_TABLE[(event_type, detail_name)]
