"""The keeper samples the VCPUs of its hosts' running instances: stored, told, trimmed, never in the way."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, ClassVar

import pytest
from engine_support import QUICK, fake_host, running_keeper, wait_until
from powerdrivers_fake import FakeDriver, instance_id
from powerdrivers_fake._stats import _rates
from sqlalchemy import create_engine
from store_support import both_databases

from powerdrivers import Capability, HypervisorError, InvalidOption
from powerdrivers.keeper import ActionStatus, Keeper, KeeperError, KeeperSettings, SqlStore, VcpuSample
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.keeper._schema import vcpu_samples

WEB1 = instance_id("web-1")
#: The demo's running instances and their VCPUs; cache-1 is paused and batch-7 off.
RUNNING = {WEB1: 2, instance_id("web-2"): 2, instance_id("legacy-db"): 4}
NOT_RUNNING = (instance_id("cache-1"), instance_id("batch-7"))
#: The instance a second host (``second_host``) runs.
OTHER = instance_id("vm-00000")
LONG_AGO = timedelta(hours=1)
#: A retention short enough for the tests' intervals (a day at 0.05 s would be too many samples).
RETENTION = {"vcpu_retention": 60}


class NoVcpuFake(FakeDriver):
    """The fake hypervisor, as a driver without VCPU statistics would be (no bulk counters)."""

    name: ClassVar[str] = "fake"
    capabilities: ClassVar[frozenset[Capability]] = FakeDriver.capabilities - {Capability.VCPU_STATS}


def second_host() -> FakeDriver:
    """A fake host with one running instance (``OTHER``), none of the demo's."""
    return fake_host(seed="empty", instances=1)


class Rounds:
    """A VCPU listener that keeps every round it is told of, per host."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rounds: list[tuple[str, list[VcpuSample]]] = []

    def __call__(self, host: str, samples: list[VcpuSample]) -> None:
        with self.lock:
            self.rounds.append((host, samples))

    def of(self, host: str) -> list[list[VcpuSample]]:
        with self.lock:
            return [samples for name, samples in self.rounds if name == host]


def stored(keeper: Keeper, instance: str) -> list[VcpuSample]:
    return keeper.vcpu_samples(instance, utcnow() - LONG_AGO)


def rounds_stored(keeper: Keeper, instance: str, count: int) -> list[VcpuSample]:
    """Wait until the instance's samples cover ``count`` rounds; return them."""

    def enough() -> list[VcpuSample]:
        found = stored(keeper, instance)
        return found if len({sample.at for sample in found}) >= count else []

    return wait_until(enough, what=f"{count} sampling rounds of {instance} in the store")


@pytest.fixture
def sampled_host() -> Iterator[FakeDriver]:
    with fake_host() as driver:
        yield driver


@both_databases
def test_running_instances_are_sampled_with_the_values_of_the_fake_s_counters(
    store: SqlStore, sampled_host: FakeDriver
) -> None:
    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0.1, **RETENTION) as keeper:
        for instance, vcpus in RUNNING.items():
            samples = rounds_stored(keeper, instance, 2)
            assert {s.vcpu for s in samples} == set(range(vcpus))
            for sample in samples:
                rates = _rates(instance, sample.vcpu)
                assert sample.host == "h1" and sample.instance_id == instance
                assert sample.running == pytest.approx(rates.running, abs=1e-3)
                assert sample.waiting == pytest.approx(rates.waiting, abs=1e-3)
                assert sample.halted == pytest.approx(rates.halted, abs=1e-3)
                # Counted exits are whole numbers: one more or less in a window is 1/window per second.
                for rate, expected in (
                    (sample.halt_exits, rates.halt_exits),
                    (sample.io_exits, rates.io_exits),
                    (sample.mmio_exits, rates.mmio_exits),
                ):
                    assert rate == pytest.approx(expected, abs=1.01 / sample.window_s + 1e-3 * expected)
                assert sample.running + sample.blocked + sample.waiting <= 1 + 1e-9
                assert sample.halted is not None and sample.halted <= sample.blocked + 1e-9
        for instance in NOT_RUNNING:
            assert stored(keeper, instance) == []


def test_an_instance_that_stops_is_no_longer_sampled(store: SqlStore, sampled_host: FakeDriver) -> None:
    rounds = Rounds()
    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0.05, **RETENTION) as keeper:
        keeper.add_vcpu_listener(rounds)
        rounds_stored(keeper, WEB1, 1)
        action = keeper.request(WEB1, "power_off", requested_by="ops")
        assert keeper.wait(action.id).status is ActionStatus.DONE
        told_after = len(rounds.of("h1"))
        # A round read after the power-off has the others and not web-1.
        later = wait_until(
            lambda: [r for r in rounds.of("h1")[told_after:] if r and all(s.instance_id != WEB1 for s in r)],
            what="a round without web-1",
        )[0]
        at = later[0].at
        web2 = instance_id("web-2")
        wait_until(
            lambda: keeper.vcpu_samples(web2, at - timedelta(microseconds=1), at), what="the round stored"
        )
        assert keeper.vcpu_samples(WEB1, at - timedelta(microseconds=1)) == []
        assert stored(keeper, WEB1)  # what was sampled while it ran stays


def test_listeners_are_told_each_stored_round_and_one_that_fails_breaks_nothing(
    store: SqlStore, sampled_host: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    rounds = Rounds()

    def broken(host: str, samples: list[VcpuSample]) -> None:
        raise RuntimeError("a listener's own bug")

    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0.05, **RETENTION) as keeper:
        with pytest.raises(KeeperError, match="VCPU listener"):
            keeper.add_vcpu_listener("not callable")  # type: ignore[arg-type]
        keeper.add_vcpu_listener(broken)
        remove = keeper.add_vcpu_listener(rounds)
        told = wait_until(lambda: [r for r in rounds.of("h1") if r], what="a round told")[0]
        at = told[0].at
        assert {s.at for s in told} == {at}
        assert {s.instance_id for s in told} == set(RUNNING)
        in_store = [
            sample
            for instance in RUNNING
            for sample in keeper.vcpu_samples(instance, at - timedelta(microseconds=1), at)
        ]
        assert sorted(in_store, key=lambda s: (s.instance_id, s.vcpu)) == sorted(
            told, key=lambda s: (s.instance_id, s.vcpu)
        )
        assert "a VCPU listener failed" in caplog.text
        remove()
        after = Rounds()
        keeper.add_vcpu_listener(after)
        # Rounds run one at a time: once one reached the newer listener, none still calls the removed one.
        wait_until(lambda: after.of("h1"), what="a round after the removal")
        count = len(rounds.of("h1"))
        wait_until(lambda: len(after.of("h1")) >= 3, what="two more rounds")
        assert len(rounds.of("h1")) == count


def test_samples_older_than_the_retention_are_trimmed(store: SqlStore, sampled_host: FakeDriver) -> None:
    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0.05, vcpu_retention=0.3) as keeper:
        first = rounds_stored(keeper, WEB1, 1)[0].at

        def trimmed() -> list[VcpuSample]:
            found = stored(keeper, WEB1)
            return found if found and found[0].at > first else []

        kept = wait_until(trimmed, what="the first sample trimmed")
        # Trimming goes by age: the newest round, well within the retention, is kept whole.
        assert {sample.vcpu for sample in kept if sample.at == kept[-1].at} == {0, 1}


def test_a_host_without_vcpu_counters_is_logged_once_and_the_keeper_goes_on(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="powerdrivers.keeper")
    with (
        NoVcpuFake("fake:///", guest_delay=0.05, poll_interval=0.02) as plain,
        second_host() as other,
        running_keeper(
            store, {"plain": plain, "h2": other}, vcpu_sample_interval=0.05, **RETENTION
        ) as keeper,
    ):
        rounds_stored(keeper, OTHER, 5)  # sampling of the other host goes on, round after round
        said = [r for r in caplog.records if "no VCPU sampling" in r.getMessage()]
        assert len(said) == 1 and said[0].levelno == logging.INFO and "plain" in said[0].getMessage()
        assert stored(keeper, WEB1) == []
        action = keeper.request(WEB1, "power_off", requested_by="ops")
        assert keeper.wait(action.id).status is ActionStatus.DONE


def test_a_failing_hypervisor_is_logged_once_and_sampling_resumes(
    store: SqlStore, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="powerdrivers.keeper")
    rounds = Rounds()
    with (
        fake_host() as flaky,
        second_host() as other,
        running_keeper(store, {"h1": flaky, "h2": other}, vcpu_sample_interval=0.05, **RETENTION) as keeper,
    ):
        keeper.add_vcpu_listener(rounds)
        flaky.inject_failure(HypervisorError("injected: the hypervisor is away"), "vcpu_stats", once=False)
        wait_until(lambda: "reading the VCPU counters failed" in caplog.text, what="the failure logged")
        seen = len(rounds.of("h2"))
        wait_until(lambda: len(rounds.of("h2")) >= seen + 5, what="five more rounds")
        warned = [r for r in caplog.records if "failed" in r.getMessage() and "h1" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelno == logging.WARNING
        assert "injected: the hypervisor is away" in warned[0].getMessage()
        flaky.clear_failures()
        resumed = utcnow()
        wait_until(lambda: keeper.vcpu_samples(WEB1, resumed), what="samples again")
        # Logged just after the round is stored: wait for the message itself.
        wait_until(lambda: "h1: VCPU sampling works again" in caplog.text, what="the recovery logged")


def test_an_interval_of_zero_turns_sampling_off(store: SqlStore, sampled_host: FakeDriver) -> None:
    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0) as keeper:
        keeper.resync()
        assert not [t for t in threading.enumerate() if t.name == "keeper-vcpu"]
        assert stored(keeper, WEB1) == []
    assert store.latest_vcpu_samples() == []


def test_hosts_added_are_sampled_and_removed_ones_no_longer(store: SqlStore) -> None:
    settings = KeeperSettings.from_options(**QUICK, vcpu_sample_interval=0.05, **RETENTION)
    rounds = Rounds()
    with fake_host() as first, second_host() as other, Keeper(store, {}, settings, dynamic=True) as keeper:
        keeper.add_vcpu_listener(rounds)
        keeper.add_host("h1", first)
        rounds_stored(keeper, WEB1, 2)
        keeper.add_host("h2", other)
        rounds_stored(keeper, OTHER, 2)
        keeper.remove_host("h1")
        last = stored(keeper, WEB1)[-1].at
        told = len(rounds.of("h2"))
        later = wait_until(lambda: [r for r in rounds.of("h2")[told:] if r], what="a later round of h2")[0]
        wait_until(
            lambda: keeper.vcpu_samples(OTHER, later[0].at - timedelta(microseconds=1)), what="it stored"
        )
        assert stored(keeper, WEB1)[-1].at == last


def test_stop_and_remove_host_do_not_wait_for_a_long_interval(store: SqlStore) -> None:
    # With an hour between rounds, a stop that waited for the interval would hang the test.
    settings = KeeperSettings.from_options(**QUICK, vcpu_sample_interval=3600, vcpu_retention=86400)
    with fake_host() as first, second_host() as other:
        keeper = Keeper(store, {"h1": first, "h2": other}, settings)
        keeper.start()
        keeper.remove_host("h2")
        keeper.stop()
        assert not [t for t in threading.enumerate() if t.name == "keeper-vcpu"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"vcpu_sample_interval": -1}, "vcpu_sample_interval must be from 0"),
        ({"vcpu_sample_interval": 0.001}, "vcpu_sample_interval must be 0 .off. or at least 0.01"),
        ({"vcpu_sample_interval": "often"}, "vcpu_sample_interval must be a number"),
        ({"vcpu_sample_interval": float("nan")}, "vcpu_sample_interval must be from 0"),
        ({"vcpu_retention": 0}, "vcpu_retention must be more than 0"),
        ({"vcpu_retention": True}, "vcpu_retention must be a number"),
        ({"vcpu_retention": 10**9}, "vcpu_retention must be from 0"),
        ({"vcpu_sample_interval": 0.5, "vcpu_retention": 86400}, r"vcpu_retention .* vcpu_sample_interval"),
        ({"vcpu_sample_interval": 0.01}, r"8640000 samples per VCPU, more than 100,000"),
    ],
)
def test_bad_sampling_settings_are_refused_naming_them(options: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidOption, match=message) as caught:
        KeeperSettings.from_options(**options)
    assert "\n" not in str(caught.value)


def test_good_sampling_settings_are_taken() -> None:
    assert KeeperSettings.from_options().vcpu_sample_interval == 15.0
    assert KeeperSettings.from_options().vcpu_retention == 86400.0
    taken = KeeperSettings.from_options(vcpu_sample_interval="0", vcpu_retention="2592000")
    assert (taken.vcpu_sample_interval, taken.vcpu_retention) == (0.0, 2592000.0)
    assert (
        KeeperSettings.from_options(vcpu_sample_interval=1, vcpu_retention=100_000).vcpu_retention == 100_000
    )


def test_reading_samples_through_the_keeper_checks_its_arguments(store: SqlStore) -> None:
    keeper = Keeper(store, {}, dynamic=True)
    with pytest.raises(InvalidOption, match="limit"):
        keeper.vcpu_samples(WEB1, utcnow(), limit=0)
    with pytest.raises(KeeperError, match="timezone-aware"):
        keeper.vcpu_samples(WEB1, datetime(2026, 12, 3))
    assert keeper.vcpu_samples("unknown", utcnow() - LONG_AGO) == []


def test_a_store_that_fails_is_logged_once_and_sampling_resumes_when_it_is_back(
    store: SqlStore, store_url: str, sampled_host: FakeDriver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="powerdrivers.keeper")
    rounds = Rounds()
    engine = create_engine(store_url)
    with running_keeper(store, {"h1": sampled_host}, vcpu_sample_interval=0.05, vcpu_retention=0.4) as keeper:
        keeper.add_vcpu_listener(rounds)
        rounds_stored(keeper, WEB1, 1)
        # The table taken away from under the keeper: every write of a sample, and every trim, fails.
        with engine.begin() as connection:
            vcpu_samples.drop(connection)
        wait_until(lambda: "storing the VCPU samples failed" in caplog.text, what="the failure logged")
        wait_until(lambda: "trimming old VCPU samples failed" in caplog.text, what="the trim's failure")
        told = len(rounds.of("h1"))
        with engine.begin() as connection:
            vcpu_samples.create(connection)
        wait_until(lambda: stored(keeper, WEB1), what="samples stored again")
        wait_until(lambda: "h1: VCPU sampling works again" in caplog.text, what="the recovery logged")
        wait_until(lambda: len(rounds.of("h1")) > told, what="listeners told again")
    engine.dispose()
    failures = [r.getMessage() for r in caplog.records if "storing the VCPU samples failed" in r.getMessage()]
    assert len(failures) == 1 and "h1" in failures[0] and "\n" not in failures[0]


@both_databases
def test_two_keepers_on_one_store_each_sample_their_own_hosts(store: SqlStore, store_url: str) -> None:
    other_store = SqlStore(store_url)
    try:
        with (
            fake_host() as first,
            second_host() as other,
            running_keeper(store, {"h1": first}, vcpu_sample_interval=0.05, **RETENTION) as keeper,
            running_keeper(other_store, {"h2": other}, vcpu_sample_interval=0.05, **RETENTION) as neighbour,
        ):
            mine = rounds_stored(keeper, WEB1, 5)
            theirs = rounds_stored(neighbour, OTHER, 5)
            assert {s.host for s in mine} == {"h1"} and {s.host for s in theirs} == {"h2"}
            # Every round whole: each VCPU once per round.
            for samples, vcpus in ((mine, 2), (theirs, 1)):
                per_round: dict[datetime, list[int]] = {}
                for sample in samples:
                    per_round.setdefault(sample.at, []).append(sample.vcpu)
                assert all(sorted(found) == list(range(vcpus)) for found in per_round.values())
            # Either keeper reads every keeper's samples: they are the store's.
            assert keeper.vcpu_samples(OTHER, utcnow() - LONG_AGO)[:5] == theirs[:5]
    finally:
        other_store.close()
