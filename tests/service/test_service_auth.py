"""Auth on every endpoint, driven by the app's own route list so a new endpoint cannot be missed."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from api_support import api_endpoints, bearer, concrete_path, first_instance
from fastapi import FastAPI
from starlette.testclient import TestClient

from powerdrivers.service._auth import COOKIE_NAME, DASHBOARD_HEADER

#: Endpoints anyone may call.
OPEN = {("GET", "/healthz")}
#: A valid body for each endpoint that takes one.
BODIES: dict[str, dict[str, Any]] = {
    "/v1/instances/{instance_id}/policy": {"policy": "manual"},
    "/v1/instances/{instance_id}/actions": {"operation": "start"},
}
#: Headers making an authorized call end before it streams (the event stream answers 422).
STOPPERS: dict[str, dict[str, str]] = {"/v1/events": {"Last-Event-ID": "not-a-number"}}


def endpoints(app: FastAPI) -> list[tuple[str, str]]:
    found = api_endpoints(app)
    assert len(found) >= 11
    return found


def call(client: TestClient, method: str, path: str, headers: dict[str, str]) -> Any:
    return client.request(
        method,
        concrete_path(path),
        headers={**STOPPERS.get(path, {}), **headers},
        json=BODIES.get(path),
    )


def test_every_endpoint_but_healthz_needs_a_token(client: TestClient, app: FastAPI) -> None:
    for method, path in endpoints(app):
        answer = call(client, method, path, {})
        if (method, path) in OPEN:
            assert answer.status_code == 200, (method, path)
            continue
        assert answer.status_code == 401, (method, path, answer.text)
        assert answer.headers["www-authenticate"].startswith("Bearer"), (method, path)
        assert answer.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    "authorization", ["Bearer wrong-token", "Basic b3BzOnNlY3JldA==", "Bearer ", "Bearer " + "x" * 5000]
)
def test_an_unknown_token_or_scheme_is_401(client: TestClient, app: FastAPI, authorization: str) -> None:
    for method, path in endpoints(app):
        if (method, path) in OPEN:
            continue
        answer = call(client, method, path, {"Authorization": authorization})
        assert answer.status_code == 401, (method, path)
        assert answer.json()["error"]["status"] == 401


def test_a_reader_reads_but_changes_nothing(
    client: TestClient, app: FastAPI, service_tokens: dict[str, str]
) -> None:
    for method, path in endpoints(app):
        answer = call(client, method, path, bearer(service_tokens["reader"]))
        if method == "GET":
            assert answer.status_code not in (401, 403), (method, path, answer.text)
        else:
            assert answer.status_code == 403, (method, path, answer.text)
            error = answer.json()["error"]
            assert error["code"] == "forbidden"
            assert "reader" in error["message"]


def test_an_operator_may_call_everything(
    client: TestClient, app: FastAPI, service_tokens: dict[str, str]
) -> None:
    for method, path in endpoints(app):
        answer = call(client, method, path, bearer(service_tokens["operator"]))
        assert answer.status_code not in (401, 403), (method, path, answer.text)
        # The ids are unknown: the call got past auth to the fleet, which changed nothing.
        if "{instance_id}" in path or "{action_id}" in path:
            assert answer.status_code == 404, (method, path, answer.text)


def test_the_dashboard_cookie_reads_and_changes_only_with_its_header(
    client: TestClient, service_tokens: dict[str, str]
) -> None:
    client.cookies.set(COOKIE_NAME, service_tokens["operator"])
    assert client.get("/v1/hosts").status_code == 200
    instance = first_instance(client, {})
    path = f"/v1/instances/{instance['id']}/policy"
    refused = client.put(path, json={"policy": "manual"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "csrf"
    assert client.put(path, json={"policy": "manual"}, headers={DASHBOARD_HEADER: "1"}).status_code == 200
    client.cookies.set(COOKIE_NAME, "not-a-token")
    assert client.get("/v1/hosts").status_code == 401


def test_a_bearer_token_wins_over_the_cookie(client: TestClient, service_tokens: dict[str, str]) -> None:
    client.cookies.set(COOKIE_NAME, service_tokens["operator"])
    answer = client.put(
        "/v1/instances/x/policy", json={"policy": "manual"}, headers=bearer(service_tokens["reader"])
    )
    assert answer.status_code == 403
    assert answer.json()["error"]["code"] == "forbidden"


def test_tokens_never_reach_logs_or_answers(
    client: TestClient, app: FastAPI, service_tokens: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answers: list[str] = []
    for token in (*service_tokens.values(), "a-wrong-token-value"):
        for method, path in endpoints(app):
            answers.append(call(client, method, path, bearer(token)).text)
    answers.append(client.get("/metrics", headers=bearer(service_tokens["reader"])).text)
    logged = "\n".join(record.getMessage() + str(record.args) for record in caplog.records)
    for token in (*service_tokens.values(), "a-wrong-token-value"):
        assert token not in logged
        assert all(token not in text for text in answers)
