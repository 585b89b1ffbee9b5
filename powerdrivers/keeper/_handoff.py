"""What a host's worker and the keeper's action threads hand each other, and the keeper's clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, NamedTuple, Protocol

from powerdrivers import InstanceReading, Operation
from powerdrivers.keeper._decide import Decision
from powerdrivers.keeper._model import Action, Cause, InstanceView, Policy

if TYPE_CHECKING:
    from powerdrivers.keeper._host import HostWorker


def utcnow() -> datetime:
    """Return the keeper's time: timezone-aware UTC."""
    return datetime.now(UTC)


def unchanged(before: InstanceReading, after: InstanceReading) -> bool:
    """Whether two readings of an instance say the same, whenever they were taken.

    Compares the tuples up to ``observed_at`` (the last field) in one step: this runs once per
    instance in every resync.
    """
    return before[:6] == after[:6]


def reading_of(view: InstanceView) -> InstanceReading:
    """Return the last reading a view holds."""
    return InstanceReading(
        view.id,
        view.name,
        view.power_state,
        view.transition,
        view.native_state,
        view.native_reason,
        view.observed_at,
    )


class ActionEnd(NamedTuple):
    """What an action thread reports back: the instance, and the error if it failed.

    ``retry`` says the correction was dropped for a passing reason (its intent could not be
    recorded, or another process's action was open): it is looked at again later. ``blocked``
    says the reason was another process's open action: it is looked at again once that ends.
    """

    instance_id: str
    operation: Operation
    error: str | None
    acted: bool
    retry: bool = False
    blocked: bool = False


class ActionTaker(Protocol):
    """Who carries the worker's actions out; both methods return at once (work goes to threads)."""

    def correct(
        self, worker: HostWorker, instance_id: str, decision: Decision, cause: Cause | None, policy: Policy
    ) -> None:
        """Carry out a corrective action, re-reading the instance first."""

    def carry_out(self, worker: HostWorker, action: Action) -> None:
        """Carry out a pending request."""
