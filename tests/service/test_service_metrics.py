"""GET /metrics: the Prometheus text of one app's own registry, fed by the API, the bus and the store."""

from __future__ import annotations

from typing import Any

import pytest
from api_support import first_instance, wait_for
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from powerdrivers.service._app import create_app
from powerdrivers.service._fleet import Fleet


def samples(
    client: TestClient, headers: dict[str, str]
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    answer = client.get("/metrics", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


def test_instances_are_counted_per_host_and_power_state(client: TestClient, reader: dict[str, str]) -> None:
    listed = client.get("/v1/instances", headers=reader).json()["items"]
    expected: dict[tuple[str, str], int] = {}
    for item in listed:
        key = (item["host"], item["power_state"])
        expected[key] = expected.get(key, 0) + 1
    found = samples(client, reader)
    for (host, state), count in expected.items():
        assert value(found, "powerdrivers_instances", host=host, power_state=state) == count
    assert value(found, "powerdrivers_host_reachable", host="host-1") == 1
    assert value(found, "powerdrivers_hosts_owned") == 2


def test_actions_requested_and_finished_and_event_lag(
    client: TestClient, operator: dict[str, str], reader: dict[str, str]
) -> None:
    instance = first_instance(client, operator, power_state="running")
    answer = client.post(
        f"/v1/instances/{instance['id']}/actions", headers=operator, json={"operation": "power_off"}
    )
    assert answer.status_code == 202, answer.text
    found = samples(client, reader)
    assert value(found, "powerdrivers_actions_requested_total", operation="power_off") == 1

    def finished() -> dict[Any, float] | None:
        current = samples(client, reader)
        ended = [key for key in current if key[0] == "powerdrivers_actions_finished_total"]
        return current if any(dict(labels).get("operation") == "power_off" for _, labels in ended) else None

    found = wait_for(finished, "the finished action to be counted")
    assert value(found, "powerdrivers_actions_finished_total", operation="power_off", outcome="done") == 1
    assert value(found, "powerdrivers_event_lag_seconds_count") >= 1
    assert value(found, "powerdrivers_event_lag_seconds_sum") >= 0


def test_each_full_resync_of_an_owned_host_is_timed(
    fleet: Fleet, client: TestClient, reader: dict[str, str]
) -> None:
    before = samples(client, reader)
    fleet.resync()
    after = samples(client, reader)
    for host in ("host-1", "host-2"):
        count = "powerdrivers_sync_duration_seconds_count"
        assert value(after, count, host=host) >= value(before, count, host=host) + 1
        assert value(after, "powerdrivers_sync_duration_seconds_sum", host=host) > 0


def test_a_failing_sync_listener_is_logged_and_the_others_still_hear(
    fleet: Fleet, caplog: pytest.LogCaptureFixture
) -> None:
    heard: list[str] = []

    def broken(host: str, seconds: float) -> None:
        raise RuntimeError("listener bug")

    remove_broken = fleet.add_sync_listener(broken)
    remove_heard = fleet.add_sync_listener(lambda host, seconds: heard.append(host))
    fleet.resync()
    assert sorted(set(heard)) == ["host-1", "host-2"]
    assert "a sync listener failed" in caplog.text
    remove_broken()
    remove_heard()
    heard.clear()
    fleet.resync()
    assert heard == []


def test_request_latency_is_labelled_by_route_template_never_by_id(
    client: TestClient, reader: dict[str, str]
) -> None:
    instance = first_instance(client, reader)
    client.get(f"/v1/instances/{instance['id']}", headers=reader)
    client.get("/v1/nowhere", headers=reader)
    found = samples(client, reader)
    routes = {
        dict(labels).get("route") for name, labels in found if name.startswith("powerdrivers_http_request")
    }
    assert "/v1/instances/{instance_id}" in routes
    assert "/v1/instances" in routes
    assert all(instance["id"] not in str(route) for route in routes)
    assert (
        value(
            found,
            "powerdrivers_http_request_duration_seconds_count",
            method="GET",
            route="/v1/instances/{instance_id}",
            status="200",
        )
        == 1
    )


def test_each_app_has_its_own_registry_and_no_secret_shows(
    fleet: Fleet, client: TestClient, reader: dict[str, str], service_tokens: dict[str, str]
) -> None:
    client.get("/v1/hosts", headers=reader)
    with TestClient(create_app(fleet)) as other:
        found = samples(other, reader)
        assert (
            value(
                found,
                "powerdrivers_http_request_duration_seconds_count",
                method="GET",
                route="/v1/hosts",
                status="200",
            )
            == 0
        )
    assert REGISTRY.get_sample_value("powerdrivers_actions_requested_total", {"operation": "start"}) is None
    text = client.get("/metrics", headers=reader).text
    for token in service_tokens.values():
        assert token not in text
