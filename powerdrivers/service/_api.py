"""The ``/v1`` endpoints: hosts, instances, policies, actions, quarantine and history.

Each endpoint is a thin translation: check the input (Pydantic, bounded), call the fleet (which
raises the keeper's typed errors, mapped to HTTP by ``_http_errors``), answer the keeper's own
JSON. The endpoints are plain functions, so the blocking store calls run in the thread pool.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Protocol

from fastapi import APIRouter, Depends, Path, Query
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from powerdrivers import InvalidOption, PowerState
from powerdrivers.keeper import Action, HistoryRecord, HostView, InstanceView, KeeperStore, Policy
from powerdrivers.service._auth import Principal, operator, reader
from powerdrivers.service._http_errors import ApiError, api_error_of
from powerdrivers.service._schemas import (
    ERROR_RESPONSES,
    ActionOut,
    ActionRequest,
    ErrorOut,
    HostList,
    InstanceOut,
    InstancePage,
    PolicyRequest,
    RecordPage,
)

if TYPE_CHECKING:
    from powerdrivers.service._bus import EventBus
    from powerdrivers.service._config import ServiceConfig

#: The largest page the API serves.
MAX_LIMIT = 1000
#: The largest id an action or record can have (a signed 64-bit integer).
MAX_ID = 2**63 - 1

#: An instance id as the API takes it: bounded, no control characters (no hypervisor uses them).
InstanceId = Annotated[
    str, Path(min_length=1, max_length=512, pattern=r"^[^\x00-\x1f\x7f]+$", description="The instance's id.")
]
Reader = Annotated[Principal, Depends(reader)]
Operator = Annotated[Principal, Depends(operator)]


class ServiceFleet(Protocol):
    """What the HTTP layer needs of the fleet (``powerdrivers.service._fleet.Fleet``)."""

    config: ServiceConfig
    bus: EventBus

    @property
    def store(self) -> KeeperStore:
        """The fleet's store (for reads the fleet does not wrap: the metrics' counts)."""

    def hosts(self) -> list[HostView]:
        """Every host of the fleet."""

    def instances(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[InstanceView], str | None]:
        """One page of instances and the next page's cursor."""

    def instances_json(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[str, str | None]:
        """Return the same page as the JSON text of its items, and the next page's cursor."""

    def instance(self, instance_id: str) -> InstanceView:
        """One instance."""

    def set_policy(self, instance_id: str, policy: Policy, requested_by: str) -> InstanceView:
        """Change an instance's policy."""

    def request(self, instance_id: str, operation: str, requested_by: str, **options: Any) -> Action:
        """Ask the owning keeper for an operation."""

    def action(self, action_id: int) -> Action:
        """One action."""

    def release_quarantine(self, instance_id: str, requested_by: str) -> InstanceView:
        """End a quarantine."""

    def history(self, instance_id: str, limit: int = 100, before: int | None = None) -> list[HistoryRecord]:
        """Return an instance's records, newest first."""

    def records_since(self, last_event_id: int) -> list[HistoryRecord]:
        """Every record after ``last_event_id``, oldest first (the SSE resume)."""

    def available(self) -> bool:
        """Whether the store answers now."""

    def owned_hosts(self) -> list[str]:
        """Return the hosts this process keeps."""


def fleet_of(request: Request) -> ServiceFleet:
    """Return the fleet the app serves."""
    fleet: ServiceFleet = request.app.state.fleet
    return fleet


def _json(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(content, status_code=status, headers=headers)


router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)
_CHANGES: dict[int | str, dict[str, Any]] = {403: {"model": ErrorOut, "description": "A reader's token."}}
_UNKNOWN_INSTANCE: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "Unknown instance."}
}
_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorOut, "description": "The body is not JSON."},
    413: {"model": ErrorOut, "description": "The body is over 64 KiB."},
}


@router.get("/hosts", response_model=HostList, tags=["hosts"])
def list_hosts(request: Request, principal: Reader) -> JSONResponse:
    """Every host: driver, redacted URI, owning process, reachable or not and since when."""
    return _json({"items": [host.to_dict() for host in fleet_of(request).hosts()]})


@router.get("/instances", response_model=InstancePage, tags=["instances"])
def list_instances(
    request: Request,
    principal: Reader,
    host: Annotated[str | None, Query(min_length=1, max_length=255)] = None,
    power_state: PowerState | None = None,
    policy: Policy | None = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    cursor: Annotated[str | None, Query(min_length=1, max_length=1024)] = None,
) -> Response:
    """One page of instances (by host, then id), filtered by host, power state and policy."""
    try:
        items, following = fleet_of(request).instances_json(
            host=host, power_state=power_state, policy=policy, after=cursor, limit=limit
        )
    except InvalidOption as exc:
        raise api_error_of(exc, field="cursor" if "cursor" in str(exc) else None) from exc
    # The items' JSON comes from the database as text (benchmark S1): joined, not parsed again.
    body = '{"items":' + items + ',"next":' + json.dumps(following) + "}"
    return Response(body, media_type="application/json")


@router.get(
    "/instances/{instance_id}", response_model=InstanceOut, tags=["instances"], responses=_UNKNOWN_INSTANCE
)
def get_instance(request: Request, principal: Reader, instance_id: InstanceId) -> JSONResponse:
    """Return the keeper's view of one instance."""
    return _json(fleet_of(request).instance(instance_id).to_dict())


@router.put(
    "/instances/{instance_id}/policy",
    response_model=InstanceOut,
    tags=["instances"],
    responses={**_CHANGES, **_UNKNOWN_INSTANCE, **_BODY},
)
def put_policy(
    request: Request, principal: Operator, instance_id: InstanceId, body: PolicyRequest
) -> JSONResponse:
    """Set the policy the keeper keeps the instance at; the record names the token."""
    return _json(fleet_of(request).set_policy(instance_id, body.policy, principal.name).to_dict())


@router.post(
    "/instances/{instance_id}/actions",
    status_code=202,
    response_model=ActionOut,
    tags=["actions"],
    responses={
        **_CHANGES,
        **_UNKNOWN_INSTANCE,
        **_BODY,
        409: {
            "model": ErrorOut,
            "description": "Not allowed from the state (allowed_states), or one in flight.",
        },
    },
)
def post_action(
    request: Request, principal: Operator, instance_id: InstanceId, body: ActionRequest
) -> JSONResponse:
    """Ask for an operation; answered 202 with the action (``Location``: ``/v1/actions/{id}``)."""
    refused = body.refused_option()
    if refused is not None:
        raise ApiError(422, f"{refused}: {body.operation} takes no option {refused}", field=refused)
    action = fleet_of(request).request(instance_id, body.operation, principal.name, **body.options())
    _notify(request, "action_requested", action)
    return _json(action.to_dict(), 202, headers={"Location": f"/v1/actions/{action.id}"})


@router.get(
    "/actions/{action_id}",
    response_model=ActionOut,
    tags=["actions"],
    responses={404: {"model": ErrorOut, "description": "Unknown action."}},
)
def get_action(
    request: Request, principal: Reader, action_id: Annotated[int, Path(ge=1, le=MAX_ID)]
) -> JSONResponse:
    """One action: its status (pending, running, done, failed, interrupted) and outcome."""
    return _json(fleet_of(request).action(action_id).to_dict())


@router.post(
    "/instances/{instance_id}/quarantine/clear",
    response_model=InstanceOut,
    tags=["instances"],
    responses={**_CHANGES, **_UNKNOWN_INSTANCE},
)
def clear_quarantine(request: Request, principal: Operator, instance_id: InstanceId) -> JSONResponse:
    """End the instance's quarantine (the keeper acts on it again); the record names the token."""
    return _json(fleet_of(request).release_quarantine(instance_id, principal.name).to_dict())


@router.get(
    "/instances/{instance_id}/history",
    response_model=RecordPage,
    tags=["history"],
    responses=_UNKNOWN_INSTANCE,
)
def get_history(
    request: Request,
    principal: Reader,
    instance_id: InstanceId,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    before: Annotated[int | None, Query(ge=1, le=MAX_ID)] = None,
) -> JSONResponse:
    """Return the instance's records, newest first; pass ``next`` as ``before`` for the older page."""
    fleet = fleet_of(request)
    # One record more than the page: whether an older page exists, so a full last page ends in null.
    records = fleet.history(instance_id, limit=limit + 1, before=before)
    if not records:
        fleet.instance(instance_id)  # an unknown instance is a 404, not an empty page
    page = records[:limit]
    following = page[-1].id if len(records) > limit else None
    return _json({"items": [record.to_dict() for record in page], "next": following})


def _notify(request: Request, event: str, action: Action) -> None:
    # The metrics (if installed) count what the API was asked for.
    hook: Callable[[str, Action], None] | None = getattr(request.app.state, "api_hook", None)
    if hook is not None:
        hook(event, action)
