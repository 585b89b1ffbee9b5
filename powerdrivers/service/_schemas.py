"""The API's request bodies and documented answers (Pydantic models).

Requests refuse unknown fields (``extra="forbid"``: a typo is a 422 naming it, never ignored) and
bound every number. The answer models document the contract in the OpenAPI document; the
endpoints send the keeper's own ``to_dict()`` JSON, which these models describe.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from powerdrivers import PowerState, Transition
from powerdrivers.keeper import ActionStatus, Policy

#: The longest action timeout the API accepts (seconds): an hour.
MAX_TIMEOUT = 3600.0

#: What ``POST /v1/instances/{id}/actions`` carries out (the keeper's requestable operations).
RequestedOperation = Literal[
    "start", "shutdown", "power_off", "reboot", "hard_reboot", "pause", "unpause", "suspend", "resume"
]

#: The options each operation takes (the keeper's ``check_request`` is the final word).
OPTIONS_BY_OPERATION: dict[str, frozenset[str]] = {
    "shutdown": frozenset({"timeout", "force"}),
    "reboot": frozenset({"timeout", "force"}),
}

_REQUEST = ConfigDict(extra="forbid")


class PolicyRequest(BaseModel):
    """``PUT /v1/instances/{id}/policy``: the policy the keeper keeps the instance at."""

    model_config = _REQUEST

    policy: Policy


class ActionRequest(BaseModel):
    """``POST /v1/instances/{id}/actions``: an operation and its options.

    ``timeout`` (seconds, 0 < t <= 3600) and ``force`` (after the timeout, power off) apply to
    ``shutdown`` and ``reboot`` only; any other operation given them is refused naming the option.
    """

    model_config = _REQUEST

    operation: RequestedOperation
    timeout: float | None = Field(default=None, gt=0, le=MAX_TIMEOUT, allow_inf_nan=False, strict=True)
    force: StrictBool | None = None

    def options(self) -> dict[str, Any]:
        """Return the options given (unset ones left out), as the keeper takes them."""
        given: dict[str, Any] = {}
        if self.timeout is not None:
            given["timeout"] = self.timeout
        if self.force is not None:
            given["force"] = self.force
        return given

    def refused_option(self) -> str | None:
        """Return the first option given that the operation does not take, if any."""
        allowed = OPTIONS_BY_OPERATION.get(self.operation, frozenset())
        return next((name for name in sorted(self.options()) if name not in allowed), None)


class ActionOut(BaseModel):
    """An action (intent): what was asked, by which token, and how it ended."""

    id: int
    instance_id: str
    host: str
    operation: str
    options: dict[str, Any]
    status: ActionStatus
    outcome: str | None
    requested_by: str = Field(description="The name of the token that asked (never its value).")
    requested_at: str
    started_at: str | None
    ended_at: str | None
    error: str | None


class InstanceOut(BaseModel):
    """The keeper's view of one instance."""

    id: str
    name: str
    host: str
    power_state: PowerState
    transition: Transition | None
    native_state: str
    native_reason: str | None
    observed_at: str
    policy: Policy
    stale: bool
    quarantined: bool
    fault: str | None
    failures: int
    action_failures: int
    backoff_until: str | None
    in_flight: ActionOut | None


class InstancePage(BaseModel):
    """One page of instances; ``next`` is the cursor of the next page (``null`` on the last)."""

    items: list[InstanceOut]
    next: str | None


class HostOut(BaseModel):
    """One host: driver, redacted URI, owning process, whether it answers and since when."""

    name: str
    driver: str
    uri: str | None
    reachable: bool
    since: str
    error: str | None
    owner: str | None


class HostList(BaseModel):
    """Every host of the fleet."""

    items: list[HostOut]


class RecordOut(BaseModel):
    """One history record of an instance."""

    id: int
    instance_id: str
    host: str
    time: str
    kind: str
    from_state: str | None
    to_state: str | None
    transition: str | None
    native_state: str | None
    native_reason: str | None
    cause: str | None
    operation: str | None
    outcome: str | None
    requested_by: str | None
    detail: str | None


class RecordPage(BaseModel):
    """Records newest first; ``next`` is the ``before`` of the next (older) page, ``null`` at the end."""

    items: list[RecordOut]
    next: int | None


class VcpuSampleOut(BaseModel):
    """One VCPU's sampling window: how its time went, as fractions of the window (0 to 1).

    ``null`` where the host's driver cannot measure a value (never a made-up 0).
    """

    instance_id: str
    host: str
    vcpu: int
    at: str = Field(description="The end of the window (ISO 8601, UTC).")
    window_s: float = Field(description="The window's length in seconds.")
    running: float = Field(description="Running guest code on a physical CPU.")
    blocked: float = Field(description="Idle or waiting on I/O inside the guest.")
    waiting: float = Field(description="Runnable but waiting for a physical CPU (steal time).")
    halted: float | None = Field(description="Halted with nothing to run (part of blocked).")
    halt_exits: float | None = Field(description="Halt exits to the hypervisor per second.")
    io_exits: float | None = Field(description="Port I/O exits per second.")
    mmio_exits: float | None = Field(description="Memory-mapped I/O exits per second.")


class VcpuSamplePage(BaseModel):
    """An instance's VCPU samples in a period, oldest first (by time, then VCPU)."""

    instance_id: str
    interval: float = Field(description="Seconds between samples (the keeper's setting; 0: sampling is off).")
    items: list[VcpuSampleOut]
    next: str | None = Field(description="The ``since`` of the next page (``null`` on the last).")


class ErrorDetail(BaseModel):
    """What went wrong, in the one error shape of the service."""

    status: int
    code: str
    message: str
    field: str | None = Field(description="The input at fault (400, 422).")
    allowed_states: list[str] | None = Field(description="The states the operation may start from (409).")


class ErrorOut(BaseModel):
    """Every error answer of the service."""

    error: ErrorDetail


class Health(BaseModel):
    """``GET /healthz``: the store answers."""

    status: Literal["ok"]
    hosts: list[str] = Field(description="The hosts this process keeps now.")


#: The error answers documented on every endpoint.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut, "description": description}
    for status, description in (
        (401, "No token, or an unknown one."),
        (422, "Bad input, naming the field."),
        (503, "The store (or the host) cannot be reached now."),
    )
}
