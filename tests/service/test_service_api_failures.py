"""The API when things go wrong: each typed error's answer, an action in flight, the store gone, a bug."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest
from api_support import bearer, wait_for
from starlette.testclient import TestClient

from powerdrivers import (
    HypervisorConnectionError,
    InvalidOption,
    InvalidStateTransition,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers.keeper import (
    ActionInFlight,
    HostAlreadyKept,
    KeeperError,
    StoreError,
    StoreUnavailable,
    UnknownAction,
    UnknownInstance,
)
from powerdrivers.service._app import create_app
from powerdrivers.service._config import ServiceConfig
from powerdrivers.service._fleet import Fleet
from powerdrivers.service._http_errors import MAX_MESSAGE, api_error_of, error_body

if TYPE_CHECKING:
    from tests.postgres_cluster import PostgresCluster

ERROR_FIELDS = {"status", "code", "message", "field", "allowed_states"}


@pytest.fixture
def make_fleet() -> Iterator[Callable[[ServiceConfig], Fleet]]:
    started: list[Fleet] = []

    def make(config: ServiceConfig) -> Fleet:
        fleet = Fleet(config)
        fleet.start()
        started.append(fleet)
        return fleet

    yield make
    for fleet in started:
        fleet.stop()


def error_of(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert error["code"] == code, error
    return error


def test_a_second_action_while_one_runs_is_409(
    service_config_factory: Callable[..., ServiceConfig],
    make_fleet: Callable[[ServiceConfig], Fleet],
    service_tokens: dict[str, str],
) -> None:
    # The first instance's guest ignores a graceful shutdown: the action runs until its timeout.
    config = service_config_factory(hosts=1, host_options='uncooperative = "h1-vm-0"')
    operator = bearer(service_tokens["operator"])
    with TestClient(create_app(make_fleet(config)), raise_server_exceptions=False) as client:
        instance = next(
            item
            for item in client.get("/v1/instances", headers=operator).json()["items"]
            if item["name"] == "h1-vm-0"
        )
        path = f"/v1/instances/{instance['id']}/actions"
        first = client.post(path, headers=operator, json={"operation": "shutdown", "timeout": 2})
        assert first.status_code == 202, first.text
        error = error_of(
            client.post(path, headers=operator, json={"operation": "power_off"}), 409, "action_in_flight"
        )
        assert error["message"]
        ended = wait_for(
            lambda: (
                action
                if (action := client.get(f"/v1/actions/{first.json()['id']}", headers=operator).json())[
                    "status"
                ]
                not in ("pending", "running")
                else None
            ),
            "the slow shutdown to end",
        )
        assert ended["status"] in ("done", "failed")
        # Once it has ended, the instance takes a new action again.
        view = client.get(f"/v1/instances/{instance['id']}", headers=operator).json()
        assert view["in_flight"] is None
        operation = "start" if view["power_state"] == "shutoff" else "power_off"
        assert client.post(path, headers=operator, json={"operation": operation}).status_code == 202


def test_the_store_gone_is_503_and_its_return_heals(
    postgres: PostgresCluster,
    postgres_url: str,
    service_config_factory: Callable[..., ServiceConfig],
    make_fleet: Callable[[ServiceConfig], Fleet],
    service_tokens: dict[str, str],
) -> None:
    fleet = make_fleet(service_config_factory(hosts=1, store=postgres_url))
    operator = bearer(service_tokens["operator"])
    with TestClient(create_app(fleet), raise_server_exceptions=False) as client:
        instance_id = client.get("/v1/instances", headers=operator).json()["items"][0]["id"]
        assert client.get("/healthz").status_code == 200
        postgres.stop()
        try:
            health = error_of(client.get("/healthz"), 503, "store_unavailable")
            assert postgres.password not in health["message"]
            for method, path, body in (
                ("GET", "/v1/hosts", None),
                ("GET", "/v1/instances", None),
                ("GET", f"/v1/instances/{instance_id}", None),
                ("GET", f"/v1/instances/{instance_id}/history", None),
                ("GET", f"/v1/instances/{instance_id}/vcpu", None),
                ("PUT", f"/v1/instances/{instance_id}/policy", {"policy": "always"}),
                ("POST", f"/v1/instances/{instance_id}/actions", {"operation": "power_off"}),
                ("POST", f"/v1/instances/{instance_id}/quarantine/clear", None),
                ("GET", "/v1/actions/1", None),
            ):
                answer = client.request(method, path, headers=operator, json=body)
                assert answer.status_code == 503, (method, path, answer.text)
                assert answer.json()["error"]["code"] in ("store_unavailable", "store_error")
                assert postgres.password not in answer.text
            metrics = client.get("/metrics", headers=operator)
            assert metrics.status_code == 200
        finally:
            postgres.start()
        wait_for(lambda: client.get("/healthz").status_code == 200, "the store to answer again", 30.0)
        view = client.get(f"/v1/instances/{instance_id}", headers=operator)
        assert view.status_code == 200
        # Nothing was changed while the store was gone.
        assert view.json()["policy"] == "manual"
        assert view.json()["in_flight"] is None


def test_an_unexpected_exception_is_a_generic_500_logged_without_the_request(
    fleet: Fleet, service_tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(fleet)

    def broken() -> None:
        raise RuntimeError("a bug in an endpoint")

    app.add_api_route("/v1/broken", broken)
    token = service_tokens["operator"]
    with caplog.at_level(logging.ERROR), TestClient(app, raise_server_exceptions=False) as client:
        answer = client.get("/v1/broken", headers=bearer(token))
    error = error_of(answer, 500, "internal_error")
    assert "a bug" not in error["message"]
    assert "Traceback" not in answer.text
    logged = [record for record in caplog.records if record.name == "powerdrivers.service.http"]
    assert logged and "RuntimeError" in logged[0].getMessage()
    assert all(token not in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize(
    ("error", "status", "code", "field", "allowed"),
    [
        (
            InvalidStateTransition("i-1", "start", "running", allowed=["shutoff", "crashed"]),
            409,
            "invalid_transition",
            None,
            ["crashed", "shutoff"],
        ),
        (ActionInFlight("instance 'i-1' already has action 3 running"), 409, "action_in_flight", None, None),
        (HostAlreadyKept("lab-1", "pid 7 on box"), 409, "host_already_kept", None, None),
        (UnknownInstance("i-1"), 404, "not_found", None, None),
        (UnknownAction(12), 404, "not_found", None, None),
        (HypervisorConnectionError("lab-1 does not answer"), 503, "host_unreachable", None, None),
        (
            InvalidOption("timeout must be at most 3600 seconds, not 5000"),
            422,
            "invalid_option",
            "timeout",
            None,
        ),
        (InvalidOption("The keeper carries out start, not 'x'"), 422, "invalid_option", None, None),
        (UnsupportedOperation("fake", "suspend"), 422, "unsupported_operation", "operation", None),
        (KeeperError("refused for a reason of its own"), 400, "rejected", None, None),
    ],
)
def test_each_typed_error_has_its_status_code_and_details(
    error: PowerDriversError, status: int, code: str, field: str | None, allowed: list[str] | None
) -> None:
    body = error_body(api_error_of(error))["error"]
    assert body == {
        "status": status,
        "code": code,
        "message": str(error),
        "field": field,
        "allowed_states": allowed,
    }


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (StoreUnavailable, "store_unavailable", "the store cannot be reached now; try again later"),
        (StoreError, "store_error", "the store failed to answer; try again later"),
    ],
)
def test_a_store_error_answers_503_without_naming_the_database(
    error: type[StoreError], code: str, message: str, caplog: pytest.LogCaptureFixture
) -> None:
    detail = "keeper store postgresql+psycopg://keeper:***@db.internal:5432/fleet: cannot read a page"
    body = error_body(api_error_of(error(detail)))["error"]
    assert body == {"status": 503, "code": code, "message": message, "field": None, "allowed_states": None}
    assert detail in caplog.text  # the operator's log keeps what the client is not shown


def test_an_error_message_is_one_short_line() -> None:
    body = error_body(api_error_of(KeeperError("first line\nsecond line " + "x" * 1000)))["error"]
    assert "\n" not in body["message"]
    assert len(body["message"]) == MAX_MESSAGE
    assert body["message"].startswith("first line second line")


def test_a_value_error_below_the_models_is_422(fleet: Fleet, service_tokens: dict[str, str]) -> None:
    app = create_app(fleet)

    def refusing() -> None:
        raise ValueError("limit must be 1 to 1000")

    app.add_api_route("/v1/refusing", refusing)
    with TestClient(app, raise_server_exceptions=False) as client:
        error = error_of(
            client.get("/v1/refusing", headers=bearer(service_tokens["reader"])), 422, "invalid_input"
        )
    assert error["field"] == "limit"
    assert error["message"] == "limit must be 1 to 1000"
