"""The service's web application: the ``/v1`` API, events, health, metrics and the dashboard.

``create_app(fleet)`` builds one FastAPI app over a started (or starting) fleet; ``powerdrivers
serve`` runs it on uvicorn, and tests drive it in-process. The OpenAPI document is at
``/openapi.json`` (browsable at ``/docs``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from powerdrivers import __version__
from powerdrivers.service import _api, _api_vcpu, _sse
from powerdrivers.service._api import ServiceFleet, fleet_of
from powerdrivers.service._http_errors import ApiError, error_response, install_error_handlers
from powerdrivers.service._metrics import install_metrics
from powerdrivers.service._schemas import ErrorOut, Health

_DESCRIPTION = (
    "The power of a fleet of hypervisor hosts, kept by powerdrivers' keeper. Every endpoint but "
    "`/healthz` needs `Authorization: Bearer <token>`; changes need an operator's token. Errors "
    'are `{"error": {"status", "code", "message", "field", "allowed_states"}}`.'
)


def create_app(fleet: ServiceFleet) -> FastAPI:
    """Return the service's app serving ``fleet`` (kept in ``app.state.fleet``)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        _sse.close_streams(app)
        app.state.metrics.close()

    app = FastAPI(
        title="powerdrivers service",
        version=__version__,
        description=_DESCRIPTION,
        docs_url="/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.fleet = fleet
    install_error_handlers(app)
    app.include_router(_api.router)
    app.include_router(_api_vcpu.router)
    app.include_router(_sse.router)
    app.add_api_route(
        "/healthz",
        healthz,
        methods=["GET"],
        response_model=Health,
        tags=["service"],
        responses={503: {"model": ErrorOut, "description": "The store cannot be reached now."}},
    )
    install_metrics(app, fleet)

    from powerdrivers.service._dashboard import install_dashboard

    install_dashboard(app)
    return app


def healthz(request: Request) -> JSONResponse:
    """Whether this process can serve: 200 while the store answers, else 503. Needs no token."""
    fleet = fleet_of(request)
    if not fleet.available():
        return error_response(ApiError(503, "the store cannot be reached now", code="store_unavailable"))
    return JSONResponse({"status": "ok", "hosts": fleet.owned_hosts()})
