"""3 and 5. The fake driver, as CI suites use it: event latency and state transitions per second."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from benchkit import median, ms, paired, pause_unpause_latencies, record, record_latency

import powerdrivers
from powerdrivers import Driver

EVENT_ROUNDS = 2000
TRANSITION_ROUNDS = 15
#: Transitions per round (pause and unpause, alternately).
BATCH = 2000
TARGET_EVENT_P99_MS = 1.0
TARGET_RATE = 50_000.0


@pytest.fixture
def fake(request: pytest.FixtureRequest) -> Iterator[Driver]:
    """The fake driver, loaded by name, in memory, with generated instances (4 unless parametrised)."""
    count = getattr(request, "param", 4)
    with powerdrivers.load_driver("fake", seed="empty", instances=count) as loaded:
        yield loaded


def _running(driver: Driver) -> str:
    return next(reading.name for reading in driver.list_instances() if reading.power_state.value == "running")


@pytest.mark.benchmark(group="3 event latency")
def bench_fake_event_latency(benchmark: Any, fake: Driver) -> None:
    """From pause()/unpause() returning to the listener's call."""
    name = _running(fake)
    latencies = pause_unpause_latencies(benchmark, fake, name, rounds=EVENT_ROUNDS, wait_s=1.0)
    record_latency(benchmark, "3/b", "fake (in memory, pause/unpause)", latencies, TARGET_EVENT_P99_MS)


@pytest.mark.benchmark(group="5 fake transitions")
@pytest.mark.parametrize(
    "fake", [4, 100, 10_000], ids=["4-instances", "100-instances", "10000-instances"], indirect=True
)
def bench_fake_transitions_per_second(benchmark: Any, fake: Driver) -> None:
    """Alternate pause() and unpause() on one instance, with no listener subscribed."""
    name = _running(fake)
    count = len(fake.list_instances())

    def transitions() -> None:
        for _ in range(BATCH // 2):
            fake.pause(name)
            fake.unpause(name)

    rounds = paired(benchmark, transitions, {}, rounds=TRANSITION_ROUNDS)
    rate = BATCH / median(rounds.subject)
    record(
        benchmark,
        f"5/{count:04d}",
        f"fake driver transitions per second (pause/unpause, in memory, {count} instances, no listener)",
        rate,
        "/s",
        target=(">=", TARGET_RATE),
        detail=(
            f"{ms(median(rounds.subject) / BATCH)} per transition; {BATCH:,} transitions a round, "
            f"{len(rounds.subject)} rounds"
        ),
        raw={
            "instances": count,
            "batch": BATCH,
            "median_round_s": median(rounds.subject),
            "rounds": len(rounds.subject),
        },
    )
