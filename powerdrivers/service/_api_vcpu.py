"""``GET /v1/instances/{id}/vcpu``: an instance's VCPU samples over a period, as the keeper stored them.

Each sample is one VCPU's sampling window (``at`` is its end): the fractions of it spent
running, blocked (``halted`` within it, where measured) and waiting for a physical CPU (steal),
and the exit rates where measured (``null`` where the driver cannot measure them). The period is
``since`` (default an hour before ``until``) to ``until`` (default now), both ISO 8601 times
with a UTC offset, at most ``MAX_SPAN`` apart.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Final, Protocol

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import JSONResponse

from powerdrivers.keeper import InstanceView
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.service._api import InstanceId, Reader
from powerdrivers.service._http_errors import ApiError
from powerdrivers.service._schemas import ERROR_RESPONSES, ErrorOut, VcpuSamplePage

if TYPE_CHECKING:
    from powerdrivers.keeper import VcpuSample
    from powerdrivers.service._config import ServiceConfig

#: The longest period one request reads.
MAX_SPAN: Final = timedelta(days=31)
#: The period read when ``since`` is not given.
DEFAULT_SPAN: Final = timedelta(hours=1)
#: The samples one answer holds by default, and at most.
DEFAULT_LIMIT: Final = 10_000
MAX_LIMIT: Final = 50_000


class VcpuFleet(Protocol):
    """What this endpoint needs of the fleet (``powerdrivers.service._fleet.Fleet``)."""

    config: ServiceConfig

    def instance(self, instance_id: str) -> InstanceView:
        """One instance (``UnknownInstance`` else)."""

    def vcpu_samples(
        self, instance_id: str, since: datetime, until: datetime | None = None, limit: int = DEFAULT_LIMIT
    ) -> list[VcpuSample]:
        """Return the instance's samples whose window ends in (since, until], by (time, VCPU)."""


def _time(field: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ApiError(
            422, f"{field}: not an ISO 8601 time (such as 2026-12-03T10:00:00Z)", field=field
        ) from None
    if parsed.tzinfo is None:
        raise ApiError(422, f"{field}: give the time's UTC offset (Z or +HH:MM)", field=field)
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise ApiError(422, f"{field}: out of range in UTC", field=field) from None


def period_of(since_text: str | None, until_text: str | None, now: datetime) -> tuple[datetime, datetime]:
    """Return the checked (since, until) of a request; an ``ApiError`` (422) names the field at fault."""
    since, until = _time("since", since_text), _time("until", until_text)
    until = until or now
    if since is None:
        if until < datetime.min.replace(tzinfo=UTC) + DEFAULT_SPAN:
            raise ApiError(422, "until: too early for a sample", field="until")
        since = until - DEFAULT_SPAN
    if until <= since:
        raise ApiError(422, "until: must be later than since", field="until")
    if until - since > MAX_SPAN:
        raise ApiError(422, f"since: the period is at most {MAX_SPAN.days} days long", field="since")
    return since, until


router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


def _time_query() -> Any:
    # One per parameter: a framework version may keep per-parameter state on it.
    return Query(
        min_length=1,
        max_length=64,
        description="An ISO 8601 time with a UTC offset, such as ``2026-12-03T10:00:00Z``.",
    )


@router.get(
    "/instances/{instance_id}/vcpu",
    response_model=VcpuSamplePage,
    tags=["vcpu"],
    responses={404: {"model": ErrorOut, "description": "Unknown instance."}},
)
def get_vcpu_samples(
    request: Request,
    principal: Reader,
    instance_id: InstanceId,
    since: Annotated[str | None, _time_query()] = None,
    until: Annotated[str | None, _time_query()] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = DEFAULT_LIMIT,
) -> JSONResponse:
    """Return the instance's VCPU samples whose window ends after ``since`` and by ``until``, oldest first.

    ``since`` defaults to an hour before ``until``, ``until`` to now; the period is at most 31
    days. At most ``limit`` samples, ending with a whole round (every VCPU at one time); when
    more remain, ``next`` is the ``since`` of the next page (else ``null``); a ``limit`` too
    small for one whole round is a 422.
    ``interval`` is the keeper's sample interval (0: sampling is off).
    """
    fleet: VcpuFleet = request.app.state.fleet
    first, last = period_of(since, until, utcnow())
    fleet.instance(instance_id)  # an unknown instance is a 404, not an empty list
    # One sample more than the answer: whether its last round is whole.
    samples = fleet.vcpu_samples(instance_id, first, last, limit + 1)
    following: str | None = None
    if len(samples) > limit:
        after = samples[limit]
        samples = samples[:limit]
        if samples[0].at == after.at:
            # Not even one whole round fits: a page cut inside a round would lose its other VCPUs.
            raise ApiError(
                422,
                f"limit: {limit} samples do not hold one whole sampling round of this instance's VCPUs",
                field="limit",
            )
        if after.at == samples[-1].at:
            # A page ends with a whole round, so the next one can start after its time.
            samples = [sample for sample in samples if sample.at != after.at]
        following = samples[-1].at.isoformat()
    return JSONResponse(
        {
            "instance_id": instance_id,
            "interval": fleet.config.keeper.vcpu_sample_interval,
            "items": [sample.to_dict() for sample in samples],
            "next": following,
        }
    )
