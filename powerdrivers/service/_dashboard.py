"""The dashboard: server-rendered pages over the fleet, live through the API's event stream.

``install_dashboard(app)`` adds the pages (``/``, ``/instances/{id}``, ``/login``, ``/logout``)
and the static files. Pages read ``app.state.fleet`` directly; every change goes through the
``/v1`` API by ``fetch()`` from the page, authenticated by the cookie ``/login`` sets, so the
API's checks are the only ones. Operation buttons and the policy selector are rendered for
operator tokens only, never merely hidden.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from powerdrivers import PowerState
from powerdrivers.keeper import (
    HistoryRecord,
    InstanceView,
    KeeperError,
    Policy,
    RecordKind,
    StoreError,
    UnknownInstance,
)
from powerdrivers.service._auth import COOKIE_NAME, Principal, authenticate, principal_for_token
from powerdrivers.service._config import Role
from powerdrivers.service._dashboard_timeline import DEFAULT_PERIOD, PERIODS, build_timeline
from powerdrivers.service._dashboard_vcpu import VcpuPlots, build_vcpu_plots

if TYPE_CHECKING:
    from powerdrivers.service._api import ServiceFleet as Fleet
    from powerdrivers.service._api_vcpu import VcpuFleet

_LOG = logging.getLogger("powerdrivers.service")
_HERE: Final = Path(__file__).parent
_TEMPLATES: Final = Jinja2Templates(directory=_HERE / "templates")

#: The operations a page offers, in the order of its buttons.
OPERATIONS: Final = (
    "start",
    "shutdown",
    "power_off",
    "reboot",
    "hard_reboot",
    "pause",
    "unpause",
    "suspend",
    "resume",
)
#: Rows the fleet table shows at most (pages of the store's keyset listing).
MAX_ROWS: Final = 20_000
_PAGE: Final = 1000
#: History records an instance page reads at most to draw a timeline.
MAX_RECORDS: Final = 10_000
#: VCPU samples an instance page reads at most to draw its VCPU plots.
MAX_VCPU_SAMPLES: Final = 50_000
#: The shortest time between two refreshes of an instance page for its VCPU plots (seconds).
MIN_VCPU_REFRESH_S: Final = 2.0
#: Actions an instance page lists at most.
MAX_ACTIONS: Final = 50
#: A login form is a token and nothing else: anything longer is refused unread.
MAX_LOGIN_BODY: Final = 4096

# The pages run no inline script or style: everything comes from /static.
_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def install_dashboard(app: FastAPI) -> None:
    """Add the dashboard's pages and static files to ``app`` (whose ``state.fleet`` is set)."""
    app.mount("/static", StaticFiles(directory=_HERE / "static"), name="static")
    app.add_api_route("/", fleet_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/login", login_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/login", login, methods=["POST"], include_in_schema=False)
    app.add_api_route("/logout", logout, methods=["GET", "POST"], include_in_schema=False)
    app.add_api_route("/instances/{instance_id}", instance_page, methods=["GET"], include_in_schema=False)
    app.add_api_route(
        "/instances/{instance_id}/parts", instance_parts, methods=["GET"], include_in_schema=False
    )


def _fleet(request: Request) -> Fleet:
    fleet: Fleet = request.app.state.fleet
    return fleet


def _render(
    request: Request, template: str, context: Mapping[str, Any], status_code: int = 200
) -> HTMLResponse:
    response = _TEMPLATES.TemplateResponse(request, template, dict(context), status_code=status_code)
    response.headers.update(_HEADERS)
    return response


def _problem(request: Request, principal: Principal | None, status: int, message: str) -> HTMLResponse:
    context = {"principal": principal, "status": status, "message": message, "title": f"Error {status}"}
    return _render(request, "error.html", context, status_code=status)


def _to_login() -> RedirectResponse:
    return RedirectResponse("/login", status_code=303, headers=_HEADERS)


def _all_instances(fleet: Fleet) -> tuple[list[InstanceView], bool]:
    """Every instance (up to ``MAX_ROWS``) and whether there were more."""
    rows: list[InstanceView] = []
    cursor: str | None = None
    while True:
        page, cursor = fleet.instances(after=cursor, limit=_PAGE)
        rows.extend(page)
        if cursor is None:
            return rows, False
        if len(rows) >= MAX_ROWS:
            return rows[:MAX_ROWS], True


def fleet_page(request: Request) -> Response:
    """``GET /``: the fleet as a filterable table that updates itself from the event stream."""
    principal = authenticate(request)
    if principal is None:
        return _to_login()
    fleet = _fleet(request)
    try:
        rows, truncated = _all_instances(fleet)
        hosts = sorted({h.name for h in fleet.hosts()} | {row.host for row in rows})
    except StoreError as error:
        return _store_problem(request, principal, error)
    context = {
        "title": "Fleet",
        "principal": principal,
        "rows": rows,
        "truncated": truncated,
        "hosts": hosts,
        "states": [s.value for s in PowerState],
        "policies": [p.value for p in Policy],
        "now": datetime.now(UTC),
    }
    return _render(request, "fleet.html", context)


def _history(fleet: Fleet, instance_id: str, since: datetime) -> list[HistoryRecord]:
    """Return the instance's records back to the first one at or before ``since`` (newest first)."""
    records: list[HistoryRecord] = []
    before: int | None = None
    while len(records) < MAX_RECORDS:
        page = fleet.history(instance_id, limit=500, before=before)
        records.extend(page)
        if len(page) < 500 or page[-1].time <= since:
            break
        before = page[-1].id
    return records


def _instance_context(
    request: Request, principal: Principal, instance_id: str, period: str
) -> dict[str, Any]:
    """Return what the instance page and its live parts show. Raises the fleet's typed errors."""
    fleet = _fleet(request)
    view = fleet.instance(instance_id)
    now = datetime.now(UTC)
    records = _history(fleet, instance_id, now - PERIODS[period])
    actions = [r for r in records if r.kind is RecordKind.ACTION][:MAX_ACTIONS]
    vcpu = _vcpu_plots(request, instance_id, now, period)
    return {
        "title": view.name,
        "principal": principal,
        "operator": principal.role is Role.OPERATOR,
        "instance": view,
        "period": period,
        "periods": list(PERIODS),
        "timeline": build_timeline(records, now, PERIODS[period], _ongoing(view)),
        "vcpu": vcpu,
        "vcpu_refresh_ms": round(max(vcpu.interval, MIN_VCPU_REFRESH_S) * 1000) if vcpu.interval > 0 else 0,
        "actions": actions,
        "operations": OPERATIONS,
        "policies": [p.value for p in Policy],
        "now": now,
    }


def _vcpu_plots(request: Request, instance_id: str, now: datetime, period: str) -> VcpuPlots:
    """Return the instance's VCPU plots over the period (the timeline's axis)."""
    fleet: VcpuFleet = request.app.state.fleet
    interval = fleet.config.keeper.vcpu_sample_interval
    since = now - PERIODS[period]
    samples = fleet.vcpu_samples(instance_id, since, now, MAX_VCPU_SAMPLES)
    complete = len(samples) < MAX_VCPU_SAMPLES
    held = samples[-1].at - samples[0].at if samples else timedelta(0)
    if not complete and held > timedelta(0):
        # The read holds the period's oldest samples: the newest matter more, so read as long
        # a stretch as the limit held again, ending now.
        samples = fleet.vcpu_samples(instance_id, now - held, now, MAX_VCPU_SAMPLES)
    return build_vcpu_plots(samples, now, PERIODS[period], interval, complete)


def _ongoing(view: InstanceView) -> tuple[str, datetime] | None:
    """Return what the instance is doing now and since when: its open action, else its transition."""
    action = view.in_flight
    if action is not None:
        return f"{action.operation} {action.status.value}", action.started_at or action.requested_at
    if view.transition is not None:
        return view.transition.value, view.observed_at
    return None


def _instance_response(request: Request, instance_id: str, period: str, template: str) -> Response:
    principal = authenticate(request)
    if principal is None:
        return _to_login()
    if period not in PERIODS:
        choices = ", ".join(PERIODS)
        return _problem(request, principal, 400, f"period must be one of {choices}, not {period[:40]!r}")
    try:
        if any(character < " " or character == "\x7f" for character in instance_id):
            raise UnknownInstance(instance_id)  # no hypervisor names one so (PostgreSQL could not keep it)
        context = _instance_context(request, principal, instance_id, period)
    except UnknownInstance:
        return _problem(request, principal, 404, f"no instance has the id {instance_id[:80]!r}")
    except StoreError as error:
        return _store_problem(request, principal, error)
    except KeeperError as error:
        return _problem(request, principal, 400, str(error))
    return _render(request, template, context)


def _store_problem(request: Request, principal: Principal, error: StoreError) -> Response:
    # The store's message names the database (user, host, port, name): for the log only.
    _LOG.warning("dashboard: a page met a store error: %s", error)
    return _problem(request, principal, 503, "The store cannot be reached now; try again in a moment.")


def instance_page(request: Request, instance_id: str, period: str = DEFAULT_PERIOD) -> Response:
    """``GET /instances/{id}``: the timeline, the actions, the policy and (operators) the buttons."""
    return _instance_response(request, instance_id, period, "instance.html")


def instance_parts(request: Request, instance_id: str, period: str = DEFAULT_PERIOD) -> Response:
    """``GET /instances/{id}/parts``: the instance page's live parts, which its script swaps in."""
    return _instance_response(request, instance_id, period, "instance_parts.html")


def login_page(request: Request) -> Response:
    """``GET /login``: the form that takes a token."""
    return _render(request, "login.html", {"title": "Sign in", "principal": None, "error": None})


async def login(request: Request) -> Response:
    """``POST /login``: check the token and keep it in an HttpOnly, SameSite=Strict cookie."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return _login_error(request, 413, "That is far too long to be a token.")
    try:
        values = parse_qs(body.decode("utf-8"), max_num_fields=4)
    except (UnicodeDecodeError, ValueError):
        values = {}
    token = (values.get("token") or [""])[0].strip()
    principal = principal_for_token(request, token) if token else None
    if principal is None:
        return _login_error(request, 401, "That token is not valid: check it and try again.")
    response = RedirectResponse("/", status_code=303, headers=_HEADERS)
    response.set_cookie(
        COOKIE_NAME,
        token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )
    return response


def _login_error(request: Request, status: int, message: str) -> HTMLResponse:
    context = {"title": "Sign in", "principal": None, "error": message}
    return _render(request, "login.html", context, status_code=status)


def logout(request: Request) -> Response:
    """``/logout``: forget the cookie and go back to the form."""
    response = _to_login()
    response.delete_cookie(COOKIE_NAME, path="/", httponly=True, samesite="strict")
    return response
