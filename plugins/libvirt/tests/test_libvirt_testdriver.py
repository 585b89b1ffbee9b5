"""The libvirt driver against libvirt's own test driver: the fast full matrix."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from libvirt_support.nodes import RUNSTATES, node_xml
from powerdrivers_libvirt._xml import domain_xml

import powerdrivers
from powerdrivers import (
    OPERATION_TABLE,
    Driver,
    EventKind,
    HypervisorConnectionError,
    InstanceNotFound,
    InstanceSpec,
    InvalidStateTransition,
    InvalidURI,
    Operation,
    Outcome,
    PowerState,
)

#: Each reachable canonical state, and how to put an instance of the node in it.
SETUPS = {
    PowerState.RUNNING: ("vm-running", None),
    PowerState.PAUSED: ("vm-paused", None),
    PowerState.SHUTOFF: ("vm-shutoff", None),
    PowerState.CRASHED: ("vm-crashed", None),
    PowerState.SUSPENDED: ("vm-running", Operation.SUSPEND),
}

CALLS = {
    Operation.START: lambda d, ref: d.start(ref),
    Operation.SHUTDOWN: lambda d, ref: d.shutdown(ref, timeout=5),
    Operation.POWER_OFF: lambda d, ref: d.power_off(ref),
    Operation.REBOOT: lambda d, ref: d.reboot(ref, timeout=5),
    Operation.HARD_REBOOT: lambda d, ref: d.reboot(ref, hard=True),
    Operation.PAUSE: lambda d, ref: d.pause(ref),
    Operation.UNPAUSE: lambda d, ref: d.unpause(ref),
    Operation.SUSPEND: lambda d, ref: d.suspend(ref),
    Operation.RESUME: lambda d, ref: d.resume(ref),
    Operation.DELETE: lambda d, ref: d.delete(ref),
}


def test_readings_map_the_seeded_states(driver: Driver) -> None:
    readings = {r.name: r for r in driver.list_instances()}
    assert {name: r.power_state for name, r in readings.items()} == {
        "vm-running": PowerState.RUNNING,
        "vm-paused": PowerState.PAUSED,
        "vm-shutoff": PowerState.SHUTOFF,
        "vm-crashed": PowerState.CRASHED,
        "vm-pmsuspended": PowerState.SUSPENDED,
    }
    assert readings["vm-pmsuspended"].native_state == "pmsuspended"
    assert all(r.native_reason is not None for r in readings.values())


@pytest.mark.parametrize("operation", list(CALLS))
@pytest.mark.parametrize("state", list(SETUPS))
def test_operation_from_state_follows_the_table(
    driver: Driver, state: PowerState, operation: Operation
) -> None:
    name, setup = SETUPS[state]
    if setup is not None:
        CALLS[setup](driver, name)
    before = driver.get_instance(name)
    assert before.power_state is state
    rule = OPERATION_TABLE[operation]
    if state in rule.already_done_in:
        assert CALLS[operation](driver, name).outcome is Outcome.ALREADY_OFF
    elif state in rule.allowed_from:
        CALLS[operation](driver, name)
        if rule.result is None:
            with pytest.raises(InstanceNotFound):
                driver.get_instance(name)
        else:
            assert driver.get_instance(name).power_state is rule.result
    else:
        with pytest.raises(InvalidStateTransition) as caught:
            CALLS[operation](driver, name)
        assert (caught.value.instance, caught.value.operation, caught.value.state) == (
            name,
            operation.value,
            state.value,
        )
        after = driver.get_instance(name)
        assert (after.power_state, after.native_state, after.native_reason) == (
            before.power_state, before.native_state, before.native_reason,
        )  # fmt: skip


def test_managed_save_reads_suspended_and_start_restores_it(driver: Driver) -> None:
    suspended = driver.suspend("vm-running")
    assert (suspended.power_state, suspended.native_state, suspended.native_reason) == (
        PowerState.SUSPENDED, "shutoff", "managed_save",
    )  # fmt: skip
    listed = {r.name: r for r in driver.list_instances()}["vm-running"]
    assert listed.power_state is PowerState.SUSPENDED
    assert driver.start("vm-running").power_state is PowerState.RUNNING


@pytest.mark.parametrize("operation", [Operation.RESUME, Operation.START])
def test_waking_a_pm_suspended_guest_goes_through_pm_wakeup(driver: Driver, operation: Operation) -> None:
    # libvirt's test driver has no virDomainPMWakeup: that the driver asked for
    # it (and not create(), which would cold-boot) shows in the typed error.
    with pytest.raises(powerdrivers.UnsupportedOperation, match="virDomainPMWakeup"):
        CALLS[operation](driver, "vm-pmsuspended")
    assert driver.get_instance("vm-pmsuspended").power_state is PowerState.SUSPENDED


def test_instances_are_addressed_by_uuid_or_name(driver: Driver) -> None:
    by_name = driver.get_instance("vm-paused")
    by_uuid = driver.get_instance(by_name.id)
    assert by_uuid.name == "vm-paused" and by_uuid.id == by_name.id
    with pytest.raises(InstanceNotFound):
        driver.get_instance("00000000-0000-4000-8000-999999999999")
    with pytest.raises(InstanceNotFound):
        driver.get_instance("no-such-domain")


def test_events_are_attributed_to_our_operations_even_when_late(driver: Driver) -> None:
    events: list[powerdrivers.Event] = []
    with driver.subscribe(events.append):
        driver.pause("vm-running")
        driver.unpause("vm-running")
        driver.reboot("vm-running", hard=True)
        driver.suspend("vm-running")
        driver.resume("vm-running")
        driver.power_off("vm-running")
        deadline = time.monotonic() + 5
        while len([e for e in events if e.name == "vm-running"]) < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    # libvirt delivers its events asynchronously while the driver reports a reset
    # itself at once, so the order may differ; every event must name its cause.
    seen = sorted(((e.kind, e.caused_by_operation) for e in events if e.name == "vm-running"), key=str)
    assert seen == sorted(
        [
            (EventKind.PAUSED, Operation.PAUSE),
            (EventKind.UNPAUSED, Operation.UNPAUSE),
            (EventKind.REBOOTED, Operation.HARD_REBOOT),
            (EventKind.SUSPENDED, Operation.SUSPEND),
            (EventKind.STARTED, Operation.RESUME),
            (EventKind.STOPPED, Operation.POWER_OFF),
        ],
        key=str,
    )


def test_soft_reboot_on_the_test_driver_is_graceful(driver: Driver) -> None:
    result = driver.reboot("vm-running", timeout=5)
    assert result.outcome is Outcome.GRACEFUL and result.elapsed_s < 5


def test_spawn_and_delete(driver: Driver) -> None:
    events: list[powerdrivers.Event] = []
    with driver.subscribe(events.append):
        spawned = driver.spawn(InstanceSpec("fresh", vcpus=3, memory_mib=128))
        assert spawned.power_state is PowerState.RUNNING
        driver.delete("fresh")
        deadline = time.monotonic() + 5
        while not any(e.kind is EventKind.DELETED for e in events) and time.monotonic() < deadline:
            time.sleep(0.01)
    with pytest.raises(InstanceNotFound):
        driver.get_instance("fresh")
    kinds = [(e.kind, e.caused_by_operation) for e in events if e.name == "fresh"]
    assert (EventKind.SPAWNED, Operation.SPAWN) in kinds
    assert (EventKind.DELETED, Operation.DELETE) in kinds


def test_vcpu_stats_cover_every_vcpu(driver: Driver) -> None:
    stats = driver.vcpu_stats("vm-running", window=0.05)
    assert [s.vcpu for s in stats] == [0, 1]
    for s in stats:
        assert s.running + s.blocked + s.waiting == pytest.approx(1.0)


def test_spawn_xml_is_built_not_formatted() -> None:
    hostile = "console=ttyS0</cmdline></os><devices><disk/></devices><os><cmdline>"
    spec = InstanceSpec(
        "safe", kernel=Path("/k"), cmdline=hostile, metadata={"console_log": "/tmp/a'b\"c.log"}
    )
    root = ET.fromstring(domain_xml(spec, "qemu"))
    assert root.findtext("os/cmdline") == hostile
    assert root.find("devices/disk") is None
    assert root.find("devices/serial/source").get("path") == "/tmp/a'b\"c.log"  # type: ignore[union-attr]


def test_thousands_of_domains_in_one_listing(tmp_path: Path) -> None:
    count = 3000
    path = tmp_path / "big.xml"
    states = list(RUNSTATES)
    path.write_text(node_xml([(f"d{index:05d}", states[index % len(states)]) for index in range(count)]))
    with powerdrivers.load_driver("libvirt", f"test://{path}") as big:
        readings = big.list_instances()
    assert len(readings) == count
    by_name = {r.name: r.power_state for r in readings}
    assert by_name["d00000"] is PowerState.RUNNING and by_name["d00002"] is PowerState.SHUTOFF


@pytest.mark.parametrize("uri", ["bogus:///x", "qemu+carrierpigeon:///system", "not a uri", "qemu:/system"])
def test_bad_uris_are_invalid_uri_errors(uri: str) -> None:
    with pytest.raises(InvalidURI):
        powerdrivers.load_driver("libvirt", uri)


def test_unreachable_daemon_is_a_connection_error(tmp_path: Path) -> None:
    with pytest.raises(HypervisorConnectionError, match="connecting to"):
        powerdrivers.load_driver("libvirt", f"qemu+unix:///system?socket={tmp_path}/nothing.sock")


def test_password_never_appears_in_errors_or_repr(tmp_path: Path) -> None:
    uri = f"qemu+unix:///system?socket={tmp_path}/nothing.sock"
    with pytest.raises(HypervisorConnectionError) as caught:
        powerdrivers.load_driver("libvirt", uri, username="admin", password=powerdrivers.Secret("hunter2"))
    assert "hunter2" not in str(caught.value) and "hunter2" not in repr(caught.value)


def _cli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "libvirt", *argv],
        capture_output=True, text=True, check=False, env=dict(os.environ),
    )  # fmt: skip


def test_cli_lists_and_operates_by_uuid_or_name(node_uri: str) -> None:
    listed = _cli("-c", node_uri, "-f", "json", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {row["name"]: row for row in json.loads(listed.stdout)}
    assert rows["vm-crashed"]["power_state"] == "crashed"
    info = _cli("-c", node_uri, "-f", "json", "info", rows["vm-paused"]["id"])
    assert json.loads(info.stdout)["name"] == "vm-paused"
    # Each CLI call opens the node file afresh; the operation is checked, not persisted.
    done = _cli("-c", node_uri, "-f", "json", "shutdown", "vm-running", "--timeout", "2")
    assert done.returncode == 0 and json.loads(done.stdout)["outcome"] == "graceful"
    refused = _cli("-c", node_uri, "pause", "vm-shutoff")
    assert refused.returncode == 4 and "cannot pause instance 'vm-shutoff'" in refused.stderr
    missing = _cli("-c", node_uri, "info", "ghost")
    assert missing.returncode == 3
    bad = _cli("-c", "nonsense:///", "list")
    assert bad.returncode == 2 and "not a libvirt driver" in bad.stderr
