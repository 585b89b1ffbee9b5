"""The libvirt driver on a real libvirtd with real QEMU guests (TCG).

Two guests: one with no operating system, which cannot honour ACPI, and a
real Linux guest (Debian's cloud kernel, a busybox initramfs running acpid)
that shuts down and reboots when asked. Most tests use the libvirtd on
qemu:///system (the system's, or one the tests start if none runs) and never
kill it; the test that kills and restarts libvirtd does so to a private
libvirtd of its own. Under CI=true none of this skips.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from libvirt_support.guest_image import READY_MARKER, GuestImage
from libvirt_support.libvirtd import (
    DEFAULT_SOCKET,
    DEFAULT_URI,
    LibvirtdError,
    LibvirtdHarness,
    PrivateLibvirtd,
    socket_server_pid,
)
from libvirt_support.smoke_guest import wait_for_marker
from libvirt_support.specs import linux_guest_spec

import powerdrivers
from powerdrivers import (
    Driver,
    EventKind,
    HypervisorConnectionError,
    InstanceSpec,
    Operation,
    Outcome,
    PowerState,
)
from powerdrivers.conformance import EventRecorder

BOOT_TIMEOUT = 60.0


def _name() -> str:
    return f"pdtest-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def linux_guest(qemu: Driver, guest_image: GuestImage, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A running real Linux guest that has booted to the point of handling ACPI."""
    console = tmp_path / "console.log"
    name = _name()
    spec = linux_guest_spec(guest_image, name, console)
    qemu.spawn(spec)
    wait_for_marker(console, READY_MARKER, 0, BOOT_TIMEOUT)
    yield name, console


def test_a_guest_without_an_os_ignores_acpi_and_is_forced_off(qemu: Driver) -> None:
    name = _name()
    assert qemu.spawn(InstanceSpec(name, memory_mib=64)).power_state is PowerState.RUNNING
    result = qemu.shutdown(name, timeout=2, retry_interval=0.5)
    assert result.outcome is Outcome.FORCED
    assert 2 <= result.elapsed_s < 10
    assert (result.reading.power_state, result.reading.native_reason) == (PowerState.SHUTOFF, "destroyed")


def test_no_force_leaves_an_uncooperative_guest_running(qemu: Driver) -> None:
    name = _name()
    qemu.spawn(InstanceSpec(name, memory_mib=64))
    result = qemu.shutdown(name, timeout=1, force=False)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.reading.power_state is PowerState.RUNNING


def test_pause_suspend_resume_and_hard_reboot_on_qemu(qemu: Driver) -> None:
    name = _name()
    qemu.spawn(InstanceSpec(name, memory_mib=64))
    assert qemu.pause(name).power_state is PowerState.PAUSED
    assert qemu.unpause(name).power_state is PowerState.RUNNING
    suspended = qemu.suspend(name)
    assert (suspended.power_state, suspended.native_state, suspended.native_reason) == (
        PowerState.SUSPENDED, "shutoff", "managed_save",
    )  # fmt: skip
    resumed = qemu.resume(name)
    assert (resumed.power_state, resumed.native_reason) == (PowerState.RUNNING, "restored")
    assert qemu.reboot(name, hard=True).outcome is Outcome.FORCED
    qemu.pause(name)
    assert qemu.reboot(name, hard=True).reading.power_state is PowerState.RUNNING


def test_vcpu_stats_of_a_real_guest(qemu: Driver) -> None:
    name = _name()
    qemu.spawn(InstanceSpec(name, vcpus=2, memory_mib=64))
    stats = qemu.vcpu_stats(name, window=0.5)
    assert [s.vcpu for s in stats] == [0, 1]
    for s in stats:
        assert 0 <= s.running <= 1 and s.running + s.blocked + s.waiting == pytest.approx(1.0)
    # A guest spinning in its firmware's boot loop keeps at least one VCPU busy.
    assert max(s.running for s in stats) > 0.05


def test_a_real_linux_guest_shuts_down_gracefully(qemu: Driver, linux_guest: tuple[str, Path]) -> None:
    name, _ = linux_guest
    recorder = EventRecorder()
    with qemu.subscribe(recorder):
        result = qemu.shutdown(name, timeout=30, retry_interval=5)
        stopped = recorder.wait_for_event(kind=EventKind.STOPPED, name=name)
    assert result.outcome is Outcome.GRACEFUL
    assert result.elapsed_s < 10
    assert (result.reading.power_state, result.reading.native_reason) == (PowerState.SHUTOFF, "shutdown")
    assert stopped.caused_by_operation is Operation.SHUTDOWN
    assert stopped.native_reason == "shutdown"


def test_a_real_linux_guest_honours_a_soft_reboot(
    qemu: Driver, linux_guest: tuple[str, Path], guest_image: GuestImage
) -> None:
    name, console = linux_guest
    offset = console.stat().st_size
    recorder = EventRecorder()
    with qemu.subscribe(recorder):
        result = qemu.reboot(name, timeout=30)
        rebooted = recorder.wait_for_event(kind=EventKind.REBOOTED, name=name)
    assert result.outcome is Outcome.GRACEFUL
    assert rebooted.caused_by_operation is Operation.REBOOT
    # The guest really came back: it boots to the ready marker again.
    wait_for_marker(console, READY_MARKER, offset, BOOT_TIMEOUT)
    assert not [e for e in recorder.events if e.kind is EventKind.STOPPED and e.name == name]


def test_the_cli_shuts_a_real_guest_down(linux_guest: tuple[str, Path]) -> None:
    from powerdrivers._cli import main

    name, _ = linux_guest
    assert main(["-d", "libvirt", "-c", "qemu:///system", "shutdown", name, "--timeout", "30"]) == 0


def test_libvirtd_going_away_and_coming_back(
    private_qemu: Driver, private_libvirtd: PrivateLibvirtd, libvirtd: LibvirtdHarness
) -> None:
    # A libvirtd serves the default socket throughout: the system's, or the one the tests started
    # standing in for it. Only the tests' private libvirtd is killed.
    system_pid = socket_server_pid(DEFAULT_SOCKET)
    private_pid = private_libvirtd.pid("libvirtd")
    assert system_pid is not None and private_pid is not None and private_pid != system_pid
    name = _name()
    private_qemu.spawn(InstanceSpec(name, memory_mib=64))
    assert name not in libvirtd.virsh("list", "--all", "--name").stdout.split()
    recorder = EventRecorder()
    with private_qemu.subscribe(recorder):
        private_libvirtd.kill_libvirtd()
        with pytest.raises(HypervisorConnectionError):
            private_qemu.list_instances()
        private_libvirtd.start_libvirtd()
        # The next call reconnects, with bounded backoff.
        assert private_qemu.get_instance(name).power_state is PowerState.RUNNING
        recorder.wait_for_event(kind=EventKind.RESYNC, timeout=10)
        # Event callbacks were registered again on the new connection.
        private_qemu.pause(name)
        paused = recorder.wait_for_event(kind=EventKind.PAUSED, name=name, timeout=10)
    assert paused.caused_by_operation is Operation.PAUSE
    # The domain's QEMU process survived the daemon's restart.
    assert private_qemu.unpause(name).power_state is PowerState.RUNNING
    assert private_libvirtd.pid("libvirtd") not in (None, private_pid)
    # The other libvirtd is alive, unchanged, and still answers.
    os.kill(system_pid, 0)
    assert socket_server_pid(DEFAULT_SOCKET) == system_pid
    assert libvirtd.is_reachable()


def test_the_harness_never_kills_a_daemon_it_did_not_start(libvirtd: LibvirtdHarness) -> None:
    system_pid = socket_server_pid(DEFAULT_SOCKET)
    assert system_pid is not None
    borrower = LibvirtdHarness(DEFAULT_URI).start()  # a libvirtd answers: it starts nothing
    assert (borrower.started_daemons, borrower.owns_libvirtd, borrower.pid("libvirtd")) == ((), False, None)
    with pytest.raises(LibvirtdError, match="refusing to kill it"):
        borrower.kill_libvirtd()
    with pytest.raises(LibvirtdError, match="refusing to kill it"):
        borrower.restart_libvirtd()
    borrower.stop()
    os.kill(system_pid, 0)
    assert socket_server_pid(DEFAULT_SOCKET) == system_pid


def test_load_by_name_through_the_public_loader_on_qemu(libvirtd: LibvirtdHarness) -> None:
    with powerdrivers.load_driver("libvirt", "qemu:///system") as driver:
        assert isinstance(driver.list_instances(), list)


def test_the_cli_streams_real_lifecycle_events(qemu: Driver) -> None:
    name = _name()
    qemu.spawn(InstanceSpec(name, memory_mib=64))
    argv = [
        "-d",
        "libvirt",
        "-c",
        "qemu:///system",
        "-f",
        "json",
        "events",
        "--count",
        "2",
        "--timeout",
        "60",
    ]
    stream = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # The stream subscribes asynchronously; keep changing state until it has seen two changes.
        for _ in range(40):
            if stream.poll() is not None:
                break
            qemu.pause(name)
            qemu.unpause(name)
            time.sleep(0.25)
        out, err = stream.communicate(timeout=30)
    finally:
        stream.kill()
    assert stream.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 2
    for event in events:
        assert event["name"] == name and event["event"] in ("paused", "unpaused")
        # Another client made these changes: the stream does not claim them.
        assert event["caused_by_operation"] is None
        assert event["power_state"] == {"paused": "paused", "unpaused": "running"}[event["event"]]


def test_the_conformance_kit_passes_on_qemu_with_an_os_less_guest(
    pytester: pytest.Pytester, libvirtd: LibvirtdHarness
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "libvirt", "--powerdrivers-uri", "qemu:///system",
        "--powerdrivers-option", "domain_type=qemu", "--powerdrivers-spawn",
        "--powerdrivers-spec", "memory_mib=64", "--powerdrivers-timeout", "2",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 50


def test_the_conformance_kit_passes_on_qemu_with_the_linux_guest(
    pytester: pytest.Pytester, libvirtd: LibvirtdHarness, guest_image: GuestImage
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "libvirt", "--powerdrivers-uri", "qemu:///system",
        "--powerdrivers-option", "domain_type=qemu", "--powerdrivers-spawn",
        "--powerdrivers-spec", "memory_mib=256", "--powerdrivers-spec", f"kernel={guest_image.kernel}",
        "--powerdrivers-spec", f"initrd={guest_image.initrd}",
        "--powerdrivers-spec", f"cmdline={guest_image.cmdline}",
        "--powerdrivers-timeout", "30",
        "-k", "graceful or events or shutdown-running or reboot-running",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 4


def test_the_test_driver_through_libvirtd_rpc(libvirtd: LibvirtdHarness, node_uri: str) -> None:
    remote_uri = node_uri.replace("test://", "test+unix://", 1)
    with (
        powerdrivers.load_driver("libvirt", remote_uri) as remote,
        powerdrivers.load_driver("libvirt", node_uri) as local,
    ):
        over_rpc = {r.name: (r.power_state, r.native_state) for r in remote.list_instances()}
        in_process = {r.name: (r.power_state, r.native_state) for r in local.list_instances()}
        assert over_rpc == in_process and len(over_rpc) == 5
        assert remote.pause("vm-running").power_state is PowerState.PAUSED
