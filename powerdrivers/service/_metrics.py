"""``GET /metrics``: the service in the Prometheus text format, on the app's own registry.

Each app has its own ``CollectorRegistry`` (never the process-wide one), so two apps in one
process (tests, several fleets) do not mix their numbers. Labels are hosts, states, operations,
outcomes, HTTP methods, route templates and status codes: never a token or a password, and an
id only on the per-VCPU gauges (``_metrics_vcpu``), whose ``instance`` label is bounded by the
instances running now on the hosts this process keeps.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import APIRouter, FastAPI
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powerdrivers.keeper import Action
from powerdrivers.service._api import Reader, ServiceFleet
from powerdrivers.service._bus import ServiceEvent
from powerdrivers.service._metrics_vcpu import VcpuCollector
from powerdrivers.service._schemas import ErrorOut

#: Event lag buckets (seconds): the target is 100 ms from the record to every stream.
LAG_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Request latency buckets (seconds).
LATENCY_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Resync duration buckets (seconds).
SYNC_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class FleetCollector(Collector):
    """Instances per host and power state, and hosts owned and reachable, read at each scrape."""

    def __init__(self, fleet: ServiceFleet) -> None:
        self._fleet = fleet

    def describe(self) -> Iterator[Metric]:
        """Yield the gauges without samples (registering the collector reads nothing)."""
        yield from _fleet_families()

    def collect(self) -> Iterator[Metric]:
        """Yield the gauges (nothing when the store cannot be read now)."""
        instances, reachable, owned = _fleet_families()
        try:
            counts = self._fleet.store.instance_counts()
            hosts = self._fleet.hosts()
            owned_count = len(self._fleet.owned_hosts())
        except Exception:
            # A scrape while the store is down shows only the counters; /healthz says why.
            return
        for (host, state), count in sorted(counts.items()):
            instances.add_metric([host, state], count)
        for view in hosts:
            reachable.add_metric([view.name], 1.0 if view.reachable else 0.0)
        owned.add_metric([], owned_count)
        yield instances
        yield reachable
        yield owned


def _fleet_families() -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
    return (
        GaugeMetricFamily(
            "powerdrivers_instances",
            "Instances known to the fleet, by host and power state.",
            labels=["host", "power_state"],
        ),
        GaugeMetricFamily(
            "powerdrivers_host_reachable", "Whether the host answers (1) or not (0).", labels=["host"]
        ),
        GaugeMetricFamily("powerdrivers_hosts_owned", "Hosts this process keeps now."),
    )


class ServiceMetrics:
    """The app's registry and the metrics the API, the event bus and the fleet feed."""

    def __init__(self, fleet: ServiceFleet) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(FleetCollector(fleet))
        self.vcpu = VcpuCollector(fleet.config.keeper.vcpu_sample_interval, fleet.owned_hosts)
        self.registry.register(self.vcpu)
        self.actions_requested = Counter(
            "powerdrivers_actions_requested",
            "Actions requested through the API, by operation.",
            ["operation"],
            registry=self.registry,
        )
        self.actions_finished = Counter(
            "powerdrivers_actions_finished",
            "Actions ended (any process's), by operation and outcome (the status when none).",
            ["operation", "outcome"],
            registry=self.registry,
        )
        self.event_lag = Histogram(
            "powerdrivers_event_lag_seconds",
            "From a history record's time to its event on this process's bus.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.sync_duration = Histogram(
            "powerdrivers_sync_duration_seconds",
            "Full resyncs of a host this process keeps, by host.",
            ["host"],
            buckets=SYNC_BUCKETS,
            registry=self.registry,
        )
        self.request_latency = Histogram(
            "powerdrivers_http_request_duration_seconds",
            "API requests, by method, route template and status code.",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._removers: list[Callable[[], None]] = []
        bus = getattr(fleet, "bus", None)
        if bus is not None:
            self._removers.append(bus.add_listener(self.on_event))
        add_sync_listener = getattr(fleet, "add_sync_listener", None)
        if add_sync_listener is not None:
            remover = add_sync_listener(self.on_sync)
            if callable(remover):
                self._removers.append(remover)
        add_vcpu_listener = getattr(fleet, "add_vcpu_listener", None)
        if add_vcpu_listener is not None:
            self._removers.append(add_vcpu_listener(self.vcpu.on_round))

    def on_event(self, event: ServiceEvent) -> None:
        """Count an ended action and measure the lag of a record event (a bus listener)."""
        if event.type != "record":
            return
        data = event.data
        recorded = _parse_time(data.get("time"))
        if recorded is not None:
            self.event_lag.observe(max(0.0, (datetime.now(UTC) - recorded).total_seconds()))
        if data.get("kind") == "action":
            operation = str(data.get("operation") or "unknown")
            outcome = str(data.get("outcome") or "unknown")
            self.actions_finished.labels(operation, outcome).inc()

    def on_sync(self, host: str, seconds: float) -> None:
        """Record one full resync of ``host`` (a fleet listener)."""
        self.sync_duration.labels(host).observe(seconds)

    def on_api(self, event: str, action: Action) -> None:
        """Count what the API was asked for."""
        if event == "action_requested":
            self.actions_requested.labels(action.operation).inc()

    def close(self) -> None:
        """Stop listening to the bus and the fleet."""
        for remove in self._removers:
            remove()
        self._removers.clear()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


class RequestTimer:
    """Observe each HTTP request's latency under its route template (not its path: no ids)."""

    def __init__(self, app: ASGIApp, metrics: ServiceMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request until its response has started."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = 500
        observed = False

        async def timed(message: Message) -> None:
            nonlocal status, observed
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            # A stream (SSE) is timed to its start, not to its end hours later.
            if message["type"] == "http.response.body" and not observed:
                observed = True
                self._observe(scope, status, began)

        try:
            await self.app(scope, receive, timed)
        finally:
            if not observed:
                self._observe(scope, status, began)

    def _observe(self, scope: Scope, status: int, began: float) -> None:
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        self.metrics.request_latency.labels(scope.get("method", "?"), template, str(status)).observe(
            time.perf_counter() - began
        )


router = APIRouter()


@router.get(
    "/metrics",
    tags=["service"],
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text format."},
        401: {"model": ErrorOut, "description": "No token, or an unknown one."},
    },
)
def metrics(request: Request, principal: Reader) -> Response:
    """Return the service's metrics in the Prometheus text format; needs a reader's (or operator's) token."""
    service_metrics: ServiceMetrics = request.app.state.metrics
    return Response(generate_latest(service_metrics.registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI, fleet: ServiceFleet) -> ServiceMetrics:
    """Give ``app`` its registry, the request timer and ``/metrics``; return the metrics."""
    service_metrics = ServiceMetrics(fleet)
    app.state.metrics = service_metrics
    app.state.api_hook = service_metrics.on_api
    app.add_middleware(RequestTimer, metrics=service_metrics)
    app.include_router(router)
    return service_metrics
