"""2 and 3. The libvirt driver on a real QEMU Linux guest: event latency and graceful shutdown.

The guest is the test suite's (Debian's cloud kernel with a busybox initramfs whose acpid powers
it off on the ACPI button), spawned through the driver on ``qemu:///system`` with
``domain_type=qemu`` (TCG). A raw libvirt-python lifecycle callback on a connection of its own
tells when libvirt reported the domain off.

Where ``/dev/kvm`` exists (and as root), the same shutdown rounds run with ``domain_type=kvm`` on
a private libvirtd of the test harness's (which probes KVM when it starts), and the event
latency is measured on a KVM guest without an OS. Without KVM those rows are not measured, and
the table says why.
"""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libvirt
import pytest
from benchkit import (
    FACTS,
    QEMU_URI,
    median,
    ms,
    note_libvirt_versions,
    paired,
    pause_unpause_latencies,
    record,
    record_latency,
)
from libvirt_support.guest_image import READY_MARKER, GuestImage
from libvirt_support.libvirtd import LibvirtdError, LibvirtdHarness, PrivateLibvirtd
from libvirt_support.smoke_guest import wait_for_marker
from libvirt_support.specs import linux_guest_spec
from powerdrivers_libvirt import LibvirtDriver
from powerdrivers_libvirt._eventloop import ensure_event_loop

import powerdrivers
from powerdrivers import InstanceSpec, Outcome, PowerDriversError, PowerState

BOOT_TIMEOUT = 60.0
SHUTDOWN_ROUNDS = 5
KVM_BOOT_TIMEOUT = 300.0
KVM_SHUTDOWN_TIMEOUT = 120
KVM_SHUTDOWN_ROUNDS = 3
EVENT_ROUNDS = 200
TARGET_SHUTDOWN_MS = 50.0
TARGET_EVENT_P99_MS = 20.0
POLL_INTERVAL_S = 1.0


@dataclass
class Guest:
    """The running benchmark guest."""

    name: str
    console: Path
    boot_timeout: float = BOOT_TIMEOUT


class LifecycleWatch:
    """A raw libvirt-python lifecycle callback for one domain, on a connection of its own."""

    def __init__(self, name: str, uri: str = QEMU_URI) -> None:
        ensure_event_loop()
        self.name = name
        self.conn = libvirt.open(uri)
        self._changed = threading.Condition()
        self._stopped_at: float | None = None
        self._callback = self.conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._on_event, None
        )

    def _on_event(self, _conn: Any, domain: Any, event: int, _detail: int, _opaque: object) -> None:
        now = time.perf_counter()
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED and domain.name() == self.name:
            with self._changed:
                self._stopped_at = now
                self._changed.notify_all()

    def arm(self) -> None:
        """Forget the last STOPPED event."""
        with self._changed:
            self._stopped_at = None

    def stopped_at(self, timeout: float = 10.0) -> float:
        """When (``perf_counter``) libvirt reported the domain stopped; waits up to ``timeout``."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._stopped_at is not None, timeout):
                raise AssertionError(f"no STOPPED lifecycle event for {self.name} within {timeout} s")
            assert self._stopped_at is not None
            return self._stopped_at

    def close(self) -> None:
        """Deregister and close."""
        with suppress(libvirt.libvirtError):
            self.conn.domainEventDeregisterAny(self._callback)
        self.conn.close()


@pytest.fixture(scope="module")
def qemu(libvirtd: LibvirtdHarness) -> Iterator[LibvirtDriver]:
    """The libvirt driver on qemu:///system, loaded by name."""
    with powerdrivers.load_driver("libvirt", QEMU_URI, domain_type="qemu") as loaded:
        assert isinstance(loaded, LibvirtDriver)
        note_libvirt_versions(loaded._connection.locked(lambda handle: handle.conn), "libvirtd")
        FACTS["QEMU guest"] = "TCG (domain_type=qemu), 1 VCPU, 256 MiB, direct kernel boot"
        yield loaded


@pytest.fixture(scope="module")
def guest(
    qemu: LibvirtDriver, guest_image: GuestImage, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guest]:
    """The real Linux guest, spawned through the driver, booted to its READY marker; deleted after."""
    folder = tmp_path_factory.mktemp("guest")
    folder.chmod(0o755)
    console = folder / "console.log"
    name = f"pdbench-{uuid.uuid4().hex[:8]}"
    spec = linux_guest_spec(guest_image, name, console)
    try:
        qemu.spawn(spec)
        wait_for_marker(console, READY_MARKER, 0, BOOT_TIMEOUT)
        yield Guest(name, console)
    finally:
        with suppress(PowerDriversError):
            qemu.delete(name)


def _boot(qemu: LibvirtDriver, guest: Guest) -> None:
    """Start the guest if it is off and wait until it handles ACPI."""
    if qemu.get_instance(guest.name).power_state is PowerState.RUNNING:
        return
    offset = guest.console.stat().st_size
    qemu.start(guest.name)
    wait_for_marker(guest.console, READY_MARKER, offset, guest.boot_timeout)


@pytest.fixture(scope="module")
def kvm_libvirtd() -> Iterator[PrivateLibvirtd]:
    """A private libvirtd (the test harness's) that can run KVM guests; skips where none can."""
    if not Path("/dev/kvm").exists():
        pytest.skip("no /dev/kvm on this machine")
    if os.geteuid() != 0:
        pytest.skip("a private libvirtd needs root")
    try:
        harness = PrivateLibvirtd().start()
    except LibvirtdError as error:
        pytest.skip(f"no private libvirtd: {error}")
    try:
        probe = harness.virsh("domcapabilities", "--virttype", "kvm", check=False)
        if probe.returncode != 0:
            pytest.skip(f"libvirt cannot use /dev/kvm: {probe.stderr.strip()[-200:]}")
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="module")
def kvm(kvm_libvirtd: PrivateLibvirtd) -> Iterator[LibvirtDriver]:
    """The libvirt driver spawning KVM domains on the private libvirtd."""
    with powerdrivers.load_driver("libvirt", kvm_libvirtd.uri, domain_type="kvm") as loaded:
        assert isinstance(loaded, LibvirtDriver)
        FACTS["KVM guest"] = (
            "KVM (domain_type=kvm) on a private libvirtd, 1 VCPU, 256 MiB, direct kernel boot"
        )
        yield loaded


@pytest.fixture(scope="module")
def kvm_guest(
    kvm: LibvirtDriver,
    kvm_libvirtd: PrivateLibvirtd,
    guest_image: GuestImage,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guest]:
    """The real Linux guest under KVM; skips, saying why, if KVM stops it before it boots."""
    folder = tmp_path_factory.mktemp("kvm-guest")
    folder.chmod(0o755)
    guest = Guest(f"pdbench-{uuid.uuid4().hex[:8]}", folder / "console.log", KVM_BOOT_TIMEOUT)
    try:
        kvm.spawn(linux_guest_spec(guest_image, guest.name, guest.console))
        deadline = time.monotonic() + KVM_BOOT_TIMEOUT
        while READY_MARKER.encode() not in guest.console.read_bytes():
            if kvm.get_instance(guest.name).power_state is PowerState.PAUSED:
                log = kvm_libvirtd.qemu_log(guest.name).read_text(errors="replace")
                why = [line.strip() for line in log.splitlines() if "KVM internal error" in line]
                pytest.skip(f"KVM stopped the Linux guest while it booted ({why[-1] if why else 'paused'})")
            assert time.monotonic() < deadline, f"the KVM guest did not boot within {KVM_BOOT_TIMEOUT:g} s"
            time.sleep(0.5)
        yield guest
    finally:
        with suppress(PowerDriversError):
            kvm.delete(guest.name)


@pytest.mark.benchmark(group="3 event latency")
def bench_libvirt_event_latency(benchmark: Any, qemu: LibvirtDriver, guest: Guest) -> None:
    """From pause()/unpause() returning to the listener's call, on the running guest."""
    _boot(qemu, guest)
    latencies = pause_unpause_latencies(benchmark, qemu, guest.name, rounds=EVENT_ROUNDS, wait_s=5.0)
    record_latency(benchmark, "3/a", "libvirt (QEMU guest, pause/unpause)", latencies, TARGET_EVENT_P99_MS)


@pytest.mark.benchmark(group="3 event latency")
def bench_libvirt_event_latency_on_kvm(benchmark: Any, kvm: LibvirtDriver) -> None:
    """The same on a KVM guest without an OS (pause and unpause need no guest cooperation)."""
    name = f"pdbench-{uuid.uuid4().hex[:8]}"
    kvm.spawn(InstanceSpec(name, memory_mib=64))
    try:
        latencies = pause_unpause_latencies(benchmark, kvm, name, rounds=EVENT_ROUNDS, wait_s=5.0)
    finally:
        kvm.delete(name)
    record_latency(
        benchmark, "3/b", "libvirt (KVM guest without an OS, pause/unpause)", latencies, TARGET_EVENT_P99_MS
    )


@pytest.mark.benchmark(group="2 graceful shutdown")
def bench_graceful_shutdown(benchmark: Any, qemu: LibvirtDriver, guest: Guest) -> None:
    """From libvirt's STOPPED event to shutdown() returning, beside a 1 s polling loop."""
    _shutdown_rounds(benchmark, qemu, guest, QEMU_URI, ("2/a", "2/b"), "QEMU", SHUTDOWN_ROUNDS, 30)


@pytest.mark.benchmark(group="2 graceful shutdown")
def bench_graceful_shutdown_on_kvm(
    benchmark: Any, kvm: LibvirtDriver, kvm_libvirtd: PrivateLibvirtd, kvm_guest: Guest
) -> None:
    """The same rounds with the guest under KVM."""
    _shutdown_rounds(
        benchmark, kvm, kvm_guest, kvm_libvirtd.uri, ("2/c", "2/d"), "KVM", KVM_SHUTDOWN_ROUNDS,
        KVM_SHUTDOWN_TIMEOUT,
    )  # fmt: skip


def _shutdown_rounds(
    benchmark: Any,
    driver: LibvirtDriver,
    guest: Guest,
    uri: str,
    keys: tuple[str, str],
    hypervisor: str,
    rounds_wanted: int,
    timeout: int,
) -> None:
    """Paired rounds of the driver's shutdown() and a 1 s polling loop; records two rows."""
    watch = LifecycleWatch(guest.name, uri)
    returned_at: list[float] = []
    delays: list[float] = []
    elapsed: list[float] = []

    def shutdown() -> None:
        result = driver.shutdown(guest.name, timeout=timeout, retry_interval=5)
        returned_at.append(time.perf_counter())
        assert result.outcome is Outcome.GRACEFUL, result
        elapsed.append(result.elapsed_s)

    def prepare() -> None:
        _boot(driver, guest)
        watch.arm()

    def collect() -> None:
        delays.append(returned_at[-1] - watch.stopped_at(timeout=timeout))

    def polling() -> float:
        """What a 1 s polling loop (Nova's) adds after the event: request, then check each second."""
        _boot(driver, guest)
        watch.arm()
        domain = watch.conn.lookupByName(guest.name)
        domain.shutdown()
        deadline = time.perf_counter() + timeout
        while domain.state()[0] != libvirt.VIR_DOMAIN_SHUTOFF:
            assert time.perf_counter() < deadline, f"the guest did not shut down within {timeout} s"
            time.sleep(POLL_INTERVAL_S)
        return time.perf_counter() - watch.stopped_at(timeout=timeout)

    try:
        rounds = paired(
            benchmark,
            shutdown,
            {"polling": polling},
            rounds=rounds_wanted,
            prepare=prepare,
            after=collect,
            warmup=False,
        )
    finally:
        watch.close()
    driver_delay = median(delays)
    polling_delay = median(rounds.baselines["polling"])
    raw = {
        "driver_delay_s": driver_delay,
        "polling_delay_s": polling_delay,
        "shutdown_elapsed_s": median(elapsed),
        "rounds": len(delays),
    }
    record(
        benchmark,
        keys[0],
        f"graceful shutdown of the {hypervisor} Linux guest: STOPPED event → shutdown() returns",
        driver_delay * 1000,
        "ms",
        target=("<=", TARGET_SHUTDOWN_MS),
        detail=(
            f"max {ms(max(delays))}; the whole shutdown() took {ms(median(elapsed))}; {len(delays)} rounds"
        ),
        raw=raw,
    )
    record(
        benchmark,
        keys[1],
        "the same with a 1 s polling loop of state(): STOPPED event → loop notices",
        polling_delay * 1000,
        "ms",
        detail=(
            f"{polling_delay / driver_delay:.0f} times the driver's delay; from "
            f"{ms(min(rounds.baselines['polling']))} to {ms(max(rounds.baselines['polling']))} "
            f"(the loop's phase against the guest's); {len(rounds.baselines['polling'])} rounds"
        ),
        raw=raw,
    )
