"""The keeper's errors: each a ``PowerDriversError``, so callers catch one tree."""

from __future__ import annotations

from powerdrivers import InstanceNotFound, PowerDriversError


class KeeperError(PowerDriversError):
    """Base class of the keeper's own errors."""


class UnknownInstance(KeeperError, InstanceNotFound):
    """The store has no instance with this id (no keeper has seen it yet)."""


class ActionInFlight(KeeperError):
    """The instance already has an open action (this process's or another's): nothing was done."""


class StoreError(KeeperError):
    """The store cannot be opened, migrated or written; the message says which and why."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (so no intent can be recorded, and no action is taken)."""
