"""1. Listing N libvirt domains with canonical states: the driver vs raw libvirt-python.

libvirt's test driver serves N domains from generated node XML (every run state, round robin),
in process (``test:///node.xml``) and over libvirtd's RPC (``test+unix:///node.xml``). On the
driver's own connection, each round times ``list_instances()``, the raw bulk call it makes
(``getAllDomainStats(VIR_DOMAIN_STATS_STATE)``), and Nova's per-domain loop
(``listAllDomains()`` then ``state()`` on each domain: one round trip per domain over RPC). Two
floors show what naming each domain costs: through libvirt-python's public API, the bulk call
plus each domain's ``UUIDString()`` and ``name()``; through its C module ``libvirtmod``, the
same bulk call plus each handle's raw UUID, name and free, the least a listing through
libvirt-python's own modules can do. (The driver lists through a C module of its own; a
last row times its listing where that module was not built, through libvirt-python's
classes.)
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import libvirt
import libvirtmod
import pytest
from benchkit import median, ms, note_libvirt_versions, paired, record
from libvirt_support.nodes import RUNSTATES, node_xml
from powerdrivers_libvirt import LibvirtDriver
from powerdrivers_libvirt._listing import DomainLister

import powerdrivers

#: Rounds per size: each round runs all three listings once.
ROUNDS = {1000: 21, 10000: 11}
TARGET_RAW = 1.15
STATE = libvirt.VIR_DOMAIN_STATS_STATE
TARGET_NOVA_RPC = 10.0


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Node XML files with 1,000 and 10,000 domains in every run state."""
    folder = tmp_path_factory.mktemp("nodes")
    folder.chmod(0o755)
    states = list(RUNSTATES)
    paths = {}
    for count in ROUNDS:
        path = folder / f"node-{count}.xml"
        path.write_text(node_xml([(f"vm-{i:05d}", states[i % len(states)]) for i in range(count)]))
        path.chmod(0o644)
        paths[count] = path
    return paths


@pytest.fixture
def driver(request: pytest.FixtureRequest, nodes: dict[int, Path]) -> Iterator[LibvirtDriver]:
    """The libvirt driver, loaded by name, on the node of the test's size and transport."""
    count, scheme = request.param
    if scheme == "test+unix":
        request.getfixturevalue("libvirtd")
    uri = f"{scheme}://{nodes[count]}"
    if scheme == "test+unix":
        # libvirtd must really serve the test driver on this node, not just answer.
        listed = subprocess.run(
            ["virsh", "-c", uri, "list", "--all", "--name"],
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.split()) == count
    with powerdrivers.load_driver("libvirt", uri) as loaded:
        assert isinstance(loaded, LibvirtDriver)
        yield loaded


@pytest.mark.benchmark(group="1 listing")
@pytest.mark.parametrize(
    "driver",
    [(1000, "test"), (1000, "test+unix"), (10000, "test"), (10000, "test+unix")],
    ids=["1000-in-process", "1000-rpc", "10000-in-process", "10000-rpc"],
    indirect=True,
)
def bench_list_instances(benchmark: Any, driver: LibvirtDriver) -> None:
    conn = driver._connection.locked(lambda handle: handle.conn)
    count = len(conn.listAllDomains(0))
    over_rpc = conn.getURI().startswith("test+unix")
    if over_rpc:
        note_libvirt_versions(conn, "libvirtd")

    def with_driver() -> None:
        readings = driver.list_instances()
        assert len(readings) == count

    def raw_bulk() -> None:
        records = conn.getAllDomainStats(STATE)
        assert len(records) == count

    def floor() -> None:
        # Naming each domain through the public API: the bulk call, then the domain's UUID
        # and name, which libvirt-python hands out one call at a time.
        named = [(domain.UUIDString(), domain.name()) for domain, _ in conn.getAllDomainStats(STATE)]
        assert len(named) == count

    def c_floor() -> None:
        # The same through libvirtmod: no Python virDomain per domain, the raw UUID, and the
        # free that virDomain.__del__ would make. No listing through libvirt-python does less.
        records = libvirtmod.virConnectGetAllDomainStats(conn._o, STATE, 0)
        named = [(libvirtmod.virDomainGetUUID(h), libvirtmod.virDomainGetName(h)) for h, _ in records]
        for handle, _ in records:
            libvirtmod.virDomainFree(handle)
        assert len(named) == count

    without_c_module = DomainLister(driver._reading_of, None)

    def public_path() -> None:
        readings = without_c_module.read_all(conn)
        assert len(readings) == count

    def nova_loop() -> None:
        states = [domain.state() for domain in conn.listAllDomains(0)]
        assert len(states) == count

    rounds = paired(
        benchmark,
        with_driver,
        {"raw": raw_bulk, "floor": floor, "c_floor": c_floor, "public": public_path, "nova": nova_loop},
        rounds=ROUNDS[count],
    )
    without_c_module.close()
    raw = {
        "driver_s": median(rounds.subject),
        "raw_s": median(rounds.baselines["raw"]),
        "floor_s": median(rounds.baselines["floor"]),
        "c_floor_s": median(rounds.baselines["c_floor"]),
        "public_s": median(rounds.baselines["public"]),
        "nova_s": median(rounds.baselines["nova"]),
        "rounds": len(rounds.subject),
    }
    where = "over libvirtd RPC" if over_rpc else "in process"
    medians = f"driver {ms(raw['driver_s'])}, getAllDomainStats {ms(raw['raw_s'])}"
    vs_raw = median(rounds.ratios("raw"))
    record(
        benchmark,
        f"1/{count:05d}/{'b-rpc' if over_rpc else 'a-local'}/a",
        f"list {count:,} domains {where}: driver ÷ raw getAllDomainStats",
        vs_raw,
        "x",
        target=("<=", TARGET_RAW),
        detail=f"{medians}; {len(rounds.subject)} rounds",
        raw=raw,
    )
    for suffix, name, label, detail in (
        (
            "b",
            "floor",
            "getAllDomainStats + UUIDString() + name() per domain (public API)",
            "naming each domain through libvirt-python's classes",
        ),
        (
            "b2",
            "c_floor",
            "libvirtmod's bulk call + raw UUID, name and free per handle",
            "the least a listing through libvirt-python's own modules can do",
        ),
    ):
        record(
            benchmark,
            f"1/{count:05d}/{'b-rpc' if over_rpc else 'a-local'}/{suffix}",
            f"list {count:,} domains {where}: floor, {label} ÷ raw getAllDomainStats",
            median(rounds.between(name, "raw")),
            "x",
            detail=f"{ms(raw[f'{name}_s'])}; {detail}",
            raw=raw,
        )
    record(
        benchmark,
        f"1/{count:05d}/{'b-rpc' if over_rpc else 'a-local'}/a2",
        f"list {count:,} domains {where}: driver without its C module ÷ raw getAllDomainStats",
        median(rounds.between("public", "raw")),
        "x",
        detail=f"{ms(raw['public_s'])}; the fallback through libvirt-python's classes",
        raw=raw,
    )
    speedup = median(rounds.ratios("nova", baseline_over_subject=True))
    record(
        benchmark,
        f"1/{count:05d}/{'b-rpc' if over_rpc else 'a-local'}/c",
        f"list {count:,} domains {where}: listAllDomains + state() loop ÷ driver",
        speedup,
        "x",
        target=(">=", TARGET_NOVA_RPC) if over_rpc else None,
        detail=f"per-domain loop {ms(raw['nova_s'])}, driver {ms(raw['driver_s'])}",
        raw=raw,
    )
