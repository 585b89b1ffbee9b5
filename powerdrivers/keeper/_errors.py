"""The keeper's errors: each a ``PowerDriversError``, so callers catch one tree."""

from __future__ import annotations

from powerdrivers import ConfigurationError, InstanceNotFound, PowerDriversError


class KeeperError(PowerDriversError):
    """Base class of the keeper's own errors."""


class UnknownInstance(KeeperError, InstanceNotFound):
    """The store has no instance with this id (no keeper has seen it yet)."""

    def __init__(self, ref: str) -> None:
        self.ref = ref
        message = f"the keeper's store has no instance {ref!r} (no keeper has seen it yet)"
        PowerDriversError.__init__(self, message)


class UnknownAction(KeeperError):
    """The store has no action with this id."""

    def __init__(self, action_id: int) -> None:
        self.action_id = action_id
        PowerDriversError.__init__(self, f"the keeper's store has no action {action_id}")


class ActionInFlight(KeeperError):
    """The instance already has an open action (this process's or another's): nothing was done."""


class StoreError(KeeperError):
    """The store cannot be opened, migrated or written; the message says which and why."""


class InvalidStoreURL(StoreError, ConfigurationError):
    """The store URL is empty or not a database URL: the caller's input, nothing was attempted."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (so no intent can be recorded, and no action is taken)."""


class HostAlreadyKept(KeeperError):
    """Another live keeper (this process or another) keeps the host in this store: nothing was done."""

    def __init__(self, host: str, owner: str | None) -> None:
        self.host = host
        self.owner = owner
        by = f"by {owner}" if owner else "by another keeper"
        PowerDriversError.__init__(
            self, f"host {host!r} is already kept {by} on this store; a host has one keeper at a time"
        )
