"""The /v1 API over a real fleet (fake hosts, SQLite): every endpoint's answer and its contract fields."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from api_support import WAIT_S, first_instance, wait_for
from starlette.testclient import TestClient

from powerdrivers import OPERATION_TABLE, Operation
from powerdrivers.keeper._operations import REQUESTABLE
from powerdrivers.service._schemas import RequestedOperation

INSTANCE_FIELDS = {
    "id",
    "name",
    "host",
    "power_state",
    "transition",
    "native_state",
    "native_reason",
    "policy",
    "stale",
    "quarantined",
    "backoff_until",
    "in_flight",
}
ACTION_FIELDS = {"id", "instance_id", "operation", "status", "outcome", "requested_by", "error"}
ERROR_FIELDS = {"status", "code", "message", "field", "allowed_states"}


def assert_error(answer: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_FIELDS
    assert body["error"]["status"] == status
    if code is not None:
        assert body["error"]["code"] == code
    assert "Traceback" not in answer.text
    error: dict[str, Any] = body["error"]
    return error


def wait_action(client: TestClient, headers: dict[str, str], action_id: int) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        action: dict[str, Any] = client.get(f"/v1/actions/{action_id}", headers=headers).json()
        return action if action["status"] not in ("pending", "running") else None

    result: dict[str, Any] = wait_for(ended, f"action {action_id} to end", WAIT_S)
    return result


def test_the_api_offers_every_requestable_operation_of_the_keeper() -> None:
    assert set(get_args(RequestedOperation)) == {operation.value for operation in REQUESTABLE}


def test_hosts_name_driver_redacted_uri_owner_and_reachability(
    client: TestClient, reader: dict[str, str]
) -> None:
    answer = client.get("/v1/hosts", headers=reader)
    assert answer.status_code == 200
    hosts = answer.json()["items"]
    assert [host["name"] for host in hosts] == ["host-1", "host-2"]
    for host in hosts:
        assert host["driver"] == "fake"
        assert host["uri"].startswith("fake://")
        assert host["reachable"] is True
        assert host["since"]
        assert host["owner"]


def test_instances_carry_the_contract_fields_and_filter(client: TestClient, reader: dict[str, str]) -> None:
    answer = client.get("/v1/instances", headers=reader)
    assert answer.status_code == 200
    body = answer.json()
    assert set(body) == {"items", "next"}
    assert body["next"] is None
    items = body["items"]
    assert len(items) == 8
    for item in items:
        assert set(item) >= INSTANCE_FIELDS
    assert [(item["host"], item["id"]) for item in items] == sorted(
        (item["host"], item["id"]) for item in items
    )

    on_host = client.get("/v1/instances", headers=reader, params={"host": "host-2"}).json()["items"]
    assert on_host and {item["host"] for item in on_host} == {"host-2"}
    running = client.get("/v1/instances", headers=reader, params={"power_state": "running"}).json()["items"]
    assert running and {item["power_state"] for item in running} == {"running"}
    assert len(running) == sum(item["power_state"] == "running" for item in items)
    manual = client.get("/v1/instances", headers=reader, params={"policy": "manual"}).json()["items"]
    assert len(manual) == 8
    assert client.get("/v1/instances", headers=reader, params={"policy": "always"}).json()["items"] == []


def test_instances_page_through_every_instance_once(client: TestClient, reader: dict[str, str]) -> None:
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3}
        if cursor is not None:
            params["cursor"] = cursor
        body = client.get("/v1/instances", headers=reader, params=params).json()
        assert len(body["items"]) <= 3
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next"]
        if cursor is None:
            break
    assert pages == 3
    assert len(seen) == len(set(seen)) == 8


def test_one_instance_is_its_listed_view(client: TestClient, reader: dict[str, str]) -> None:
    listed = first_instance(client, reader)
    answer = client.get(f"/v1/instances/{listed['id']}", headers=reader)
    assert answer.status_code == 200
    assert answer.json() == listed


def test_unknown_instance_and_action_are_404(client: TestClient, reader: dict[str, str]) -> None:
    error = assert_error(client.get("/v1/instances/no-such-instance", headers=reader), 404, "not_found")
    assert "no-such-instance" in error["message"]
    assert_error(client.get("/v1/actions/424242", headers=reader), 404, "not_found")
    assert_error(client.get("/v1/instances/no-such-instance/history", headers=reader), 404)


def test_a_policy_change_is_recorded_under_the_token_name(
    client: TestClient, operator: dict[str, str]
) -> None:
    instance = first_instance(client, operator, power_state="running")
    answer = client.put(f"/v1/instances/{instance['id']}/policy", headers=operator, json={"policy": "always"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["policy"] == "always"
    assert client.get(f"/v1/instances/{instance['id']}", headers=operator).json()["policy"] == "always"
    records = client.get(f"/v1/instances/{instance['id']}/history", headers=operator).json()["items"]
    policy_records = [record for record in records if record["kind"] == "policy"]
    assert policy_records and policy_records[0]["requested_by"] == "operator"


def test_an_action_is_accepted_then_done_by_the_keeper(client: TestClient, operator: dict[str, str]) -> None:
    instance = first_instance(client, operator, power_state="running")
    answer = client.post(
        f"/v1/instances/{instance['id']}/actions",
        headers=operator,
        json={"operation": "shutdown", "timeout": 5, "force": True},
    )
    assert answer.status_code == 202, answer.text
    action = answer.json()
    assert set(action) >= ACTION_FIELDS
    assert answer.headers["location"] == f"/v1/actions/{action['id']}"
    assert action["instance_id"] == instance["id"]
    assert action["operation"] == "shutdown"
    assert action["status"] in ("pending", "running")
    assert action["requested_by"] == "operator"
    assert action["options"] == {"timeout": 5.0, "force": True}

    ended = wait_action(client, operator, action["id"])
    assert ended["status"] == "done", ended
    assert ended["outcome"]
    assert ended["requested_by"] == "operator"
    assert ended["error"] is None
    view = wait_for(
        lambda: (
            body
            if (body := client.get(f"/v1/instances/{instance['id']}", headers=operator).json())["in_flight"]
            is None
            else None
        ),
        "the instance's view to show no action in flight",
    )
    assert view["power_state"] == "shutoff"
    records = client.get(f"/v1/instances/{instance['id']}/history", headers=operator).json()["items"]
    action_records = [record for record in records if record["kind"] == "action"]
    assert action_records[0]["operation"] == "shutdown"
    assert action_records[0]["requested_by"] == "operator"


@pytest.mark.parametrize("operation", ["start", "pause", "power_off"])
def test_an_operation_the_state_does_not_allow_is_409_with_the_allowed_states(
    client: TestClient, operator: dict[str, str], operation: str
) -> None:
    wrong_state = "running" if operation == "start" else "shutoff"
    instance = first_instance(client, operator, power_state=wrong_state)
    answer = client.post(
        f"/v1/instances/{instance['id']}/actions", headers=operator, json={"operation": operation}
    )
    error = assert_error(answer, 409, "invalid_transition")
    expected = sorted(state.value for state in OPERATION_TABLE[Operation(operation)].allowed_from)
    assert error["allowed_states"] == expected
    assert wrong_state in error["message"]
    assert client.get(f"/v1/instances/{instance['id']}", headers=operator).json()["in_flight"] is None


def test_clearing_a_quarantine_answers_the_instance(client: TestClient, operator: dict[str, str]) -> None:
    instance = first_instance(client, operator)
    answer = client.post(f"/v1/instances/{instance['id']}/quarantine/clear", headers=operator)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["id"] == instance["id"]
    assert body["quarantined"] is False
    assert body["failures"] == 0
    assert_error(client.post("/v1/instances/no-such-instance/quarantine/clear", headers=operator), 404)


def test_history_pages_back_with_next(client: TestClient, operator: dict[str, str]) -> None:
    # Policies that make the keeper do nothing to an instance that is off: no record appears meanwhile.
    instance = first_instance(client, operator, power_state="shutoff")
    for policy in ("halted", "manual", "halted", "manual"):
        assert client.put(
            f"/v1/instances/{instance['id']}/policy", headers=operator, json={"policy": policy}
        ).is_success
    whole = client.get(f"/v1/instances/{instance['id']}/history", headers=operator).json()
    assert whole["next"] is None
    ids = [record["id"] for record in whole["items"]]
    assert ids == sorted(ids, reverse=True)
    assert len(ids) >= 5

    paged: list[int] = []
    before: int | None = None
    while True:
        params: dict[str, Any] = {"limit": 2}
        if before is not None:
            params["before"] = before
        page = client.get(f"/v1/instances/{instance['id']}/history", headers=operator, params=params).json()
        paged += [record["id"] for record in page["items"]]
        before = page["next"]
        if before is None:
            break
        assert page["items"]  # a page with a next is never followed by an empty one
    assert paged == ids
    # A last page exactly full says so: its next is null, not the start of an empty page.
    exact = client.get(
        f"/v1/instances/{instance['id']}/history", headers=operator, params={"limit": len(ids)}
    ).json()
    assert [record["id"] for record in exact["items"]] == ids and exact["next"] is None


def test_healthz_needs_no_token(client: TestClient) -> None:
    answer = client.get("/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"status": "ok", "hosts": ["host-1", "host-2"]}


def test_the_openapi_document_describes_every_endpoint(client: TestClient) -> None:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    paths = answer.json()["paths"]
    for path, methods in {
        "/v1/hosts": {"get"},
        "/v1/instances": {"get"},
        "/v1/instances/{instance_id}": {"get"},
        "/v1/instances/{instance_id}/policy": {"put"},
        "/v1/instances/{instance_id}/actions": {"post"},
        "/v1/actions/{action_id}": {"get"},
        "/v1/instances/{instance_id}/quarantine/clear": {"post"},
        "/v1/instances/{instance_id}/history": {"get"},
        "/v1/instances/{instance_id}/vcpu": {"get"},
        "/v1/events": {"get"},
        "/healthz": {"get"},
        "/metrics": {"get"},
    }.items():
        assert set(paths[path]) == methods, path
    schemas = answer.json()["components"]["schemas"]
    assert set(schemas["InstanceOut"]["properties"]) >= INSTANCE_FIELDS
    assert set(schemas["ActionOut"]["properties"]) >= ACTION_FIELDS
    assert set(schemas["VcpuSamplePage"]["properties"]) == {"instance_id", "interval", "items", "next"}
    sample_fields = {"vcpu", "at", "running", "blocked", "waiting", "halted"}
    assert set(schemas["VcpuSampleOut"]["properties"]) >= sample_fields
    assert answer.json()["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert paths["/v1/hosts"]["get"]["security"] == [{"HTTPBearer": []}]
    assert "security" not in paths["/healthz"]["get"]
    assert client.get("/docs").status_code == 200


def test_unknown_routes_and_methods_answer_the_error_shape(
    client: TestClient, reader: dict[str, str]
) -> None:
    assert_error(client.get("/v1/no-such-thing", headers=reader), 404, "not_found")
    assert_error(client.delete("/v1/hosts", headers=reader), 405, "method_not_allowed")


def test_the_statuses_the_document_declares_are_the_ones_answered(
    client: TestClient, operator: dict[str, str]
) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    unknown = "no-such-instance"
    for path, method, body in (
        ("/v1/instances/{instance_id}", "get", None),
        ("/v1/instances/{instance_id}/policy", "put", {"policy": "always"}),
        ("/v1/instances/{instance_id}/actions", "post", {"operation": "start"}),
        ("/v1/instances/{instance_id}/quarantine/clear", "post", None),
        ("/v1/instances/{instance_id}/history", "get", None),
        ("/v1/instances/{instance_id}/vcpu", "get", None),
    ):
        assert "404" in paths[path][method]["responses"], path
        answer = client.request(method, path.format(instance_id=unknown), headers=operator, json=body)
        assert_error(answer, 404, "not_found")
    assert "404" in paths["/v1/actions/{action_id}"]["get"]["responses"]
    assert_error(client.get("/v1/actions/999999", headers=operator), 404, "not_found")
    for path, method in (
        ("/v1/instances/{instance_id}/policy", "put"),
        ("/v1/instances/{instance_id}/actions", "post"),
    ):
        responses = paths[path][method]["responses"]
        assert {"400", "413"} <= set(responses), path
        target = path.format(instance_id=unknown)
        headers = {**operator, "Content-Type": "application/json"}
        assert client.request(method, target, headers=headers, content=b"{not json").status_code == 400
        assert client.request(method, target, headers=headers, content=b" " * (65 * 1024)).status_code == 413
    assert "401" in paths["/metrics"]["get"]["responses"]
    assert_error(client.get("/metrics"), 401, "unauthorized")
