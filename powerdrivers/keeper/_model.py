"""The keeper's values: run policies, actions (intents), history records, instance views, VCPU samples.

Plain frozen values shared by the store and the keeper; nothing here touches a database.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from powerdrivers import InstanceReading, PowerState, Transition, VcpuStats


class Policy(enum.StrEnum):
    """What the keeper keeps an instance at (KubeVirt's run strategies, by another name)."""

    ALWAYS = "always"
    """Keep it running: restart after a crash or any stop the keeper did not ask for."""
    ON_FAILURE = "on_failure"
    """Restart only after a crash or failure; a clean guest shutdown is adopted as off."""
    MANUAL = "manual"
    """Never act: only observe and record. The default for an instance first seen."""
    HALTED = "halted"
    """Keep it off: a start nobody asked the keeper for is undone."""


class ActionStatus(enum.StrEnum):
    """Where an action stands. ``pending`` and ``running`` are open; the others are final."""

    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class RecordKind(enum.StrEnum):
    """What a history record is about."""

    OBSERVED = "observed"
    """The instance's state changed (from -> to), with its cause."""
    ACTION = "action"
    """An action ended (requested by whom, outcome, error)."""
    POLICY = "policy"
    """The desired policy changed (by whom)."""
    QUARANTINE = "quarantine"
    """The instance was quarantined (fault text) or released."""
    HOST = "host"
    """The instance's host became unreachable (readings stale) or answered again."""


class Cause(enum.StrEnum):
    """Why an observed change happened, as far as the keeper can tell."""

    OPERATION = "operation"
    """Caused by an operation of this framework (``operation`` names it)."""
    OUT_OF_BAND = "out_of_band"
    """Someone else (virsh, xe, another tool) changed it."""
    CRASH = "crash"
    """The guest or its emulator crashed."""
    GUEST = "guest"
    """The guest did it itself (shut itself down cleanly, or rebooted)."""
    GUEST_REBOOT = "guest_reboot"
    """The guest rebooted itself: never a crash, never a reason to act."""
    RESYNC = "resync"
    """Found by a full resync (an event was missed); the cause is not known."""
    APPEARED = "appeared"
    """First seen by the keeper."""
    VANISHED = "vanished"
    """No longer listed by its host (deleted or undefined)."""


@dataclass(frozen=True, slots=True)
class Action:
    """One action of the keeper or of a user through it, written before the driver is called."""

    id: int
    instance_id: str
    host: str
    operation: str
    options: dict[str, Any]
    status: ActionStatus
    requested_by: str
    requested_at: datetime
    started_at: datetime | None = None
    ended_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the service's action object)."""
        return {
            "id": self.id,
            "instance_id": self.instance_id,
            "host": self.host,
            "operation": self.operation,
            "options": dict(self.options),
            "status": self.status.value,
            "outcome": self.outcome,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "started_at": self.started_at.isoformat() if self.started_at else None,
            "ended_at": self.ended_at.isoformat() if self.ended_at else None,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class HistoryRecord:
    """One append-only history entry of an instance."""

    id: int
    instance_id: str
    host: str
    time: datetime
    kind: RecordKind
    from_state: PowerState | None = None
    to_state: PowerState | None = None
    native_state: str | None = None
    native_reason: str | None = None
    cause: Cause | None = None
    operation: str | None = None
    outcome: str | None = None
    requested_by: str | None = None
    detail: str | None = None
    transition: Transition | None = None
    """On an ``observed`` record: the transition the instance was in then (None when settled)."""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the CLI's and the service's history record)."""
        return {
            "id": self.id,
            "instance_id": self.instance_id,
            "host": self.host,
            "time": self.time.isoformat(),
            "kind": self.kind.value,
            "from_state": self.from_state.value if self.from_state else None,
            "to_state": self.to_state.value if self.to_state else None,
            "transition": self.transition.value if self.transition else None,
            "native_state": self.native_state,
            "native_reason": self.native_reason,
            "cause": self.cause.value if self.cause else None,
            "operation": self.operation,
            "outcome": self.outcome,
            "requested_by": self.requested_by,
            "detail": self.detail,
        }


@dataclass(frozen=True, slots=True)
class InstanceView:
    """The keeper's view of one instance: last reading, desired policy and what it is doing."""

    id: str
    host: str
    name: str
    power_state: PowerState
    transition: Transition | None
    native_state: str
    native_reason: str | None
    observed_at: datetime
    policy: Policy
    stale: bool = False
    quarantined: bool = False
    fault: str | None = None
    failures: int = 0
    backoff_until: datetime | None = None
    in_flight: Action | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    action_failures: int = 0
    """Consecutive failed actions; at the keeper's ``quarantine_after`` the instance is quarantined."""

    @classmethod
    def from_reading(cls, host: str, reading: InstanceReading, policy: Policy) -> InstanceView:
        """Build a view of a fresh reading with no action, backoff or quarantine."""
        return cls(
            id=reading.id,
            host=host,
            name=reading.name,
            power_state=reading.power_state,
            transition=reading.transition,
            native_state=reading.native_state,
            native_reason=reading.native_reason,
            observed_at=reading.observed_at,
            policy=policy,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the service's instance object)."""
        return {
            "id": self.id,
            "name": self.name,
            "host": self.host,
            "power_state": self.power_state.value,
            "transition": self.transition.value if self.transition else None,
            "native_state": self.native_state,
            "native_reason": self.native_reason,
            "observed_at": self.observed_at.isoformat(),
            "policy": self.policy.value,
            "stale": self.stale,
            "quarantined": self.quarantined,
            "fault": self.fault,
            "failures": self.failures,
            "action_failures": self.action_failures,
            "backoff_until": self.backoff_until.isoformat() if self.backoff_until else None,
            "in_flight": self.in_flight.to_dict() if self.in_flight else None,
        }


@dataclass(frozen=True, slots=True)
class HostView:
    """One host as the keeper knows it: its driver, redacted URI and whether it answers."""

    name: str
    driver: str
    uri: str | None
    reachable: bool
    since: datetime
    error: str | None = None
    owner: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the service's host object)."""
        return {
            "name": self.name,
            "driver": self.driver,
            "uri": self.uri,
            "reachable": self.reachable,
            "since": self.since.isoformat(),
            "error": self.error,
            "owner": self.owner,
        }


@dataclass(frozen=True, slots=True)
class VcpuSample:
    """How one VCPU of a running instance spent one sampling window, as the keeper stored it.

    ``at`` is the window's end (timezone-aware UTC) and ``window_s`` its length; ``running``,
    ``blocked`` and ``waiting`` (steal) are fractions of the window, as in
    :class:`powerdrivers.VcpuStats`; ``halted`` (a fraction, part of blocked) and the exit rates
    (per second) are ``None`` where the instance's driver cannot measure them.
    """

    instance_id: str
    host: str
    vcpu: int
    at: datetime
    window_s: float
    running: float
    blocked: float
    waiting: float
    halted: float | None = None
    halt_exits: float | None = None
    io_exits: float | None = None
    mmio_exits: float | None = None

    @classmethod
    def of(cls, instance_id: str, host: str, at: datetime, stats: VcpuStats) -> VcpuSample:
        """Return the sample of one VCPU's statistics (``stats``) of a round of ``host`` taken ``at``."""
        return cls(
            instance_id=instance_id,
            host=host,
            vcpu=stats.vcpu,
            at=at,
            window_s=stats.window_s,
            running=stats.running,
            blocked=stats.blocked,
            waiting=stats.waiting,
            halted=stats.halted,
            halt_exits=stats.halt_exits,
            io_exits=stats.io_exits,
            mmio_exits=stats.mmio_exits,
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the service's VCPU sample); ``None`` where not measured."""
        return {
            "instance_id": self.instance_id,
            "host": self.host,
            "vcpu": self.vcpu,
            "at": self.at.isoformat(),
            "window_s": self.window_s,
            "running": self.running,
            "blocked": self.blocked,
            "waiting": self.waiting,
            "halted": self.halted,
            "halt_exits": self.halt_exits,
            "io_exits": self.io_exits,
            "mmio_exits": self.mmio_exits,
        }
