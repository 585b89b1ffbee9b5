"""VCPU statistics of real QEMU domains whose VCPUs do known things.

The guests are OS-less: a one-sector boot disk SeaBIOS runs, that either spins forever
(``jmp $``) or halts forever with interrupts on (``sti; hlt`` in a loop). Contention is made
deterministic by pinning the guest's VCPU thread to one host CPU that host spinner processes,
pinned with ``sched_setaffinity``, also use.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import libvirt
import pytest
from libvirt_support.boot_sector import HALT, SPIN, boot_disk, spawn_guest
from test_libvirt_kvm import kvm, kvm_libvirtd  # noqa: F401 - KVM guests, on a daemon that probed KVM

from powerdrivers import Driver, PowerState, VcpuSampler
from powerdrivers._cli import main


@pytest.fixture(scope="module")
def disks() -> Iterator[Path]:
    """A directory QEMU can read, which it may not under pytest's private temporary directories."""
    with tempfile.TemporaryDirectory(prefix="powerdrivers-vcpu-") as directory:
        Path(directory).chmod(0o755)
        yield Path(directory)


def contended_cpu() -> int:
    """The host CPU the tests crowd: the last one this process may use."""
    return max(os.sched_getaffinity(0))


def pin(uri: str, name: str, cpu: int) -> None:
    """Pin the domain's VCPU 0 to host ``cpu`` and its emulator threads to the others, if any."""
    count = os.cpu_count() or 1
    conn = libvirt.open(uri)
    try:
        domain = conn.lookupByName(name)
        domain.pinVcpu(0, tuple(n == cpu for n in range(count)))
        if count > 1:
            domain.pinEmulator(tuple(n != cpu for n in range(count)), libvirt.VIR_DOMAIN_AFFECT_LIVE)
    finally:
        conn.close()


@contextmanager
def spinners(cpu: int, count: int) -> Iterator[None]:
    """Run ``count`` host processes that spin on host ``cpu``."""
    code = f"import os\nos.sched_setaffinity(0, {{{cpu}}})\nwhile True:\n    pass\n"
    processes = [subprocess.Popen([sys.executable, "-c", code]) for _ in range(count)]
    try:
        time.sleep(0.2)  # let them start spinning
        yield
    finally:
        for process in processes:
            process.kill()
            process.wait()


def test_a_vcpu_contended_for_its_cpu_is_waiting_not_blocked(qemu: Driver, disks: Path) -> None:
    name = spawn_guest(qemu, boot_disk(disks, SPIN))
    cpu = contended_cpu()
    pin("qemu:///system", name, cpu)
    with spinners(cpu, 2):
        [stats] = qemu.vcpu_stats(name, window=3.0)
    # Three runnable threads share the CPU: the VCPU runs about a third and waits the rest.
    assert stats.waiting >= 0.25, stats
    assert stats.running + stats.waiting == pytest.approx(1.0, abs=0.1), stats
    assert stats.blocked <= 0.1, stats
    # TCG has no KVM statistics: what it cannot measure is None, not 0.
    assert (stats.halted, stats.halt_exits, stats.io_exits, stats.mmio_exits) == (None, None, None, None)


def test_a_spinning_vcpu_is_never_blocked(qemu: Driver, disks: Path) -> None:
    name = spawn_guest(qemu, boot_disk(disks, SPIN))
    [stats] = qemu.vcpu_stats(name, window=1.0)
    # However busy the host, the VCPU either runs or waits for a CPU.
    assert stats.running >= 0.2, stats
    assert stats.running + stats.waiting == pytest.approx(1.0, abs=0.1), stats


@pytest.fixture
def kvm_driver(request: pytest.FixtureRequest) -> Driver:
    """The libvirt driver spawning KVM domains (``kvm`` of test_libvirt_kvm.py)."""
    driver: Driver = request.getfixturevalue("kvm")
    return driver


def test_a_halted_kvm_vcpu_is_blocked_and_says_why(kvm_driver: Driver, disks: Path) -> None:
    name = spawn_guest(kvm_driver, boot_disk(disks, HALT))
    [stats] = kvm_driver.vcpu_stats(name, window=1.0)
    assert stats.blocked >= 0.8, stats
    assert stats.halted is not None and 0.8 <= stats.halted <= stats.blocked, stats
    assert stats.halt_exits is not None and stats.halt_exits > 0, stats
    # Measured, though a guest halting makes next to none.
    assert stats.io_exits is not None and stats.mmio_exits is not None, stats


def test_a_spinning_kvm_vcpu_is_not_halted(kvm_driver: Driver, disks: Path) -> None:
    name = spawn_guest(kvm_driver, boot_disk(disks, SPIN))
    [stats] = kvm_driver.vcpu_stats(name, window=1.0)
    assert stats.running + stats.waiting == pytest.approx(1.0, abs=0.1), stats
    assert stats.halted is not None and stats.halted <= 0.05, stats
    assert stats.halt_exits == 0.0, stats


def test_one_bulk_sample_covers_every_running_guest(qemu: Driver, disks: Path) -> None:
    spinning = spawn_guest(qemu, boot_disk(disks, SPIN))
    halting = spawn_guest(qemu, boot_disk(disks, HALT))
    sampler = VcpuSampler(qemu)
    primed = qemu.vcpu_counters()
    # One getAllDomainStats call: every reading carries the same moment.
    assert {spinning, halting} <= {reading.name for reading in primed}
    assert len({reading.taken_at_s for reading in primed}) == 1
    sampler.sample()
    time.sleep(1.0)
    sampled = {instance.name: instance for instance in sampler.sample()}
    [spin] = sampled[spinning].vcpus
    [halt] = sampled[halting].vcpus
    assert sampled[spinning].window_s >= 1.0
    assert spin.running + spin.waiting == pytest.approx(1.0, abs=0.1), spin
    assert halt.blocked >= 0.8, halt
    assert halt.halted is None, halt


def test_the_test_driver_has_no_kvm_counters_so_they_are_none(driver: Driver) -> None:
    readings = {reading.name: reading for reading in driver.vcpu_counters()}
    assert set(readings) == {r.name for r in driver.list_instances() if r.power_state is PowerState.RUNNING}
    for reading in readings.values():
        for counters in reading.vcpus:
            assert (counters.halted_ns, counters.halt_exits, counters.io_exits, counters.mmio_exits) == (
                None, None, None, None,
            )  # fmt: skip


def test_cli_stats_show_what_is_not_measured(node_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-d", "libvirt", "-c", node_uri, "-f", "json", "stats", "--all", "--window", "0.05"]) == 0
    sampled = json.loads(capsys.readouterr().out)
    assert [instance["name"] for instance in sampled["instances"]] == ["vm-running"]
    for vcpu in sampled["instances"][0]["vcpus"]:
        assert (vcpu["halted"], vcpu["halt_exits"], vcpu["io_exits"], vcpu["mmio_exits"]) == (
            None,
            None,
            None,
            None,
        )
    assert main(["-d", "libvirt", "-c", node_uri, "stats", "vm-running", "--window", "0.05"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[4:] == ["HALTED", "HALT/S", "IO/S", "MMIO/S"]
    assert rows and all(row.split()[4:] == ["-", "-", "-", "-"] for row in rows)
