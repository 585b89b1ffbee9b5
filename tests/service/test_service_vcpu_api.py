"""VCPU samples through the service: ``GET /v1/instances/{id}/vcpu`` and the ``/metrics`` gauges.

A real fleet on fake hosts samples every 0.1 s; each test waits for the samples it then reads.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from api_support import bearer, first_instance, wait_for
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from powerdrivers import InstanceSpec, load_driver
from powerdrivers.keeper import VcpuSample
from powerdrivers.service._app import create_app
from powerdrivers.service._config import ServiceConfig
from powerdrivers.service._fleet import Fleet
from powerdrivers.service._metrics_vcpu import VcpuCollector

#: Sampling every 0.1 s, kept 10 minutes (6,000 samples per VCPU: within the keeper's bound).
SAMPLED = "[keeper]\nvcpu_sample_interval = 0.1\nvcpu_retention = 600\n"
SAMPLE_KEYS = {
    "instance_id",
    "host",
    "vcpu",
    "at",
    "window_s",
    "running",
    "blocked",
    "waiting",
    "halted",
    "halt_exits",
    "io_exits",
    "mmio_exits",
}
VCPU_GAUGES = {
    "powerdrivers_vcpu_running_ratio",
    "powerdrivers_vcpu_blocked_ratio",
    "powerdrivers_vcpu_halted_ratio",
    "powerdrivers_vcpu_waiting_ratio",
    "powerdrivers_vcpu_exits_per_second",
}


@pytest.fixture
def service_config(service_config_factory: Any) -> ServiceConfig:
    """One fake host sampled every 0.1 s, with a running instance of two VCPUs named ``wide``."""
    config: ServiceConfig = service_config_factory(hosts=1, extra=SAMPLED)
    with load_driver("fake", config.hosts[0].uri) as driver:
        driver.spawn(InstanceSpec(name="wide", vcpus=2))
    return config


@pytest.fixture
def wide(client: TestClient, reader: dict[str, str]) -> str:
    """The id of the running instance with two VCPUs."""
    listing = client.get("/v1/instances", headers=reader).json()["items"]
    found: str = next(item["id"] for item in listing if item["name"] == "wide")
    return found


def rounds_of(fleet: Fleet, instance_id: str, since: datetime) -> list[datetime]:
    """The times of the instance's stored sampling rounds after ``since``."""
    return sorted({sample.at for sample in fleet.vcpu_samples(instance_id, since)})


def wait_rounds(fleet: Fleet, instance_id: str, since: datetime, count: int) -> list[datetime]:
    return list(
        wait_for(
            lambda: (found := rounds_of(fleet, instance_id, since)) and len(found) >= count and found,
            f"{count} sampling rounds of {instance_id}",
        )
    )


def error_of(answer: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert set(error) == {"status", "code", "message", "field", "allowed_states"}
    assert "\n" not in error["message"] and "Traceback" not in error["message"]
    if field is not None:
        assert error["field"] == field, error
        assert field in error["message"], error
    return error


def test_the_samples_answered_are_the_stored_ones(
    client: TestClient, fleet: Fleet, reader: dict[str, str], wide: str
) -> None:
    began = datetime.now(UTC) - timedelta(seconds=1)
    times = wait_rounds(fleet, wide, began, 3)
    until = times[-1]
    answer = client.get(
        f"/v1/instances/{wide}/vcpu",
        headers=reader,
        params={"since": began.isoformat(), "until": until.isoformat()},
    )
    assert answer.status_code == 200, answer.text
    stored = fleet.store.vcpu_samples(wide, began, until)
    assert len(stored) >= 6
    assert answer.json() == {
        "instance_id": wide,
        "interval": 0.1,
        "items": [sample.to_dict() for sample in stored],
        "next": None,
    }
    items = answer.json()["items"]
    assert all(set(item) == SAMPLE_KEYS for item in items)
    assert {item["vcpu"] for item in items} == {0, 1}
    assert [(item["at"], item["vcpu"]) for item in items] == sorted(
        (item["at"], item["vcpu"]) for item in items
    )
    # The fake measures every field: none is left null.
    assert all(value is not None for item in items for value in item.values())
    assert all(0 <= item[name] <= 1 for item in items for name in ("running", "blocked", "waiting", "halted"))


def test_by_default_the_last_hour_is_answered(
    client: TestClient, fleet: Fleet, reader: dict[str, str], wide: str
) -> None:
    wait_rounds(fleet, wide, datetime.now(UTC) - timedelta(seconds=1), 1)
    items = client.get(f"/v1/instances/{wide}/vcpu", headers=reader).json()["items"]
    assert items
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    assert all(hour_ago < datetime.fromisoformat(item["at"]) <= datetime.now(UTC) for item in items)


def test_a_page_ends_with_a_whole_round_and_next_goes_on(
    client: TestClient, fleet: Fleet, reader: dict[str, str], wide: str
) -> None:
    began = datetime.now(UTC) - timedelta(seconds=1)
    times = wait_rounds(fleet, wide, began, 3)
    path = f"/v1/instances/{wide}/vcpu"
    window = {"since": began.isoformat(), "until": times[2].isoformat()}
    # 3 of 6 samples: the second round's second VCPU does not fit, so the page holds one round.
    first = client.get(path, headers=reader, params={**window, "limit": 3}).json()
    assert [(item["at"], item["vcpu"]) for item in first["items"]] == [
        (times[0].isoformat(), 0),
        (times[0].isoformat(), 1),
    ]
    assert first["next"] == times[0].isoformat()
    second = client.get(path, headers=reader, params={**window, "since": first["next"], "limit": 4}).json()
    assert [item["at"] for item in second["items"]] == [times[1].isoformat()] * 2 + [times[2].isoformat()] * 2
    assert second["next"] is None
    # Fewer samples than one round has VCPUs: refused, rather than a page that drops VCPU 1.
    error_of(client.get(path, headers=reader, params={**window, "limit": 1}), 422, "limit")


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"since": "yesterday"}, "since"),
        ({"since": "2026-12-03T10:00:00"}, "since"),
        ({"until": "2026-13-03T10:00:00Z"}, "until"),
        ({"until": "2026-12-03 10:00"}, "until"),
        ({"since": "2026-12-03T10:00:00Z", "until": "2026-12-03T09:00:00Z"}, "until"),
        ({"since": "2026-12-03T10:00:00Z", "until": "2026-12-03T10:00:00Z"}, "until"),
        ({"since": "2026-10-01T00:00:00Z", "until": "2026-12-03T00:00:00Z"}, "since"),
        ({"until": "0001-01-01T00:10:00+00:00"}, "until"),
        ({"since": "0001-01-01T00:10:00+05:00"}, "since"),
        ({"until": "9999-12-31T23:59:59-14:00"}, "until"),
        ({"since": "x" * 100}, "since"),
        ({"since": ""}, "since"),
        ({"limit": 0}, "limit"),
        ({"limit": 50_001}, "limit"),
        ({"limit": "many"}, "limit"),
    ],
)
def test_bad_times_and_limits_are_422_naming_them(
    client: TestClient, reader: dict[str, str], wide: str, params: dict[str, Any], field: str
) -> None:
    error_of(client.get(f"/v1/instances/{wide}/vcpu", headers=reader, params=params), 422, field)


def test_an_unknown_instance_is_404_and_one_never_sampled_has_no_samples(
    client: TestClient, reader: dict[str, str]
) -> None:
    error = error_of(client.get("/v1/instances/no-such-instance/vcpu", headers=reader), 404)
    assert error["code"] == "not_found"
    off = first_instance(client, reader, power_state="shutoff")["id"]
    answer = client.get(f"/v1/instances/{off}/vcpu", headers=reader)
    assert answer.status_code == 200
    assert answer.json() == {"instance_id": off, "interval": 0.1, "items": [], "next": None}


def test_the_endpoint_needs_a_token_and_a_reader_may_read(
    client: TestClient, service_tokens: dict[str, str], wide: str
) -> None:
    path = f"/v1/instances/{wide}/vcpu"
    assert error_of(client.get(path), 401)["code"] == "unauthorized"
    assert error_of(client.get(path, headers=bearer("not-a-token-at-all")), 401)["code"] == "unauthorized"
    for token in service_tokens.values():
        assert client.get(path, headers=bearer(token)).status_code == 200


def gauges(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        if family.name in VCPU_GAUGES:
            found[family.name] = [(dict(sample.labels), sample.value) for sample in family.samples]
    return found


def test_metrics_show_each_vcpus_latest_round_and_steal_is_the_stored_waiting(
    client: TestClient, fleet: Fleet, reader: dict[str, str], operator: dict[str, str], wide: str
) -> None:
    delivered: list[list[VcpuSample]] = []
    lock = threading.Lock()

    def keep(host: str, samples: list[VcpuSample]) -> None:
        with lock:
            delivered.append(list(samples))

    # Added after the app's own listener: a round seen here is already in the gauges.
    fleet.add_vcpu_listener(keep)
    wait_for(
        lambda: any(s.instance_id == wide for s in (delivered[-1] if delivered else [])), "a round of wide"
    )
    with lock:
        seen = len(delivered)
    found = gauges(client.get("/metrics", headers=reader).text)
    assert set(found) == VCPU_GAUGES
    waiting = {
        (labels["instance"], labels["vcpu"]): value
        for labels, value in found["powerdrivers_vcpu_waiting_ratio"]
    }
    assert {vcpu for instance, vcpu in waiting if instance == wide} == {"0", "1"}
    for name, samples in found.items():
        for labels, _ in samples:
            expected = {"host", "instance", "vcpu"} | (
                {"kind"} if name.endswith("exits_per_second") else set()
            )
            assert set(labels) == expected and labels["host"] == "host-1"
    kinds = {labels["kind"] for labels, _ in found["powerdrivers_vcpu_exits_per_second"]}
    assert kinds == {"halt", "io", "mmio"}
    # The gauges are one whole round: the latest delivered before the scrape, or a later one.
    with lock:
        candidates = delivered[seen - 1 :]
    shown = [r for r in candidates if {(s.instance_id, str(s.vcpu)): s.waiting for s in r} == waiting]
    assert shown, "the gauges are no delivered round"
    at = shown[0][0].at
    stored = fleet.vcpu_samples(wide, at - timedelta(seconds=1), at)
    assert {(wide, str(s.vcpu)): s.waiting for s in stored if s.at == at} == {
        key: value for key, value in waiting.items() if key[0] == wide
    }

    # An instance powered off is sampled no more: its series go with the next round.
    answer = client.post(f"/v1/instances/{wide}/actions", headers=operator, json={"operation": "power_off"})
    assert answer.status_code == 202, answer.text
    wait_for(
        lambda: client.get(f"/v1/instances/{wide}", headers=reader).json()["power_state"] == "shutoff",
        "wide to be off",
    )
    with lock:
        seen = len(delivered)
    wait_for(
        lambda: len(delivered) > seen and all(s.instance_id != wide for s in delivered[-1]),
        "a round without wide",
    )
    found = gauges(client.get("/metrics", headers=reader).text)
    assert all(labels["instance"] != wide for samples in found.values() for labels, _ in samples)


def test_a_host_no_longer_kept_or_gone_quiet_drops_out_of_the_gauges() -> None:
    sample = VcpuSample("i-1", "host-1", 0, datetime.now(UTC), 0.1, 0.5, 0.3, 0.2, None, None, None, None)
    kept = ["host-1"]
    collector = VcpuCollector(0.1, lambda: list(kept))
    collector.on_round("host-1", [sample])
    names = {family.name: family.samples for family in collector.collect()}
    assert [s.value for s in names["powerdrivers_vcpu_waiting_ratio"]] == [0.2]
    # Not measured: no halted series and no exits series, never a made-up 0.
    assert names["powerdrivers_vcpu_halted_ratio"] == [] and names["powerdrivers_vcpu_exits_per_second"] == []
    kept.clear()
    assert all(not family.samples for family in collector.collect())
    quiet = VcpuCollector(0.0, min_stale_s=0.0)
    quiet.on_round("host-1", [sample])
    wait_for(lambda: all(not family.samples for family in quiet.collect()), "the quiet host to drop out")


def test_on_postgresql_any_process_answers_and_only_the_owner_exports_the_gauges(
    postgres_url: str, service_config_factory: Any, service_tokens: dict[str, str]
) -> None:
    config: ServiceConfig = service_config_factory(hosts=1, store=postgres_url, extra=SAMPLED)
    with load_driver("fake", config.hosts[0].uri) as driver:
        wide = driver.spawn(InstanceSpec(name="wide", vcpus=2)).id
    reader = bearer(service_tokens["reader"])
    with Fleet(config) as owner, Fleet(config) as other:
        assert (owner.owned_hosts(), other.owned_hosts()) == (["host-1"], [])
        began = datetime.now(UTC) - timedelta(seconds=1)
        until = wait_rounds(other, wide, began, 2)[-1]
        with TestClient(create_app(other)) as client:
            window = {"since": began.isoformat(), "until": until.isoformat()}
            answer = client.get(f"/v1/instances/{wide}/vcpu", headers=reader, params=window)
            assert answer.status_code == 200, answer.text
            stored = owner.vcpu_samples(wide, began, until)
            assert answer.json()["items"] == [sample.to_dict() for sample in stored]
            # A process exports the hosts it keeps: this one keeps none.
            found = gauges(client.get("/metrics", headers=reader).text)
            assert all(not samples for samples in found.values())
        with TestClient(create_app(owner)) as client:

            def owner_gauges() -> set[str]:
                found = gauges(client.get("/metrics", headers=reader).text)
                return {labels["vcpu"] for labels, _ in found["powerdrivers_vcpu_waiting_ratio"]}

            assert wait_for(owner_gauges, "the owner's VCPU gauges") == {"0", "1"}
