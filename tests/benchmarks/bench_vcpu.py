"""7. Sampling the VCPU statistics of every running QEMU domain: the sampler vs the raw bulk call.

50 small OS-less QEMU domains (TCG, 1 VCPU, 32 MiB; a boot sector that halts, so they leave the
host's CPUs alone) run on ``qemu:///system``. Each round times one ``VcpuSampler.sample()`` (one
``getAllDomainStats(VIR_DOMAIN_STATS_VCPU)`` over libvirtd's RPC, then each domain's counters
and statistics since the previous round) and, on the driver's own connection, the raw bulk call
alone.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import libvirt
import pytest
from benchkit import FACTS, QEMU_URI, median, ms, note_libvirt_versions, paired, record
from libvirt_support.boot_sector import HALT, boot_disk, spawn_guest
from libvirt_support.libvirtd import LibvirtdHarness
from powerdrivers_libvirt import LibvirtDriver

import powerdrivers
from powerdrivers import PowerDriversError, VcpuSampler

DOMAINS = 50
ROUNDS = 51
TARGET_RAW = 1.2
VCPU = libvirt.VIR_DOMAIN_STATS_VCPU
RUNNING = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_RUNNING


@pytest.fixture(scope="module")
def fleet(libvirtd: LibvirtdHarness) -> Iterator[LibvirtDriver]:
    """The libvirt driver on qemu:///system with DOMAINS halting OS-less guests running; deleted after."""
    names: list[str] = []
    with (
        tempfile.TemporaryDirectory(prefix="powerdrivers-bench-vcpu-") as directory,
        powerdrivers.load_driver("libvirt", QEMU_URI, domain_type="qemu") as loaded,
    ):
        assert isinstance(loaded, LibvirtDriver)
        Path(directory).chmod(0o755)
        try:
            for _ in range(DOMAINS):
                names.append(spawn_guest(loaded, boot_disk(Path(directory), HALT), prefix="pdbench"))
            FACTS["VCPU sampling guests"] = f"{DOMAINS} OS-less TCG domains, 1 VCPU, 32 MiB, halted"
            yield loaded
        finally:
            for name in names:
                with suppress(PowerDriversError):
                    loaded.delete(name)


@pytest.mark.benchmark(group="7 vcpu sampling")
def bench_vcpu_sampling(benchmark: Any, fleet: LibvirtDriver) -> None:
    conn = fleet._connection.locked(lambda handle: handle.conn)
    note_libvirt_versions(conn, "libvirtd")
    running = len(conn.getAllDomainStats(VCPU, RUNNING))
    assert running >= DOMAINS
    sampler = VcpuSampler(fleet)
    sampler.sample()

    def sample() -> None:
        assert len(sampler.sample()) >= DOMAINS

    def raw_bulk() -> None:
        assert len(conn.getAllDomainStats(VCPU, RUNNING)) >= DOMAINS

    rounds = paired(benchmark, sample, {"raw": raw_bulk}, rounds=ROUNDS)
    raw = {
        "sampler_s": median(rounds.subject),
        "raw_s": median(rounds.baselines["raw"]),
        "domains": running,
        "rounds": len(rounds.subject),
    }
    record(
        benchmark,
        "7/a",
        f"sample the VCPUs of {running} running QEMU domains: VcpuSampler.sample() ÷ raw getAllDomainStats",
        median(rounds.ratios("raw")),
        "x",
        target=("<=", TARGET_RAW),
        detail=f"sampler {ms(raw['sampler_s'])}, getAllDomainStats(VCPU) {ms(raw['raw_s'])}; {ROUNDS} rounds",
        raw=raw,
    )
