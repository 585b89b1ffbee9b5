"""The xapi simulator, driven through the official XenAPI SDK over loopback HTTP."""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import threading
import time
import uuid
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import XenAPI
from powerdrivers_xen.testing import (
    CONTROL_DOMAIN,
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    DEFAULT_VMS,
    XapiSimulator,
    stable_uuid,
)

NULL = "OpaqueRef:NULL"
BAD_REF = "OpaqueRef:00000000-0000-0000-0000-000000000000"


class TimeoutTransport(xmlrpc.client.Transport):
    """The SDK has no timeout option: a transport whose connections time out is how to get one."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


def raw(proxy: xmlrpc.client.ServerProxy, method: str, *args: Any) -> dict[str, Any]:
    reply = getattr(proxy, method)(*args)
    assert isinstance(reply, dict)
    return reply


def login(sim: XapiSimulator, **kwargs: Any) -> Any:
    client = XenAPI.Session(sim.url, **kwargs)
    client.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "1.0", "powerdrivers-tests")
    return client


def vm(session: Any, name: str) -> str:
    refs = session.xenapi.VM.get_by_name_label(name)
    assert len(refs) == 1
    return str(refs[0])


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def event_from(session: Any, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
    # `from` is a Python keyword: the SDK's event.from is reached with getattr.
    result: dict[str, Any] = getattr(session.xenapi.event, "from")(classes, token, timeout)
    return result


def failure(call: Callable[[], Any]) -> list[str]:
    with pytest.raises(XenAPI.Failure) as info:
        call()
    details: list[str] = info.value.details
    return details


def task_done(session: Any, task: str) -> Callable[[], bool]:
    return lambda: session.xenapi.task.get_status(task) not in ("pending", "cancelling")


# -- sessions and the envelope ---------------------------------------------------------------------


def test_login_opens_a_session_and_logout_closes_it(sim: XapiSimulator) -> None:
    client = login(sim)
    assert client.handle.startswith("OpaqueRef:")
    assert sim.session_count == 1
    client.xenapi.session.logout()
    assert sim.session_count == 0


def test_wrong_credentials_fail_authentication(sim: XapiSimulator) -> None:
    client = XenAPI.Session(sim.url)
    details = failure(lambda: client.xenapi.login_with_password(DEFAULT_USERNAME, "wrong", "1.0", "t"))
    assert details == ["SESSION_AUTHENTICATION_FAILED", DEFAULT_USERNAME, "Authentication failure"]


def test_raw_envelope_two_argument_login_and_call_errors(sim: XapiSimulator) -> None:
    proxy = xmlrpc.client.ServerProxy(sim.url)
    reply = raw(proxy, "session.login_with_password", DEFAULT_USERNAME, DEFAULT_PASSWORD)
    assert reply["Status"] == "Success"
    handle = reply["Value"]
    assert handle.startswith("OpaqueRef:")
    listed = raw(proxy, "VM.get_all", handle)
    assert listed["Status"] == "Success"
    assert len(listed["Value"]) == len(DEFAULT_VMS)
    expired = {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", BAD_REF]}
    assert raw(proxy, "VM.get_all", BAD_REF) == expired
    unknown = raw(proxy, "VM.frobnicate", handle)
    assert unknown["ErrorDescription"] == ["MESSAGE_METHOD_UNKNOWN", "VM.frobnicate"]
    ref = listed["Value"][0]
    count = raw(proxy, "VM.start", handle, ref)
    assert count["ErrorDescription"] == ["MESSAGE_PARAMETER_COUNT_MISMATCH", "VM.start", "4", "2"]
    typed = raw(proxy, "VM.start", handle, ref, "yes", False)
    assert typed["ErrorDescription"] == ["FIELD_TYPE_ERROR", "start_paused"]
    assert raw(proxy, "session.logout", handle) == {"Status": "Success", "Value": ""}


def test_simulator_refuses_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        XapiSimulator(host="0.0.0.0")


# -- records --------------------------------------------------------------------------------------


def test_all_records_have_xapi_shapes_and_the_default_world(session: Any) -> None:
    records = session.xenapi.VM.get_all_records()
    by_name = {record["name_label"]: (ref, record) for ref, record in records.items()}
    assert set(by_name) == {spec.name_label for spec in DEFAULT_VMS}

    dom0 = by_name[CONTROL_DOMAIN][1]
    assert dom0["is_control_domain"] is True
    assert (dom0["power_state"], dom0["domid"]) == ("Running", "0")
    templates = [r["name_label"] for r in records.values() if r["is_a_template"] and not r["is_a_snapshot"]]
    assert sorted(templates) == ["Debian Bookworm 12", "Windows Server 2022 (64-bit)"]
    web_ref, web = by_name["web-01"]
    snap_ref, snap = by_name["web-01 before upgrade"]
    assert snap["is_a_snapshot"] is True and snap["is_a_template"] is True
    assert snap["snapshot_of"] == web_ref
    assert web["snapshots"] == [snap_ref]
    states = {name: record["power_state"] for name, (_, record) in by_name.items()}
    assert states["web-01"] == states["db-01"] == states["legacy-01"] == "Running"
    assert (states["build-01"], states["batch-01"], states["archive-01"]) == ("Halted", "Paused", "Suspended")

    for ref, record in records.items():
        assert ref.startswith("OpaqueRef:")
        assert record["uuid"] == stable_uuid(record["name_label"])
        uuid.UUID(record["uuid"])
        for field in ("VCPUs_max", "VCPUs_at_startup", "memory_static_max", "domid", "user_version"):
            assert isinstance(record[field], str)
            int(record[field])
        assert record["metrics"].startswith("OpaqueRef:") and record["metrics"] != NULL
        assert record["current_operations"] == {}
        assert isinstance(record["other_config"], dict)
        assert isinstance(record["allowed_operations"], list)
        live = record["power_state"] in ("Running", "Paused")
        assert (record["domid"] != "-1") == live
        assert (record["resident_on"] != NULL) == live
    assert session.xenapi.VM.get_record(web_ref) == records[web_ref]


def test_lookups_and_invalid_references(session: Any) -> None:
    api = session.xenapi
    ref = vm(session, "db-01")
    vm_uuid = api.VM.get_uuid(ref)
    assert api.VM.get_by_uuid(vm_uuid) == ref
    assert api.VM.get_name_label(ref) == "db-01"
    assert api.VM.get_power_state(ref) == "Running"
    assert api.VM.get_VCPUs_max(ref) == "4"
    assert api.VM.get_is_a_template(ref) is False
    assert api.VM.get_by_name_label("no-such-vm") == []
    assert failure(lambda: api.VM.get_record(BAD_REF)) == ["HANDLE_INVALID", "VM", BAD_REF]
    assert failure(lambda: api.VM.get_power_state(BAD_REF)) == ["HANDLE_INVALID", "VM", BAD_REF]
    assert failure(lambda: api.VM.clean_shutdown(BAD_REF)) == ["HANDLE_INVALID", "VM", BAD_REF]
    missing = str(uuid.uuid4())
    assert failure(lambda: api.VM.get_by_uuid(missing)) == ["UUID_INVALID", "VM", missing]
    assert failure(lambda: api.task.get_status(BAD_REF)) == ["HANDLE_INVALID", "task", BAD_REF]


def test_host_and_pool_answer_the_sdk_api_version_probe(session: Any) -> None:
    assert session.API_version == "2.21"
    host = session.xenapi.session.get_this_host(session.handle)
    assert session.xenapi.host.get_control_domain(host) == vm(session, CONTROL_DOMAIN)
    resident = set(session.xenapi.host.get_resident_VMs(host))
    assert vm(session, "web-01") in resident and vm(session, "build-01") not in resident


# -- the power lifecycle ------------------------------------------------------------------------------


def test_lifecycle_walks_every_transition(sim: XapiSimulator, session: Any) -> None:
    api = session.xenapi.VM
    ref = vm(session, "build-01")
    api.start(ref, False, False)
    assert api.get_power_state(ref) == "Running"
    domid = api.get_domid(ref)
    assert domid != "-1"
    assert api.get_resident_on(ref) != NULL
    api.pause(ref)
    assert (api.get_power_state(ref), api.get_domid(ref)) == ("Paused", domid)
    api.unpause(ref)
    assert (api.get_power_state(ref), api.get_domid(ref)) == ("Running", domid)
    api.suspend(ref)
    assert (api.get_power_state(ref), api.get_domid(ref)) == ("Suspended", "-1")
    assert api.get_resident_on(ref) == NULL
    api.resume(ref, False, False)
    assert api.get_power_state(ref) == "Running"
    for reboot in (api.clean_reboot, api.hard_reboot):
        before = api.get_domid(ref)
        reboot(ref)
        assert api.get_power_state(ref) == "Running"
        assert api.get_domid(ref) != before
    started = time.monotonic()
    api.clean_shutdown(ref)
    assert time.monotonic() - started >= sim.guest_delay
    assert api.get_power_state(ref) == "Halted"
    api.start(ref, True, False)
    assert api.get_power_state(ref) == "Paused"
    api.hard_shutdown(ref)
    assert (api.get_power_state(ref), api.get_domid(ref)) == ("Halted", "-1")
    assert api.get_current_operations(ref) == {}
    assert "start" in api.get_allowed_operations(ref)
    archived = vm(session, "archive-01")
    api.hard_shutdown(archived)
    assert api.get_power_state(archived) == "Halted"


@pytest.mark.parametrize(
    ("operation", "name", "args", "expected", "actual"),
    [
        ("start", "web-01", (False, False), "halted", "running"),
        ("clean_shutdown", "build-01", (), "running", "halted"),
        ("clean_reboot", "batch-01", (), "running", "paused"),
        ("hard_shutdown", "build-01", (), "paused, suspended, running", "halted"),
        ("hard_reboot", "archive-01", (), "paused, running", "suspended"),
        ("pause", "batch-01", (), "running", "paused"),
        ("unpause", "web-01", (), "paused", "running"),
        ("suspend", "build-01", (), "running", "halted"),
        ("resume", "web-01", (False, False), "suspended", "running"),
    ],
)
def test_wrong_power_state_is_vm_bad_power_state(
    session: Any, operation: str, name: str, args: tuple[Any, ...], expected: str, actual: str
) -> None:
    ref = vm(session, name)
    details = failure(lambda: getattr(session.xenapi.VM, operation)(ref, *args))
    assert details == ["VM_BAD_POWER_STATE", ref, expected, actual]


def test_templates_snapshots_and_the_control_domain_refuse_power_operations(session: Any) -> None:
    api = session.xenapi.VM
    template = vm(session, "Debian Bookworm 12")
    assert failure(lambda: api.start(template, False, False)) == ["VM_IS_TEMPLATE", template, "start"]
    snapshot = vm(session, "web-01 before upgrade")
    assert failure(lambda: api.start(snapshot, False, False)) == ["VM_IS_SNAPSHOT", snapshot, "start"]
    dom0 = vm(session, CONTROL_DOMAIN)
    refused = ["OPERATION_NOT_ALLOWED", "This operation is not allowed on a control domain"]
    assert failure(lambda: api.clean_shutdown(dom0)) == refused
    assert failure(lambda: api.hard_reboot(dom0)) == refused
    assert failure(lambda: api.assert_operation_valid(dom0, "hard_shutdown")) == refused
    assert api.assert_operation_valid(vm(session, "web-01"), "clean_shutdown") == ""


# -- tasks, cooperation and cancellation ---------------------------------------------------------------


def test_async_clean_shutdown_task_flow(session: Any) -> None:
    ref = vm(session, "web-01")
    task = session.xenapi.Async.VM.clean_shutdown(ref)
    assert task.startswith("OpaqueRef:")
    record = session.xenapi.task.get_record(task)
    assert record["name_label"] == "Async.VM.clean_shutdown"
    assert record["status"] == "pending"
    wait_for(lambda: session.xenapi.VM.get_current_operations(ref) == {task: "clean_shutdown"}, 1.0)
    wait_for(task_done(session, task))
    assert session.xenapi.task.get_status(task) == "success"
    assert session.xenapi.task.get_result(task) == ""
    assert session.xenapi.task.get_error_info(task) == []
    assert session.xenapi.task.get_progress(task) == 1.0
    assert session.xenapi.VM.get_power_state(ref) == "Halted"
    assert session.xenapi.VM.get_current_operations(ref) == {}
    session.xenapi.task.destroy(task)
    assert failure(lambda: session.xenapi.task.get_status(task)) == ["HANDLE_INVALID", "task", task]


def test_async_failures_are_reported_by_the_task(session: Any) -> None:
    ref = vm(session, "web-01")
    task = session.xenapi.Async.VM.start(ref, False, False)
    wait_for(task_done(session, task))
    assert session.xenapi.task.get_status(task) == "failure"
    assert session.xenapi.task.get_error_info(task) == ["VM_BAD_POWER_STATE", ref, "halted", "running"]
    bad = session.xenapi.Async.VM.hard_shutdown(BAD_REF)
    wait_for(task_done(session, bad))
    assert session.xenapi.task.get_error_info(bad) == ["HANDLE_INVALID", "VM", BAD_REF]


def test_uncooperative_guest_keeps_clean_shutdown_pending_until_hard_shutdown(
    sim: XapiSimulator, session: Any
) -> None:
    api = session.xenapi.VM
    ref = vm(session, "legacy-01")
    task = session.xenapi.Async.VM.clean_shutdown(ref)
    wait_for(lambda: api.get_current_operations(ref) == {task: "clean_shutdown"}, 1.0)
    time.sleep(sim.guest_delay * 3)
    assert session.xenapi.task.get_status(task) == "pending"
    assert api.get_power_state(ref) == "Running"
    allowed = api.get_allowed_operations(ref)
    assert "hard_shutdown" in allowed and "pause" not in allowed and "clean_shutdown" not in allowed
    assert failure(lambda: api.pause(ref)) == ["OTHER_OPERATION_IN_PROGRESS", "VM.clean_shutdown", ref]
    api.hard_shutdown(ref)
    assert api.get_power_state(ref) == "Halted"
    wait_for(task_done(session, task))
    assert session.xenapi.task.get_status(task) == "cancelled"
    assert session.xenapi.task.get_error_info(task) == ["TASK_CANCELLED", task]


def test_uncooperative_guest_times_out_a_synchronous_clean_shutdown(sim: XapiSimulator, session: Any) -> None:
    ref = vm(session, "legacy-01")
    started = time.monotonic()
    details = failure(lambda: session.xenapi.VM.clean_shutdown(ref))
    assert time.monotonic() - started >= sim.shutdown_timeout
    assert details == ["VM_SHUTDOWN_TIMEOUT", ref, str(float(sim.shutdown_timeout))]
    assert session.xenapi.VM.get_power_state(ref) == "Running"
    assert session.xenapi.VM.get_current_operations(ref) == {}


def test_hard_shutdown_cancels_a_blocked_synchronous_clean_shutdown(sim: XapiSimulator, session: Any) -> None:
    ref = vm(session, "legacy-01")
    outcome: list[list[str]] = []

    def blocked_call() -> None:
        other = login(sim)
        try:
            other.xenapi.VM.clean_shutdown(ref)
        except XenAPI.Failure as error:
            outcome.append(error.details)

    thread = threading.Thread(target=blocked_call, daemon=True)
    thread.start()
    wait_for(lambda: list(session.xenapi.VM.get_current_operations(ref).values()) == ["clean_shutdown"], 2.0)
    (task,) = session.xenapi.VM.get_current_operations(ref)
    session.xenapi.VM.hard_shutdown(ref)
    thread.join(timeout=5.0)
    assert outcome == [["TASK_CANCELLED", task]]
    assert session.xenapi.VM.get_power_state(ref) == "Halted"


def test_task_cancel_abandons_a_pending_clean_reboot(session: Any) -> None:
    api = session.xenapi.VM
    ref = vm(session, "legacy-01")
    domid = api.get_domid(ref)
    task = session.xenapi.Async.VM.clean_reboot(ref)
    wait_for(lambda: api.get_current_operations(ref) == {task: "clean_reboot"}, 1.0)
    session.xenapi.task.cancel(task)
    wait_for(task_done(session, task))
    assert session.xenapi.task.get_status(task) == "cancelled"
    assert (api.get_power_state(ref), api.get_domid(ref)) == ("Running", domid)
    assert api.get_current_operations(ref) == {}


def test_guest_turning_cooperative_completes_the_pending_shutdown(sim: XapiSimulator, session: Any) -> None:
    ref = vm(session, "legacy-01")
    task = session.xenapi.Async.VM.clean_shutdown(ref)
    time.sleep(sim.guest_delay * 2)
    assert session.xenapi.task.get_status(task) == "pending"
    sim.set_guest_behaviour("legacy-01", cooperative=True)
    wait_for(task_done(session, task))
    assert session.xenapi.task.get_status(task) == "success"
    assert session.xenapi.VM.get_power_state(ref) == "Halted"


# -- events ----------------------------------------------------------------------------------------------


def test_event_from_empty_token_lists_every_object_then_long_polls(session: Any) -> None:
    result = event_from(session, ["vm"], "", 5.0)
    events = result["events"]
    assert {event["ref"] for event in events} == set(session.xenapi.VM.get_all())
    assert {(event["class"], event["operation"]) for event in events} == {("vm", "add")}
    assert all("power_state" in event["snapshot"] for event in events)
    assert result["valid_ref_counts"]["vm"] == len(DEFAULT_VMS)
    token = result["token"]
    assert len(token.split(",")) == 2
    started = time.monotonic()
    quiet = event_from(session, ["vm"], token, 0.5)
    assert time.monotonic() - started >= 0.45
    assert quiet["events"] == []


def test_event_from_reports_power_and_operation_changes_as_mod_events(
    sim: XapiSimulator, session: Any
) -> None:
    ref = vm(session, "legacy-01")
    token = event_from(session, ["vm", "task"], "", 1.0)["token"]
    task = session.xenapi.Async.VM.clean_shutdown(ref)
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + 5.0
    while not any(e["class"] == "vm" and e["snapshot"]["current_operations"] for e in seen):
        assert time.monotonic() < deadline
        result = event_from(session, ["vm", "task"], token, 2.0)
        token = result["token"]
        seen.extend(result["events"])
    assert any(e["class"] == "task" and e["operation"] == "add" and e["ref"] == task for e in seen)
    vm_event = next(e for e in seen if e["class"] == "vm" and e["snapshot"]["current_operations"])
    assert (vm_event["operation"], vm_event["ref"]) == ("mod", ref)
    assert vm_event["snapshot"]["current_operations"] == {task: "clean_shutdown"}

    shutdown = threading.Timer(0.3, lambda: login(sim).xenapi.VM.hard_shutdown(ref))
    shutdown.start()
    started = time.monotonic()
    halted = False
    while not halted:
        assert time.monotonic() - started < 5.0
        result = event_from(session, ["vm"], token, 5.0)
        token = result["token"]
        halted = any(e["snapshot"]["power_state"] == "Halted" for e in result["events"] if e["ref"] == ref)
    assert time.monotonic() - started < 3.0  # the long-poll woke on the change, not on its timeout
    shutdown.join()


def test_event_from_object_subscription_and_bad_token(session: Any) -> None:
    ref = vm(session, "web-01")
    result = event_from(session, [f"vm/{ref}"], "", 1.0)
    assert [event["ref"] for event in result["events"]] == [ref]
    assert failure(lambda: event_from(session, ["vm"], "garbage", 1.0)) == [
        "EVENT_FROM_TOKEN_PARSE_FAILURE",
        "garbage",
    ]


def test_waiting_event_from_fails_when_its_session_expires(sim: XapiSimulator) -> None:
    proxy = xmlrpc.client.ServerProxy(sim.url)
    handle = raw(proxy, "session.login_with_password", DEFAULT_USERNAME, DEFAULT_PASSWORD)["Value"]
    token = raw(proxy, "event.from", handle, ["vm"], "", 1.0)["Value"]["token"]
    threading.Timer(0.3, sim.expire_sessions).start()
    started = time.monotonic()
    reply = raw(proxy, "event.from", handle, ["vm"], token, 10.0)
    assert time.monotonic() - started < 5.0
    assert reply == {"Status": "Failure", "ErrorDescription": ["SESSION_INVALID", handle]}


# -- session expiry, restart and hangs as the SDK sees them -----------------------------------------


def test_sdk_logs_in_again_transparently_after_session_expiry(sim: XapiSimulator, session: Any) -> None:
    old = session.handle
    sim.expire_sessions()
    assert sim.session_count == 0
    assert len(session.xenapi.VM.get_all()) == len(DEFAULT_VMS)
    assert session.handle != old
    assert sim.session_count == 1


def test_expiry_with_rotated_credentials_surfaces_authentication_failure(
    sim: XapiSimulator, session: Any
) -> None:
    sim.set_credentials(DEFAULT_USERNAME, "rotated")
    assert session.xenapi.VM.get_all()  # the open session is still valid
    sim.expire_sessions()
    details = failure(session.xenapi.VM.get_all)
    assert details[0] == "SESSION_AUTHENTICATION_FAILED"


def test_calls_after_logout_fail_with_fault_401(session: Any) -> None:
    session.xenapi.session.logout()
    with pytest.raises(xmlrpc.client.Fault) as info:
        session.xenapi.VM.get_all()
    assert info.value.faultCode == 401


def test_restart_keeps_the_port_and_the_vms_but_loses_sessions(sim: XapiSimulator, session: Any) -> None:
    port = sim.port
    ref = vm(session, "build-01")
    session.xenapi.VM.start(ref, False, False)
    old = session.handle
    sim.restart()
    assert sim.port == port
    assert sim.session_count == 0
    assert session.xenapi.VM.get_power_state(ref) == "Running"  # after a transparent re-login
    assert session.handle != old


def test_hang_makes_a_client_with_a_timeout_time_out(sim: XapiSimulator) -> None:
    client = login(sim, transport=TimeoutTransport(0.3))
    sim.hang(2.0)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        client.xenapi.VM.get_all()
    assert time.monotonic() - started < 1.5
    sim.resume_responses()
    assert len(client.xenapi.VM.get_all()) == len(DEFAULT_VMS)


def test_stall_drops_connections_then_serves_the_same_sessions(sim: XapiSimulator, session: Any) -> None:
    handle = session.handle
    sim.stall(0.6)
    began = time.monotonic()
    with pytest.raises(OSError):
        session.xenapi.VM.get_all()
    assert time.monotonic() - began < 0.5  # refused at once, not held
    wait_for(lambda: time.monotonic() - began > 0.7)
    assert len(session.xenapi.VM.get_all()) == len(DEFAULT_VMS)
    assert session.handle == handle  # the session outlived the stall
    assert sim.session_count == 1


def test_call_counts_are_kept_per_method(sim: XapiSimulator, session: Any) -> None:
    before = sim.call_count("VM.get_all")
    session.xenapi.VM.get_all()
    session.xenapi.VM.get_all()
    assert sim.call_count("VM.get_all") == before + 2
    assert sim.call_count("session.login_with_password") == 1


def test_paused_responses_complete_once_resumed(sim: XapiSimulator, session: Any) -> None:
    results: list[int] = []
    other = login(sim)
    sim.pause_responses()

    def call() -> None:
        results.append(len(other.xenapi.VM.get_all()))

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    thread.join(timeout=0.3)
    assert thread.is_alive() and results == []
    sim.resume_responses()
    thread.join(timeout=5.0)
    assert results == [len(DEFAULT_VMS)]


# -- statistics and odd states -------------------------------------------------------------------------------


def test_vcpu_utilisation_is_published_and_changes_over_time(session: Any) -> None:
    api = session.xenapi
    ref = vm(session, "db-01")
    metrics = api.VM.get_metrics(ref)
    first = api.VM_metrics.get_VCPUs_utilisation(metrics)
    assert set(first) == {"0", "1", "2", "3"}
    assert all(isinstance(load, float) and 0.0 <= load <= 1.0 for load in first.values())
    assert api.VM_metrics.get_record(metrics)["VCPUs_number"] == "4"
    wait_for(lambda: api.VM_metrics.get_VCPUs_utilisation(metrics) != first, 3.0)
    assert 0.0 <= api.VM.query_data_source(ref, "cpu0") <= 1.0
    names = {source["name_label"] for source in api.VM.get_data_sources(ref)}
    assert names == {"cpu0", "cpu1", "cpu2", "cpu3", "memory"}
    paused = api.VM.get_metrics(vm(session, "batch-01"))
    assert set(api.VM_metrics.get_VCPUs_utilisation(paused).values()) == {0.0}
    halted = vm(session, "build-01")
    assert api.VM_metrics.get_VCPUs_utilisation(api.VM.get_metrics(halted)) == {}
    assert failure(lambda: api.VM.query_data_source(halted, "cpu0"))[0] == "INTERNAL_ERROR"


def test_any_power_state_string_can_be_forced(sim: XapiSimulator, session: Any) -> None:
    api = session.xenapi.VM
    ref = sim.add_vm("old-xapi-guest", "Running", vcpus=1)
    assert api.get_power_state(ref) == "Running"
    sim.set_power_state(ref, "Crashed")
    assert api.get_power_state(ref) == "Crashed"
    assert api.get_allowed_operations(ref) == []
    assert failure(lambda: api.start(ref, False, False)) == ["VM_BAD_POWER_STATE", ref, "halted", "crashed"]
    sim.set_power_state("old-xapi-guest", "Mystery")
    details = failure(lambda: api.hard_shutdown(ref))
    assert details == ["VM_BAD_POWER_STATE", ref, "paused, suspended, running", "mystery"]
    sim.set_power_state(ref, "Halted")
    api.start(ref, False, False)
    assert api.get_power_state(ref) == "Running"
    sim.remove_vm(ref)
    assert failure(lambda: api.get_record(ref)) == ["HANDLE_INVALID", "VM", ref]


def test_command_line_entry_point_serves_and_never_prints_the_password() -> None:
    plugin_root = Path(__file__).resolve().parents[1]
    secret = "not-the-default-pw"
    env = {**os.environ, "POWERDRIVERS_XENSIM_PASSWORD": secret, "PYTHONPATH": str(plugin_root)}
    command = [sys.executable, "-m", "powerdrivers_xen.testing", "--duration", "20"]
    pipe = subprocess.PIPE
    with subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe, text=True) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            url = line.split()[4]
            assert url.startswith("http://127.0.0.1:")
            client = XenAPI.Session(url)
            client.xenapi.login_with_password(DEFAULT_USERNAME, secret, "1.0", "cli-test")
            assert len(client.xenapi.VM.get_all()) == len(DEFAULT_VMS)
        finally:
            process.terminate()
            out, err = process.communicate(timeout=10)
    assert process.returncode == 0
    assert secret not in line + out + err
