"""The simulator's RRD side, as xapi's metrics documentation describes it: /rrd_updates and run-states."""

from __future__ import annotations

import base64
import http.client
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit
from xml.etree import ElementTree

import pytest
import XenAPI
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator
from powerdrivers_xen.testing._rrd import RUNSTATE_SOURCES, VcpuLoad, domain_runstates


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    with XapiSimulator(op_delay=0.01, rrd_step=1) as simulator:
        yield simulator


@pytest.fixture
def api(sim: XapiSimulator) -> Iterator[Any]:
    session = XenAPI.Session(sim.url)
    session.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "1.0", "tests")
    yield session.xenapi
    session.xenapi.session.logout()


def get(
    sim: XapiSimulator, query: list[tuple[str, str]], headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection(urlsplit(sim.url).netloc, timeout=5)
    try:
        connection.request("GET", "/rrd_updates?" + urlencode(query), headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def legend(body: bytes) -> list[str]:
    return [entry.text or "" for entry in ElementTree.fromstring(body).iterfind("meta/legend/entry")]


def test_run_states_partition_the_step_as_xcp_rrdd_describes_them() -> None:
    # VCPU 0 runs half the step then waits; VCPU 1 runs a quarter, waits a quarter, then blocks.
    fractions = domain_runstates([VcpuLoad(0.5, 0.5), VcpuLoad(0.25, 0.25)])
    assert fractions == pytest.approx(
        {
            "runstate_fullrun": 0.25,
            "runstate_full_contention": 0.0,
            "runstate_concurrency_hazard": 0.25,
            "runstate_blocked": 0.0,
            "runstate_partial_run": 0.0,
            "runstate_partial_contention": 0.5,
        }
    )
    assert domain_runstates([VcpuLoad(0.0, 1.0)] * 3)["runstate_full_contention"] == pytest.approx(1.0)
    assert domain_runstates([VcpuLoad(0.2), VcpuLoad(0.0)])["runstate_partial_run"] == pytest.approx(0.2)
    assert sum(domain_runstates([VcpuLoad(0.3, 0.1), VcpuLoad(0.6, 0.3), VcpuLoad(0.0)]).values()) == (
        pytest.approx(1.0)
    )


def test_rrd_updates_needs_a_session_or_the_credentials(sim: XapiSimulator) -> None:
    start = ("start", str(int(time.time()) - 3))
    assert get(sim, [start])[0] == 401
    assert get(sim, [start, ("session_id", "OpaqueRef:forged")])[0] == 401
    good = base64.b64encode(f"{DEFAULT_USERNAME}:{DEFAULT_PASSWORD}".encode()).decode()
    assert get(sim, [start], {"Authorization": f"Basic {good}"})[0] == 200
    bad = base64.b64encode(f"{DEFAULT_USERNAME}:wrong".encode()).decode()
    assert get(sim, [start], {"Authorization": f"Basic {bad}"})[0] == 401
    assert get(sim, [], {"Authorization": f"Basic {good}"})[0] == 400


def test_rrd_updates_answers_xport_rows_of_the_resident_vms(sim: XapiSimulator) -> None:
    session = XenAPI.Session(sim.url)
    session.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "1.0", "tests")
    handle = session._session
    web = sim.vm_record("web-01")["uuid"]
    status, body = get(sim, [("session_id", handle), ("start", str(int(time.time()) - 3))])
    assert status == 200
    uuids = {entry.split(":")[2] for entry in legend(body)}
    # Running and paused VMs (and the control domain) are resident; halted ones have no rows.
    assert web in uuids and sim.vm_record("batch-01")["uuid"] in uuids
    assert sim.vm_record("build-01")["uuid"] not in uuids
    status, body = get(sim, [("session_id", handle), ("start", str(int(time.time()) - 3)), ("vm_uuid", web)])
    assert legend(body) == [f"AVERAGE:vm:{web}:{name}" for name in ("cpu0", "cpu1", "memory")]
    root = ElementTree.fromstring(body)
    rows = root.findall("data/row")
    assert len(rows) in (2, 3, 4)
    times = [int(row.findtext("t") or 0) for row in rows]
    assert times == sorted(times, reverse=True)
    assert all(len(row.findall("v")) == 3 for row in rows)
    assert root.findtext("meta/step") == "1"
    status, body = get(sim, [("session_id", handle), ("start", "0"), ("cf", "MAX"), ("vm_uuid", web)])
    assert legend(body) == []  # averages only, as xapi's RRDs keep by default


def test_run_state_sources_are_served_once_recorded(sim: XapiSimulator, api: Any) -> None:
    vm = api.VM.get_by_name_label("web-01")[0]
    web = sim.vm_record("web-01")["uuid"]
    assert {source["name_label"] for source in api.VM.get_data_sources(vm)} == {"cpu0", "cpu1", "memory"}
    api.VM.record_data_source(vm, "runstate_full_contention")
    sim.set_vcpu_load("web-01", running=[0.0, 0.0], waiting=[1.0, 1.0])
    names = {source["name_label"]: source for source in api.VM.get_data_sources(vm)}
    assert names["runstate_full_contention"]["value"] == pytest.approx(1.0)
    assert set(names) - {"cpu0", "cpu1", "memory"} == {"runstate_full_contention"}
    good = base64.b64encode(f"{DEFAULT_USERNAME}:{DEFAULT_PASSWORD}".encode()).decode()
    status, body = get(
        sim, [("start", str(int(time.time()) - 2)), ("vm_uuid", web)], {"Authorization": f"Basic {good}"}
    )
    assert status == 200
    assert f"AVERAGE:vm:{web}:runstate_full_contention" in legend(body)
    assert len(RUNSTATE_SOURCES) == 6
