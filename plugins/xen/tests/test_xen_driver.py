"""The Xen driver through the official XenAPI SDK, over real XML-RPC, against the xapi simulator."""

from __future__ import annotations

import json
import logging
import os
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import XenAPI
from powerdrivers_xen._errors import translate_failure
from powerdrivers_xen._states import NATIVE_STATES, POWER_OPERATIONS, VM_POWER_STATES
from powerdrivers_xen._transport import TimeoutSafeTransport
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator, stable_uuid

import powerdrivers
from powerdrivers import (
    AuthenticationError,
    Driver,
    EventKind,
    HypervisorConnectionError,
    InstanceNotFound,
    InvalidOption,
    InvalidStateTransition,
    InvalidURI,
    Operation,
    OperationTimeout,
    Outcome,
    PowerState,
    Secret,
    Transition,
)
from powerdrivers.conformance import EventRecorder

INSTANCES = {"web-01", "db-01", "legacy-01", "build-01", "batch-01", "archive-01"}


def connect(sim: XapiSimulator, **options: object) -> Driver:
    settings: dict[str, object] = {"username": DEFAULT_USERNAME, "password": Secret(DEFAULT_PASSWORD)}
    settings.update(options)
    return powerdrivers.load_driver("xen", sim.url, **settings)


@pytest.fixture
def xen(sim: XapiSimulator) -> Iterator[Driver]:
    with connect(sim) as driver:
        yield driver


def test_listing_is_instances_only_with_uuid_ids_and_mapped_states(xen: Driver) -> None:
    readings = {r.name: r for r in xen.list_instances()}
    assert set(readings) == INSTANCES
    assert {name: r.power_state for name, r in readings.items()} == {
        "web-01": PowerState.RUNNING,
        "db-01": PowerState.RUNNING,
        "legacy-01": PowerState.RUNNING,
        "build-01": PowerState.SHUTOFF,
        "batch-01": PowerState.PAUSED,
        "archive-01": PowerState.SUSPENDED,
    }
    assert readings["web-01"].id == stable_uuid("web-01")
    assert readings["build-01"].native_state == "Halted"


def test_instances_by_uuid_or_name_label_and_never_templates(xen: Driver, sim: XapiSimulator) -> None:
    assert xen.get_instance(stable_uuid("db-01")).name == "db-01"
    assert xen.get_instance("db-01").id == stable_uuid("db-01")
    for missing in (str(uuid.uuid4()), "no-such-vm", "Debian Bookworm 12", stable_uuid("Debian Bookworm 12")):
        with pytest.raises(InstanceNotFound):
            xen.get_instance(missing)


def test_graceful_shutdown_completes_on_the_event(xen: Driver) -> None:
    recorder = EventRecorder()
    with xen.subscribe(recorder):
        result = xen.shutdown("web-01", timeout=10, retry_interval=5)
        recorder.wait_for_event(kind=EventKind.STOPPED, name="web-01")
    assert result.outcome is Outcome.GRACEFUL and result.elapsed_s < 2
    shutting = [e for e in recorder.events if e.transition is Transition.SHUTTING_DOWN]
    assert shutting and shutting[0].native_reason == "clean_shutdown"
    assert all(e.caused_by_operation is Operation.SHUTDOWN for e in recorder.events if e.name == "web-01")


def test_a_guest_ignoring_clean_shutdown_is_forced(xen: Driver) -> None:
    result = xen.shutdown("legacy-01", timeout=0.6, retry_interval=0.2)
    assert result.outcome is Outcome.FORCED and result.elapsed_s >= 0.6
    assert result.reading.power_state is PowerState.SHUTOFF


def test_without_force_it_times_out_and_keeps_running(xen: Driver) -> None:
    result = xen.shutdown("legacy-01", timeout=0.3, force=False)
    assert result.outcome is Outcome.TIMED_OUT
    assert xen.get_instance("legacy-01").power_state is PowerState.RUNNING
    assert xen.power_off("legacy-01").power_state is PowerState.SHUTOFF


def test_soft_reboot_is_verified_and_falls_back_to_hard(xen: Driver) -> None:
    recorder = EventRecorder()
    with xen.subscribe(recorder):
        graceful = xen.reboot("web-01", timeout=10)
        forced = xen.reboot("legacy-01", timeout=0.5)
        rebooted = recorder.wait_for_event(kind=EventKind.REBOOTED, name="web-01")
    assert graceful.outcome is Outcome.GRACEFUL and rebooted.caused_by_operation is Operation.REBOOT
    assert forced.outcome is Outcome.FORCED and forced.reading.power_state is PowerState.RUNNING
    assert xen.reboot("db-01", hard=True).outcome is Outcome.FORCED


@pytest.mark.parametrize("fault", ["stall", "hang"])
def test_a_short_xapi_stall_during_a_soft_reboot_leaves_it_graceful(sim: XapiSimulator, fault: str) -> None:
    # "stall" drops connections (errors at once); "hang" holds calls past the 0.4 s call timeout.
    sim.set_guest_delay(1.0)
    interrupt = sim.stall if fault == "stall" else sim.hang
    with connect(sim, timeout="0.4") as driver:
        before = sim.call_count("VM.hard_reboot")
        timer = threading.Timer(0.3, interrupt, (1.0,))
        timer.start()
        result = driver.reboot("web-01", timeout=10)
        timer.join()
    assert result.outcome is Outcome.GRACEFUL
    assert result.elapsed_s < 5  # not the 10 s timeout
    assert sim.call_count("VM.hard_reboot") == before
    assert result.reading.power_state is PowerState.RUNNING


def test_pause_suspend_resume_start(xen: Driver) -> None:
    assert xen.pause("db-01").power_state is PowerState.PAUSED
    assert xen.unpause("db-01").power_state is PowerState.RUNNING
    assert xen.suspend("db-01").native_state == "Suspended"
    assert xen.resume("db-01").power_state is PowerState.RUNNING
    assert xen.start("archive-01").power_state is PowerState.RUNNING  # a suspended VM starts by resuming
    assert xen.start("build-01").power_state is PowerState.RUNNING


def test_vcpu_statistics_from_the_published_data_sources(xen: Driver) -> None:
    stats = xen.vcpu_stats("db-01", window=0.05)
    assert [s.vcpu for s in stats] == [0, 1, 2, 3]
    assert all(0 < s.running < 1 and s.waiting == 0 for s in stats)
    with pytest.raises(InvalidStateTransition):
        xen.vcpu_stats("build-01")


def test_events_name_our_operations_and_not_other_clients(xen: Driver, sim: XapiSimulator) -> None:
    recorder = EventRecorder()
    other = XenAPI.Session(sim.url)
    other.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "2.0", "another-client")
    with xen.subscribe(recorder):
        xen.pause("web-01")
        paused = recorder.wait_for_event(kind=EventKind.PAUSED, name="web-01")
        other.xenapi.VM.pause(other.xenapi.VM.get_by_uuid(stable_uuid("db-01")))
        theirs = recorder.wait_for_event(kind=EventKind.PAUSED, name="db-01")
    assert paused.caused_by_operation is Operation.PAUSE
    assert theirs.caused_by_operation is None


def test_vms_another_client_adds_and_removes_are_spawned_and_deleted(xen: Driver, sim: XapiSimulator) -> None:
    recorder = EventRecorder()
    with xen.subscribe(recorder):
        sim.add_vm("Template of nothing", is_a_template=True)
        sim.add_vm("new-01", "Running")
        spawned = recorder.wait_for_event(kind=EventKind.SPAWNED, name="new-01")
        sim.remove_vm("Template of nothing")
        sim.remove_vm("new-01")
        deleted = recorder.wait_for_event(kind=EventKind.DELETED, name="new-01")
    assert spawned.power_state is PowerState.RUNNING and spawned.caused_by_operation is None
    assert deleted.instance_id == spawned.instance_id and deleted.power_state is PowerState.RUNNING
    # A template is no instance: neither its arrival nor its removal is an event.
    assert [(e.kind, e.name) for e in recorder.events] == [
        (EventKind.SPAWNED, "new-01"),
        (EventKind.DELETED, "new-01"),
    ]


@pytest.mark.parametrize(
    ("call", "code"),
    [
        (lambda api, vm: api.VM.pause(vm), "VM_BAD_POWER_STATE"),
        (lambda api, vm: api.VM.get_record("OpaqueRef:nonsense"), "HANDLE_INVALID"),
        (lambda api, vm: api.VM.get_by_uuid(str(uuid.uuid4())), "UUID_INVALID"),
    ],
)
def test_failures_from_the_wire_translate_by_code(session: object, call: object, code: str) -> None:
    api = session.xenapi  # type: ignore[attr-defined]
    halted = api.VM.get_by_uuid(stable_uuid("build-01"))
    with pytest.raises(XenAPI.Failure) as caught:
        call(api, halted)  # type: ignore[operator]
    assert caught.value.details[0] == code
    translated = translate_failure(caught.value, instance="build-01", operation="pause")
    if code == "VM_BAD_POWER_STATE":
        assert isinstance(translated, InvalidStateTransition)
        assert (translated.state, translated.allowed) == ("shutoff", ("running",))
    else:
        assert isinstance(translated, InstanceNotFound)


def test_control_domain_and_template_refusals_translate(session: object) -> None:
    api = session.xenapi  # type: ignore[attr-defined]
    dom0 = next(ref for ref, rec in api.VM.get_all_records().items() if rec["is_control_domain"])
    with pytest.raises(XenAPI.Failure) as caught:
        api.VM.hard_shutdown(dom0)
    assert isinstance(translate_failure(caught.value, operation="power_off"), InvalidStateTransition)
    template = api.VM.get_by_name_label("Debian Bookworm 12")[0]
    with pytest.raises(XenAPI.Failure) as caught:
        api.VM.start(template, False, False)
    assert isinstance(translate_failure(caught.value), InstanceNotFound)
    unknown = translate_failure(XenAPI.Failure(["SR_FULL", "sr", "1024"]))
    assert isinstance(unknown, powerdrivers.HypervisorError) and unknown.code == "SR_FULL"
    assert unknown.details == ("sr", "1024")


def test_unknown_power_state_reads_unknown_with_a_warning(
    xen: Driver, sim: XapiSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    sim.set_power_state("batch-01", "Migrating")
    with caplog.at_level(logging.WARNING, logger="powerdrivers.native"):
        reading = xen.get_instance("batch-01")
    assert (reading.power_state, reading.native_state) == (PowerState.UNKNOWN, "Migrating")
    assert any("Migrating" in record.getMessage() for record in caplog.records)


def test_the_tables_cover_the_reference() -> None:
    for state in VM_POWER_STATES:
        assert NATIVE_STATES.covers(state), state
    lifecycle = {"start", "start_on", "clean_shutdown", "hard_shutdown", "clean_reboot", "hard_reboot",
                 "pause", "unpause", "suspend", "resume", "resume_on"}  # fmt: skip
    assert lifecycle <= set(POWER_OPERATIONS)


def test_wrong_credentials_are_an_authentication_error(sim: XapiSimulator) -> None:
    with pytest.raises(AuthenticationError) as caught:
        connect(sim, password=Secret("wrong-secret"))
    assert "wrong-secret" not in str(caught.value)


def test_an_expired_session_is_re_established_transparently(xen: Driver, sim: XapiSimulator) -> None:
    sim.expire_sessions()
    assert len(xen.list_instances()) == len(INSTANCES)


def test_a_server_that_stops_answering_gives_a_timeout_within_the_bound(sim: XapiSimulator) -> None:
    with connect(sim, timeout="0.5") as driver:
        sim.hang(3)
        began = time.monotonic()
        with pytest.raises(OperationTimeout):
            driver.list_instances()
        assert time.monotonic() - began < 2


def test_events_resync_after_the_server_restarts(xen: Driver, sim: XapiSimulator) -> None:
    recorder = EventRecorder()
    with xen.subscribe(recorder):
        sim.restart()
        recorder.wait_for_event(kind=EventKind.RESYNC, timeout=15)
        xen.pause("web-01")
        paused = recorder.wait_for_event(kind=EventKind.PAUSED, name="web-01")
    assert paused.caused_by_operation is Operation.PAUSE


@pytest.mark.parametrize(
    "uri",
    [
        "xen:///system",
        "ftp://host",
        "https://root:pw@host",
        "https://host/path",
        "https://[::1",
        "",
        "https://",
    ],
)
def test_bad_uris_are_refused(uri: str) -> None:
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("xen", uri or None, password=Secret("x"))
    assert "pw" not in str(caught.value).replace("password", "")


def test_plain_http_warns_and_tls_is_verified_by_default(
    sim: XapiSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="powerdrivers.xen"), connect(sim):
        pass
    assert any("plain http" in record.getMessage() for record in caplog.records)
    https = sim.url.replace("http://", "https://")
    with pytest.raises(HypervisorConnectionError, match="TLS"):
        powerdrivers.load_driver("xen", https, username="root", password=Secret(DEFAULT_PASSWORD))
    assert TimeoutSafeTransport(1, verify=True).context.verify_mode is ssl.CERT_REQUIRED
    assert TimeoutSafeTransport(1, verify=False).context.verify_mode is ssl.CERT_NONE


def test_password_sources_and_secrecy(
    sim: XapiSimulator, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(DEFAULT_PASSWORD + "\n")
    with (
        caplog.at_level(logging.DEBUG),
        connect(sim, password=None, password_file=str(secret_file)) as driver,
    ):
        assert DEFAULT_PASSWORD not in repr(driver)
        driver.list_instances()
    assert DEFAULT_PASSWORD not in caplog.text
    with pytest.raises(InvalidOption, match="needs a password"):
        powerdrivers.load_driver("xen", sim.url, username="root")
    with pytest.raises(InvalidOption, match="cannot read password_file"):
        powerdrivers.load_driver("xen", sim.url, password_file=str(tmp_path / "absent"))


def _cli(sim: XapiSimulator, *argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POWERDRIVERS_PASSWORD=DEFAULT_PASSWORD)
    command = [sys.executable, "-m", "powerdrivers", "-d", "xen", "-c", sim.url, "-o", "username=root", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


def test_the_cli_end_to_end_with_the_password_from_the_environment(sim: XapiSimulator) -> None:
    listed = _cli(sim, "-f", "json", "list")
    assert listed.returncode == 0, listed.stderr
    assert {row["name"] for row in json.loads(listed.stdout)} == INSTANCES
    by_uuid = _cli(sim, "-f", "json", "shutdown", stable_uuid("web-01"), "--timeout", "10")
    assert json.loads(by_uuid.stdout)["outcome"] == "graceful"
    by_name = _cli(sim, "-f", "json", "start", "web-01")
    assert json.loads(by_name.stdout)["power_state"] == "running"
    refused = _cli(sim, "pause", "build-01")
    assert refused.returncode == 4
    # One line for the error; the other says the password crossed plain http, as it should.
    assert refused.stderr.splitlines() == [
        "powerdrivers: WARNING: connecting to xapi over plain http: "
        "the password crosses the network unencrypted",
        "powerdrivers: error: cannot pause instance 'build-01': it is shutoff (allowed from: running)",
    ]
    wrong = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "xen", "-c", sim.url, "list"],
        capture_output=True, text=True, env=dict(os.environ, POWERDRIVERS_PASSWORD="nope"), check=False,
    )  # fmt: skip
    assert wrong.returncode == 5 and "nope" not in wrong.stderr
    assert DEFAULT_PASSWORD not in listed.stderr + by_uuid.stderr


def test_the_conformance_kit_passes_on_the_simulator(
    pytester: pytest.Pytester, sim: XapiSimulator, tmp_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_text(DEFAULT_PASSWORD)
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "xen", "--powerdrivers-uri", sim.url,
        "--powerdrivers-option", f"password_file={secret_file}", "--powerdrivers-timeout", "3",
        "--powerdrivers-instance", "web-01", "--powerdrivers-instance", "db-01",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 40


@pytest.mark.parametrize("fault", ["stall", "hang"])
def test_a_short_xapi_stall_during_a_graceful_shutdown_leaves_it_graceful(
    sim: XapiSimulator, fault: str
) -> None:
    # The core's shutdown loop asks and reads again after a lost connection or a timeout. The
    # guest shuts down (after 0.8 s, within xapi's 1 s) while xapi does not answer.
    sim.set_guest_delay(0.8)
    interrupt = sim.stall if fault == "stall" else sim.hang
    with connect(sim, timeout="0.4") as driver:
        before = sim.call_count("VM.hard_shutdown")
        timer = threading.Timer(0.2, interrupt, (1.0,))
        timer.start()
        result = driver.shutdown("web-01", timeout=10, retry_interval=0.3)
        timer.join()
    assert result.outcome is Outcome.GRACEFUL
    assert result.elapsed_s < 6  # not the 10 s timeout
    assert sim.call_count("VM.hard_shutdown") == before
    assert result.reading.power_state is PowerState.SHUTOFF
