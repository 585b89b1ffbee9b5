"""Bad input on every endpoint: types, ranges, unknown fields, odd ids, huge and malformed bodies.

Each answer is the one error JSON shape naming the field, never a 500 or a traceback, and
nothing is changed by a refused request.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from api_support import first_instance
from starlette.testclient import TestClient

from powerdrivers.service._http_errors import MAX_BODY_BYTES

ERROR_FIELDS = {"status", "code", "message", "field", "allowed_states"}


@pytest.fixture
def instance_id(client: TestClient, operator: dict[str, str]) -> str:
    found: str = first_instance(client, operator, power_state="running")["id"]
    return found


def refused(answer: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == ERROR_FIELDS
    assert error["status"] == status
    assert "Traceback" not in error["message"]
    assert "\n" not in error["message"]
    assert len(error["message"]) <= 300
    if field is not None:
        assert error["field"] == field, error
        assert field in error["message"], error
    return error


def unchanged(client: TestClient, headers: dict[str, str], instance_id: str) -> Any:
    view = client.get(f"/v1/instances/{instance_id}", headers=headers).json()
    history = client.get(f"/v1/instances/{instance_id}/history", headers=headers).json()
    return view, history


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"policy": "sometimes"}, "policy"),
        ({"policy": 3}, "policy"),
        ({"policy": None}, "policy"),
        ({}, "policy"),
        ({"policy": "always", "polcy": "always"}, "polcy"),
        ([], None),
        ("always", None),
    ],
)
def test_a_bad_policy_is_422_naming_the_field(
    client: TestClient, operator: dict[str, str], instance_id: str, body: Any, field: str | None
) -> None:
    before = unchanged(client, operator, instance_id)
    refused(client.put(f"/v1/instances/{instance_id}/policy", headers=operator, json=body), 422, field)
    assert unchanged(client, operator, instance_id) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"operation": "explode"}, "operation"),
        ({"operation": "spawn"}, "operation"),
        ({"operation": "delete"}, "operation"),
        ({"operation": 7}, "operation"),
        ({}, "operation"),
        ({"operation": "shutdown", "timeout": 0}, "timeout"),
        ({"operation": "shutdown", "timeout": -1}, "timeout"),
        ({"operation": "shutdown", "timeout": 3601}, "timeout"),
        ({"operation": "shutdown", "timeout": 1e308}, "timeout"),
        ({"operation": "shutdown", "timeout": "5"}, "timeout"),
        ({"operation": "shutdown", "timeout": True}, "timeout"),
        ({"operation": "shutdown", "force": "yes"}, "force"),
        ({"operation": "shutdown", "force": 1}, "force"),
        ({"operation": "shutdown", "hard": True}, "hard"),
        ({"operation": "start", "timeout": 5}, "timeout"),
        ({"operation": "power_off", "force": True}, "force"),
        ({"operation": "pause", "timeout": 5, "force": True}, "force"),
    ],
)
def test_a_bad_action_request_is_422_naming_the_field(
    client: TestClient, operator: dict[str, str], instance_id: str, body: Any, field: str
) -> None:
    before = unchanged(client, operator, instance_id)
    refused(client.post(f"/v1/instances/{instance_id}/actions", headers=operator, json=body), 422, field)
    assert unchanged(client, operator, instance_id) == before


@pytest.mark.parametrize(
    "raw", [b'{"operation": "shutdown", "timeout": NaN}', b'{"operation": "shutdown", "timeout": Infinity}']
)
def test_a_number_that_is_not_finite_is_refused(
    client: TestClient, operator: dict[str, str], instance_id: str, raw: bytes
) -> None:
    headers = {**operator, "Content-Type": "application/json"}
    refused(client.post(f"/v1/instances/{instance_id}/actions", headers=headers, content=raw), 422, "timeout")


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"policy": "always"',
        b"\xff\xfe",
        b"policy=always",
        b"[" * 30_000,
        b'{"policy": "always", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"policy": "always", "long": 1' + b"0" * 5000 + b"}",
    ],
)
def test_a_malformed_body_is_a_json_error(
    client: TestClient, operator: dict[str, str], instance_id: str, raw: bytes
) -> None:
    headers = {**operator, "Content-Type": "application/json"}
    before = unchanged(client, operator, instance_id)
    answer = client.put(f"/v1/instances/{instance_id}/policy", headers=headers, content=raw)
    assert answer.status_code in (400, 422), answer.text
    refused(answer, answer.status_code, "body")
    assert unchanged(client, operator, instance_id) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_is_refused(
    client: TestClient, operator: dict[str, str], instance_id: str, content_type: str | None
) -> None:
    headers = {**operator, **({"Content-Type": content_type} if content_type else {})}
    answer = client.put(
        f"/v1/instances/{instance_id}/policy", headers=headers, content=b'{"policy": "always"}'
    )
    refused(answer, 422, "body")


def test_a_huge_body_is_413_whether_its_length_is_declared_or_not(
    client: TestClient, operator: dict[str, str], instance_id: str
) -> None:
    huge = {"operation": "start", "padding": "x" * (MAX_BODY_BYTES + 1)}
    before = unchanged(client, operator, instance_id)
    refused(client.post(f"/v1/instances/{instance_id}/actions", headers=operator, json=huge), 413)

    def chunks() -> Iterator[bytes]:
        yield b'{"policy": "always", "padding": "'
        for _ in range(100):
            yield b"x" * 1024
        yield b'"}'

    headers = {**operator, "Content-Type": "application/json"}
    answer = client.put(f"/v1/instances/{instance_id}/policy", headers=headers, content=chunks())
    refused(answer, 413)
    assert unchanged(client, operator, instance_id) == before


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"limit": 10**30}, "limit"),
        ({"power_state": "warm"}, "power_state"),
        ({"policy": "often"}, "policy"),
        ({"host": ""}, "host"),
        ({"host": "h" * 300}, "host"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        ({"cursor": "c" * 2000}, "cursor"),
    ],
)
def test_bad_listing_parameters_are_422_naming_them(
    client: TestClient, operator: dict[str, str], params: dict[str, Any], field: str
) -> None:
    refused(client.get("/v1/instances", headers=operator, params=params), 422, field)


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 5000}, "limit"),
        ({"before": 0}, "before"),
        ({"before": "latest"}, "before"),
        ({"before": 2**63}, "before"),
    ],
)
def test_bad_history_parameters_are_422_naming_them(
    client: TestClient, operator: dict[str, str], instance_id: str, params: dict[str, Any], field: str
) -> None:
    refused(client.get(f"/v1/instances/{instance_id}/history", headers=operator, params=params), 422, field)


@pytest.mark.parametrize("action_id", ["abc", "0", "-1", "1.5", str(2**64), "1e3"])
def test_a_bad_action_id_is_422(client: TestClient, operator: dict[str, str], action_id: str) -> None:
    refused(client.get(f"/v1/actions/{action_id}", headers=operator), 422, "action_id")


@pytest.mark.parametrize(
    "odd_id",
    [
        "i" * 1000,
        "%00",
        "abc%0d%0aSet-Cookie:x=1",
        "%7f",
        "..%2F..%2Fetc%2Fpasswd",
        "%2e%2e",
        "%E2%80%AE%F0%9F%92%A5",
        "%ff",
        "'; DROP TABLE instances; --",
    ],
)
def test_an_odd_instance_id_is_404_or_422_on_every_instance_endpoint(
    client: TestClient, operator: dict[str, str], odd_id: str
) -> None:
    for method, suffix, body in (
        ("GET", "", None),
        ("GET", "/history", None),
        ("GET", "/vcpu", None),
        ("PUT", "/policy", {"policy": "manual"}),
        ("POST", "/actions", {"operation": "start"}),
        ("POST", "/quarantine/clear", None),
    ):
        answer = client.request(method, f"/v1/instances/{odd_id}{suffix}", headers=operator, json=body)
        assert answer.status_code in (404, 405, 422), (method, suffix, answer.status_code, answer.text)
        refused(answer, answer.status_code)
        assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("last_id", ["abc", "-1", "1.5", "9" * 30])
def test_a_bad_last_event_id_is_422(client: TestClient, operator: dict[str, str], last_id: str) -> None:
    refused(client.get("/v1/events", headers={**operator, "Last-Event-ID": last_id}), 422, "Last-Event-ID")
