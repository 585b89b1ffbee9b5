"""The power keeper (issue 12): 1. steady-state resync against the driver's own listing, with no
database write; 3. crash event to restart issued, under ``always``, first failure (no backoff)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from benchkit import median, ms, paired, percentile, record
from libvirt_support.nodes import RUNSTATES, node_xml
from sqlalchemy import event

import powerdrivers
from powerdrivers import Driver, Event, EventKind, Operation, PowerState
from powerdrivers.keeper import Keeper, KeeperSettings, Policy, SqlStore

INSTANCES = 10_000
RESYNC_ROUNDS = 15
TARGET_RESYNC_RATIO = 1.5
CRASH_ROUNDS = 200
TARGET_RESTART_P99_MS = 500.0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """A fresh SQLite store, as the keeper's default is."""
    opened = SqlStore(f"sqlite:///{tmp_path / 'keeper.db'}")
    try:
        yield opened
    finally:
        opened.close()


class _WriteCounter:
    """Counts the SQL statements that write, while installed on the store's engine."""

    def __init__(self, store: SqlStore) -> None:
        self._engine = store._engine
        self.writes = 0

    def _count(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
            self.writes += 1

    def __enter__(self) -> _WriteCounter:
        event.listen(self._engine, "before_cursor_execute", self._count)
        return self

    def __exit__(self, *_: object) -> None:
        event.remove(self._engine, "before_cursor_execute", self._count)


@pytest.fixture(params=["fake", "libvirt-test"])
def fleet(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, Driver]]:
    """A driver with INSTANCES instances: the fake in memory, or libvirt's test driver on node XML."""
    if request.param == "fake":
        with powerdrivers.load_driver("fake", seed="empty", instances=INSTANCES) as driver:
            yield "fake (in memory)", driver
        return
    states = list(RUNSTATES)
    node = tmp_path / "node.xml"
    node.write_text(node_xml([(f"vm-{i:05d}", states[i % len(states)]) for i in range(INSTANCES)]))
    with powerdrivers.load_driver("libvirt", f"test://{node}") as driver:
        yield "libvirt test driver", driver


@pytest.mark.benchmark(group="K1 keeper resync")
def bench_keeper_steady_state_resync(benchmark: Any, store: SqlStore, fleet: tuple[str, Driver]) -> None:
    """A full resync that finds nothing changed, against the driver's list_instances() alone."""
    label, driver = fleet
    settings = KeeperSettings.from_options(resync_interval=3600, poll_interval=60)
    with (
        Keeper(store, {"bench": driver}, settings) as keeper,
        _WriteCounter(store) as counter,
    ):
        rounds = paired(
            benchmark,
            lambda: keeper.resync(timeout=600),
            {"list": driver.list_instances},
            rounds=RESYNC_ROUNDS,
        )
    ratio = median(rounds.ratios("list"))
    record(
        benchmark,
        f"K1/{driver.name}",
        f"keeper: steady-state resync of {INSTANCES:,} instances ({label}) ÷ the driver's list_instances()",
        ratio,
        "x",
        target=("<=", TARGET_RESYNC_RATIO),
        detail=(
            f"resync {ms(median(rounds.subject))}, list_instances {ms(median(rounds.baselines['list']))} "
            f"(medians of {len(rounds.subject)} rounds); {counter.writes} database writes"
        ),
        raw={"instances": INSTANCES, "writes": counter.writes, "rounds": len(rounds.subject)},
    )
    assert counter.writes == 0


@pytest.mark.benchmark(group="K3 keeper restart")
def bench_keeper_crash_to_restart(benchmark: Any, store: SqlStore) -> None:
    """From a crash (the fake's crash() returning) to the keeper's start reaching the hypervisor."""
    # stable_after 0: every crash is a first failure, so no backoff is part of the figure.
    settings = KeeperSettings.from_options(resync_interval=3600, poll_interval=60, stable_after=0)
    restarted = threading.Event()
    restarted_at: list[float] = []
    crashed_at: list[float] = []
    latencies: list[float] = []

    def listener(heard: Event) -> None:
        if heard.kind is EventKind.STARTED and heard.caused_by_operation is Operation.START:
            restarted_at.append(time.perf_counter())
            restarted.set()

    with powerdrivers.load_driver("fake") as driver, Keeper(store, {"bench": driver}, settings) as keeper:
        target = next(r.id for r in driver.list_instances() if r.power_state is PowerState.RUNNING)
        keeper.set_policy(target, Policy.ALWAYS, "bench")

        def crash() -> None:
            driver.crash(target)  # type: ignore[attr-defined]
            crashed_at.append(time.perf_counter())

        def prepare() -> None:
            restarted.clear()
            restarted_at.clear()

        def collect() -> None:
            assert restarted.wait(10), "the keeper did not restart the instance within 10 s"
            latencies.append(max(0.0, restarted_at[0] - crashed_at[-1]))
            _settle(keeper, driver, target)

        with driver.subscribe(listener):
            paired(
                benchmark, crash, {}, rounds=CRASH_ROUNDS, prepare=prepare, after=collect,
                warmup=False, collect=False,
            )  # fmt: skip
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    record(
        benchmark,
        "K3/fake",
        "keeper: crash event → restart issued (policy always, first failure), p99",
        p99 * 1000,
        "ms",
        target=("<=", TARGET_RESTART_P99_MS),
        detail=f"p50 {ms(p50)}, max {ms(max(latencies))}; {len(latencies)} crashes (fake, SQLite store)",
        raw={"p50_s": p50, "p99_s": p99, "samples": len(latencies)},
    )


def _settle(keeper: Keeper, driver: Driver, instance: str) -> None:
    """Wait until the keeper has closed its action, so the next crash finds nothing in flight."""
    deadline = time.monotonic() + 10
    while keeper.view(instance).in_flight is not None or driver.get_instance(instance).transition is not None:
        assert time.monotonic() < deadline, "the restart did not end within 10 s"
        time.sleep(0.005)
