"""The libvirt driver on real KVM guests (``domain_type=kvm``), where ``/dev/kvm`` exists.

The TCG tests (test_libvirt_qemu.py) cover the driver in depth; these check that the same
operations hold with hardware virtualisation: the OS-less guest is forced off, the real Linux
guest shuts down and reboots gracefully, and the conformance kit passes on a KVM domain. They
run on the tests' private libvirtd, which probes KVM when it starts, so a system libvirtd that
cached its capabilities before ``/dev/kvm`` was usable does not matter.

Without ``/dev/kvm`` they skip, saying so. With it, under CI=true, a KVM test that cannot run
fails, with one exception: on a host whose KVM is PVM (the ``kvm_pvm`` module, software
virtualisation without VMX or SVM), which runs only guest kernels built for PVM, the two Linux
guest tests skip, naming the module; the OS-less guest and the kit still run on KVM there.

Nested KVM can be far slower than TCG for this small guest, so the bounds are wide: where
the host's KVM runs guests by emulating their privileged instructions in software (the kvm_pvm
module), the kernel's decompression alone takes one to two minutes, and KVM may stop the guest
on an instruction it cannot emulate; the boot then ends at once, naming QEMU's "KVM internal
error", instead of running into the timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from libvirt_support.guest_image import READY_MARKER, GuestImage
from libvirt_support.libvirtd import PrivateLibvirtd
from libvirt_support.nodes import require_real
from libvirt_support.specs import linux_guest_spec

import powerdrivers
from powerdrivers import Driver, EventKind, InstanceSpec, Operation, Outcome, PowerState
from powerdrivers.conformance import EventRecorder

KVM_DEVICE = Path("/dev/kvm")
BOOT_TIMEOUT = 300.0
"""Seconds from start (or reboot) to the guest's ready marker (see the module's docstring)."""
SHUTDOWN_TIMEOUT = 120
"""Bound on a graceful shutdown or reboot; the guest's ACPI shutdown takes about 16 s."""


@dataclass
class LinuxGuest:
    """The running Linux guest shared by this module's tests."""

    name: str
    console: Path


def _name() -> str:
    return f"pdtest-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def kvm_libvirtd(request: pytest.FixtureRequest) -> PrivateLibvirtd:
    """The private libvirtd, once it has shown that it can run KVM guests."""
    if not KVM_DEVICE.exists():
        pytest.skip("no /dev/kvm: this machine cannot run KVM guests (the TCG tests still run)")
    harness: PrivateLibvirtd = request.getfixturevalue("private_libvirtd")
    harness.start_libvirtd()  # a test before may have left it killed
    probe = harness.virsh("domcapabilities", "--virttype", "kvm", check=False)
    detail = (probe.stderr.strip().splitlines() or ["no detail"])[-1]
    require_real(
        "KVM",
        probe.returncode == 0,
        f"/dev/kvm exists but libvirt cannot use it ({detail}); .ci/system-deps.sh gives group kvm, "
        "with libvirt-qemu in it, read/write access to it",
    )
    return harness


@pytest.fixture(scope="module")
def kvm(kvm_libvirtd: PrivateLibvirtd) -> Iterator[Driver]:
    """The libvirt driver spawning KVM domains on the private libvirtd; removes its test domains."""
    with powerdrivers.load_driver("libvirt", kvm_libvirtd.uri, domain_type="kvm") as loaded:
        yield loaded
        for reading in loaded.list_instances():
            if reading.name.startswith("pdtest-"):
                loaded.delete(reading.id)


@pytest.fixture(scope="module")
def linux_guest(
    kvm: Driver,
    kvm_libvirtd: PrivateLibvirtd,
    guest_image: GuestImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> LinuxGuest:
    """The real Linux guest on KVM, booted once for the module (each boot is slow under nested KVM)."""
    if _kvm_module() == "kvm_pvm":
        # A fact of the host that no change of ours alters, so a skip with the reason even under
        # CI=true; on a host with kvm_intel or kvm_amd these tests run, and must pass.
        pytest.skip(
            "this host's KVM is PVM (the kvm_pvm module: no hardware virtualisation), which runs only "
            "guest kernels built for PVM; Debian's stock kernel stops on its first emulated instruction "
            "('KVM internal error'). The OS-less KVM tests and the kit on KVM still run here"
        )
    console = tmp_path_factory.mktemp("kvm-guest") / "console.log"
    guest = LinuxGuest(_name(), console)
    kvm.spawn(linux_guest_spec(guest_image, guest.name, console))
    _wait_until_ready(kvm, kvm_libvirtd, guest, 0)
    return guest


def _kvm_module() -> str | None:
    """Which KVM the host kernel runs: kvm_intel or kvm_amd (hardware), kvm_pvm (software), or none."""
    for module in ("kvm_intel", "kvm_amd", "kvm_pvm"):
        if Path("/sys/module", module).exists():
            return module
    return None


def _wait_until_ready(kvm: Driver, harness: PrivateLibvirtd, guest: LinuxGuest, offset: int) -> None:
    """Wait for the ready marker after byte ``offset`` of the console; stop early if KVM gave up.

    QEMU pauses a guest whose instruction KVM could not run ("KVM internal error" in its log):
    then this machine's KVM cannot run the guest, which is a failure under CI=true.
    """
    deadline = time.monotonic() + BOOT_TIMEOUT
    while READY_MARKER.encode() not in guest.console.read_bytes()[offset:]:
        if kvm.get_instance(guest.name).power_state is PowerState.PAUSED:
            log = harness.qemu_log(guest.name).read_text(errors="replace").splitlines()
            errors = [line.strip() for line in log if "KVM internal error" in line]
            assert errors, f"{guest.name} paused while booting, not by KVM: {log[-1:]}"
            require_real(
                "a KVM that runs the Linux test guest",
                False,
                f"KVM stopped {guest.name} before it booted ({errors[-1]}; QEMU's register dump goes to "
                f"{harness.log_dir / 'qemu' / f'{guest.name}.log'})",
            )
        assert time.monotonic() < deadline, f"{READY_MARKER} not on the console within {BOOT_TIMEOUT:g} s"
        time.sleep(0.5)


def _ready(kvm: Driver, harness: PrivateLibvirtd, guest: LinuxGuest) -> None:
    """Boot the guest again if a test before left it off, and wait until it handles ACPI."""
    if kvm.get_instance(guest.name).power_state is PowerState.RUNNING:
        return
    offset = guest.console.stat().st_size
    kvm.start(guest.name)
    _wait_until_ready(kvm, harness, guest, offset)


def _assert_on_kvm(harness: PrivateLibvirtd, name: str) -> None:
    """The domain's QEMU really runs with KVM acceleration, not TCG."""
    reply = harness.virsh("qemu-monitor-command", name, "--hmp", "info kvm").stdout.strip()
    assert reply == "kvm support: enabled", reply


def test_a_kvm_guest_without_an_os_ignores_acpi_and_is_forced_off(
    kvm: Driver, kvm_libvirtd: PrivateLibvirtd
) -> None:
    name = _name()
    assert kvm.spawn(InstanceSpec(name, memory_mib=64)).power_state is PowerState.RUNNING
    _assert_on_kvm(kvm_libvirtd, name)
    result = kvm.shutdown(name, timeout=2, retry_interval=0.5)
    assert result.outcome is Outcome.FORCED
    assert 2 <= result.elapsed_s < 30
    assert (result.reading.power_state, result.reading.native_reason) == (PowerState.SHUTOFF, "destroyed")
    kvm.delete(name)


def test_a_real_linux_guest_on_kvm_honours_a_soft_reboot(
    kvm: Driver, kvm_libvirtd: PrivateLibvirtd, linux_guest: LinuxGuest
) -> None:
    _ready(kvm, kvm_libvirtd, linux_guest)
    _assert_on_kvm(kvm_libvirtd, linux_guest.name)
    offset = linux_guest.console.stat().st_size
    recorder = EventRecorder()
    with kvm.subscribe(recorder):
        result = kvm.reboot(linux_guest.name, timeout=SHUTDOWN_TIMEOUT)
        rebooted = recorder.wait_for_event(kind=EventKind.REBOOTED, name=linux_guest.name)
    assert result.outcome is Outcome.GRACEFUL
    assert rebooted.caused_by_operation is Operation.REBOOT
    # The guest really came back: it boots to the ready marker again.
    _wait_until_ready(kvm, kvm_libvirtd, linux_guest, offset)
    assert not [e for e in recorder.events if e.kind is EventKind.STOPPED and e.name == linux_guest.name]


def test_a_real_linux_guest_on_kvm_shuts_down_gracefully(
    kvm: Driver, kvm_libvirtd: PrivateLibvirtd, linux_guest: LinuxGuest
) -> None:
    _ready(kvm, kvm_libvirtd, linux_guest)
    recorder = EventRecorder()
    with kvm.subscribe(recorder):
        result = kvm.shutdown(linux_guest.name, timeout=SHUTDOWN_TIMEOUT, retry_interval=10)
        stopped = recorder.wait_for_event(kind=EventKind.STOPPED, name=linux_guest.name)
    assert result.outcome is Outcome.GRACEFUL
    assert result.elapsed_s < SHUTDOWN_TIMEOUT
    assert (result.reading.power_state, result.reading.native_reason) == (PowerState.SHUTOFF, "shutdown")
    assert stopped.caused_by_operation is Operation.SHUTDOWN
    assert stopped.native_reason == "shutdown"


def test_the_conformance_kit_passes_on_kvm_with_an_os_less_guest(
    pytester: pytest.Pytester, kvm_libvirtd: PrivateLibvirtd
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "libvirt", "--powerdrivers-uri", kvm_libvirtd.uri,
        "--powerdrivers-option", "domain_type=kvm", "--powerdrivers-spawn",
        "--powerdrivers-spec", "memory_mib=64", "--powerdrivers-timeout", "2",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 50
