"""The file store: state shared by driver instances, threads and processes, and its failure modes."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fake_helpers import DriverFactory, EventLog, subscribe_settled, wait_until
from powerdrivers_fake import FakeDriver

from powerdrivers import (
    EventKind,
    HypervisorError,
    InstanceSpec,
    InvalidURI,
    Operation,
    Outcome,
    PowerDriversError,
    PowerState,
    Transition,
)

CLI_TIMEOUT = 30


def _cli(uri: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if not key.startswith("POWERDRIVERS_")}
    return subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "fake", "-c", uri, "-f", "json", *arguments],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=environment,
        check=False,
    )


def _path(uri: str) -> Path:
    return Path(uri.removeprefix("fake://"))


# -- sharing ------------------------------------------------------------------


def test_two_drivers_on_one_file_see_each_others_changes(make_driver: DriverFactory, state_uri: str) -> None:
    first = make_driver(state_uri)
    second = make_driver(state_uri)
    assert {r.name for r in first.list_instances()} == {r.name for r in second.list_instances()}
    first.pause("web-1")
    assert second.get_instance("web-1").power_state is PowerState.PAUSED
    second.start("batch-7")
    assert first.get_instance("batch-7").power_state is PowerState.RUNNING
    spawned = second.spawn(InstanceSpec("shared", vcpus=2))
    assert first.get_instance("shared").id == spawned.id
    first.delete("shared")
    assert "shared" not in {r.name for r in second.list_instances()}


def test_state_outlives_the_driver(make_driver: DriverFactory, state_uri: str) -> None:
    with make_driver(state_uri) as driver:
        driver.power_off("web-2")
    assert make_driver(state_uri).get_instance("web-2").power_state is PowerState.SHUTOFF


def test_memory_stores_are_private(make_driver: DriverFactory) -> None:
    first = make_driver("fake:///")
    second = make_driver()
    first.pause("web-1")
    assert second.get_instance("web-1").power_state is PowerState.RUNNING


def test_graceful_shutdown_by_one_driver_is_seen_mid_way_by_another(
    make_driver: DriverFactory, state_uri: str
) -> None:
    actor = make_driver(state_uri, guest_delay=0.3)
    observer = make_driver(state_uri, poll_interval=0.01)
    log = EventLog()
    subscribe_settled(observer, log)
    outcomes: list[Outcome] = []
    worker = threading.Thread(target=lambda: outcomes.append(actor.shutdown("web-1", timeout=30).outcome))
    worker.start()
    try:
        log.wait_for(lambda events: any(e.transition is Transition.SHUTTING_DOWN for e in events))
        middle = observer.get_instance("web-1")
    finally:
        worker.join(10)
    assert (middle.power_state, middle.transition) == (PowerState.RUNNING, Transition.SHUTTING_DOWN)
    assert outcomes == [Outcome.GRACEFUL]
    events = log.wait_for(lambda events: any(e.kind is EventKind.STOPPED for e in events))
    assert [(e.kind, e.caused_by_operation) for e in events] == [
        (EventKind.TRANSITION, Operation.SHUTDOWN),
        (EventKind.STOPPED, Operation.SHUTDOWN),
    ]


def test_events_of_one_driver_reach_a_subscriber_of_another(
    make_driver: DriverFactory, state_uri: str
) -> None:
    actor = make_driver(state_uri)
    observer = make_driver(state_uri, poll_interval=0.01)
    log = EventLog()
    subscribe_settled(observer, log)
    web = actor.get_instance("web-2")
    actor.pause("web-2")
    actor.unpause("web-2")
    actor.reboot("web-2", hard=True)
    actor.crash("web-2")
    events = log.wait_for(lambda events: len(events) >= 4)
    assert [(e.instance_id, e.kind, e.caused_by_operation) for e in events] == [
        (web.id, EventKind.PAUSED, Operation.PAUSE),
        (web.id, EventKind.UNPAUSED, Operation.UNPAUSE),
        (web.id, EventKind.REBOOTED, Operation.HARD_REBOOT),
        (web.id, EventKind.CRASHED, None),
    ]
    assert events[-1].power_state is observer.get_instance("web-2").power_state is PowerState.CRASHED


def test_events_from_before_subscribing_are_not_replayed(make_driver: DriverFactory, state_uri: str) -> None:
    actor = make_driver(state_uri)
    observer = make_driver(state_uri, poll_interval=0.01)
    actor.pause("web-1")
    log = EventLog()
    subscribe_settled(observer, log)
    actor.unpause("web-1")
    events = log.wait_for(lambda events: len(events) >= 1)
    time.sleep(0.05)  # a few watcher polls, in case anything older was still coming
    assert [e.kind for e in log.events] == [EventKind.UNPAUSED] == [e.kind for e in events]


# -- processes ----------------------------------------------------------------


def test_a_change_right_after_subscribing_is_delivered(make_driver: DriverFactory, state_uri: str) -> None:
    actor = make_driver(state_uri)
    observer = make_driver(state_uri, poll_interval=0.01)
    missed = 0
    for trial in range(12):
        log = EventLog()
        with observer.subscribe(log):
            (actor.pause if trial % 2 == 0 else actor.unpause)("web-1")
            try:
                log.wait_for(lambda events: len(events) == 1, timeout=0.2)
            except AssertionError:
                missed += 1
    assert missed == 0, f"{missed} of 12 changes made right after subscribing were never delivered"


def test_the_cli_in_another_process_sees_changes_made_here(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri)
    driver.pause("web-1")
    completed = _cli(state_uri, "info", "web-1")
    assert completed.returncode == 0, completed.stderr
    shown = json.loads(completed.stdout)
    assert (shown["name"], shown["power_state"], shown["native_state"]) == ("web-1", "paused", "paused")


def test_changes_made_by_the_cli_in_another_process_are_seen_here(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri, poll_interval=0.01)
    log = EventLog()
    subscribe_settled(driver, log)
    batch = driver.get_instance("batch-7")
    completed = _cli(state_uri, "start", "batch-7")
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["power_state"] == "running"
    assert driver.get_instance("batch-7").power_state is PowerState.RUNNING
    events = log.wait_for(lambda events: len(events) >= 1)
    assert [(e.instance_id, e.kind, e.caused_by_operation) for e in events] == [
        (batch.id, EventKind.STARTED, Operation.START)
    ]


def test_the_cli_refuses_a_forbidden_operation_and_changes_nothing(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri)
    before = driver.get_instance("cache-1")
    completed = _cli(state_uri, "resume", "cache-1")
    assert completed.returncode == 4
    assert "cache-1" in completed.stderr and "resume" in completed.stderr and "paused" in completed.stderr
    assert driver.get_instance("cache-1").native_reason == before.native_reason


def test_cli_event_stream_in_another_process_sees_our_operations(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri)
    driver.list_instances()  # create the file before the other process looks at it
    environment = {key: value for key, value in os.environ.items() if not key.startswith("POWERDRIVERS_")}
    command = [
        sys.executable,
        "-m",
        "powerdrivers",
        "-d",
        "fake",
        "-c",
        state_uri,
        "-o",
        "poll_interval=0.01",
    ]
    with subprocess.Popen(
        [*command, "events", "-f", "json", "--count", "1", "--timeout", "20"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    ) as listener:
        # The stream starts at some unknown moment: keep acting until it has seen something.
        deadline = time.monotonic() + 20
        while listener.poll() is None and time.monotonic() < deadline:
            driver.pause("web-1")
            driver.unpause("web-1")
            time.sleep(0.02)
        stdout, stderr = listener.communicate(timeout=CLI_TIMEOUT)
    assert listener.returncode == 0, stderr
    event = json.loads(stdout.splitlines()[0])
    assert event["name"] == "web-1"
    assert (event["event"], event["caused_by_operation"]) in {("paused", "pause"), ("unpaused", "unpause")}


_WORKER = """
import sys
import powerdrivers

uri, names, cycles = sys.argv[1], sys.argv[2].split(","), int(sys.argv[3])
with powerdrivers.load_driver("fake", uri, seed="empty") as driver:
    for _ in range(cycles):
        for name in names:
            driver.power_off(name)
            driver.start(name)
"""


def _spawn_fleet(driver: FakeDriver, workers: int, per_worker: int) -> list[list[str]]:
    groups = [[f"w{worker}-vm{index}" for index in range(per_worker)] for worker in range(workers)]
    for group in groups:
        for name in group:
            driver.spawn(InstanceSpec(name))
    return groups


def _check_fleet(driver: FakeDriver, log: EventLog, groups: list[list[str]], cycles: int) -> None:
    names = [name for group in groups for name in group]
    log.wait_for(lambda events: len(events) >= 2 * cycles * len(names), timeout=10)
    readings = {r.name: r for r in driver.list_instances()}
    assert set(readings) == set(names)
    for name in names:
        assert readings[name].power_state is PowerState.RUNNING
        events = log.about(readings[name].id)
        assert [(e.kind, e.caused_by_operation) for e in events] == [
            (EventKind.STOPPED, Operation.POWER_OFF),
            (EventKind.STARTED, Operation.START),
        ] * cycles, name
    assert len(log.events) == 2 * cycles * len(names)


def test_concurrent_processes_lose_no_update(make_driver: DriverFactory, state_uri: str) -> None:
    cycles = 5
    driver = make_driver(state_uri, seed="empty", poll_interval=0.01)
    groups = _spawn_fleet(driver, workers=4, per_worker=2)
    log = EventLog()
    subscribe_settled(driver, log)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, state_uri, ",".join(group), str(cycles)],
            stderr=subprocess.PIPE,
            text=True,
        )
        for group in groups
    ]
    for process in processes:
        _, stderr = process.communicate(timeout=CLI_TIMEOUT)
        assert process.returncode == 0, stderr
    _check_fleet(driver, log, groups, cycles)


def test_concurrent_threads_with_their_own_drivers_lose_no_update(
    make_driver: DriverFactory, state_uri: str
) -> None:
    cycles = 5
    driver = make_driver(state_uri, seed="empty", poll_interval=0.01)
    groups = _spawn_fleet(driver, workers=4, per_worker=2)
    log = EventLog()
    subscribe_settled(driver, log)
    workers = [make_driver(state_uri, seed="empty") for _ in groups]
    errors: list[BaseException] = []

    def work(worker: FakeDriver, names: list[str]) -> None:
        try:
            for _ in range(cycles):
                for name in names:
                    worker.power_off(name)
                    worker.start(name)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=pair) for pair in zip(workers, groups, strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLI_TIMEOUT)
    assert errors == []
    _check_fleet(driver, log, groups, cycles)


def test_concurrent_threads_on_one_memory_driver_lose_no_update(empty_driver: FakeDriver) -> None:
    cycles = 10
    groups = _spawn_fleet(empty_driver, workers=4, per_worker=2)
    log = EventLog()
    empty_driver.subscribe(log)
    errors: list[BaseException] = []

    def work(names: list[str]) -> None:
        try:
            for _ in range(cycles):
                for name in names:
                    empty_driver.power_off(name)
                    empty_driver.start(name)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(group,)) for group in groups]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLI_TIMEOUT)
    assert errors == []
    _check_fleet(empty_driver, log, groups, cycles)


def test_racing_for_one_instance_lets_exactly_one_win(make_driver: DriverFactory, state_uri: str) -> None:
    drivers = [make_driver(state_uri) for _ in range(4)]
    drivers[0].list_instances()
    barrier = threading.Barrier(len(drivers))
    outcomes: list[str] = []

    def race(driver: FakeDriver) -> None:
        barrier.wait()
        try:
            driver.start("batch-7")
            outcomes.append("started")
        except PowerDriversError as error:
            outcomes.append(type(error).__name__)

    threads = [threading.Thread(target=race, args=(driver,)) for driver in drivers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(CLI_TIMEOUT)
    assert sorted(outcomes) == ["InvalidStateTransition"] * 3 + ["started"]


# -- failures -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [b"not json at all {", b"", b"[1, 2, 3]", b'{"format": 99, "seq": 0, "instances": {}, "events": []}'],
    ids=["garbage", "empty", "not-an-object", "other-format"],
)
def test_a_corrupt_state_file_is_a_hypervisor_error_and_is_kept(
    make_driver: DriverFactory, state_uri: str, content: bytes
) -> None:
    path = _path(state_uri)
    path.write_bytes(content)
    with pytest.raises(HypervisorError) as raised:
        make_driver(state_uri)
    assert str(path) in str(raised.value)
    assert raised.value.code == "corrupt"
    assert path.read_bytes() == content


def test_a_state_file_corrupted_later_fails_reads_and_is_kept(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri)
    driver.list_instances()
    path = _path(state_uri)
    path.write_text("{ truncated")
    with pytest.raises(HypervisorError):
        driver.list_instances()
    with pytest.raises(HypervisorError):
        driver.start("batch-7")
    assert path.read_text() == "{ truncated"


@pytest.mark.parametrize(
    "content",
    ['{"format": 1}', '{"format": 1, "seq": 0, "instances": {"x": {}}, "events": []}'],
    ids=["no-instances", "empty-record"],
)
def test_a_structurally_broken_state_file_is_a_hypervisor_error(
    make_driver: DriverFactory, state_uri: str, content: str
) -> None:
    path = _path(state_uri)
    path.write_text(content)
    with pytest.raises(HypervisorError):
        make_driver(state_uri)
    assert path.read_text() == content


def test_a_non_utf8_state_file_is_a_hypervisor_error(make_driver: DriverFactory, state_uri: str) -> None:
    driver = make_driver(state_uri)
    path = _path(state_uri)
    path.write_bytes(b"\xff\xfe{}")
    with pytest.raises(HypervisorError):
        driver.list_instances()
    with pytest.raises(HypervisorError):
        make_driver(state_uri)
    assert path.read_bytes() == b"\xff\xfe{}"


def test_the_watcher_survives_a_corrupt_file(
    make_driver: DriverFactory, state_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    actor = make_driver(state_uri)
    observer = make_driver(state_uri, poll_interval=0.01)
    log = EventLog()
    subscribe_settled(observer, log)
    path = _path(state_uri)
    good = path.read_bytes()
    with caplog.at_level(logging.WARNING, logger="powerdrivers.fake"):
        path.write_text("{ half written")
        wait_until(lambda: any("not valid JSON" in r.getMessage() for r in caplog.records), timeout=5)
    path.write_bytes(good)
    actor.pause("web-1")
    events = log.wait_for(lambda events: len(events) >= 1)
    assert [(e.kind, e.caused_by_operation) for e in events] == [(EventKind.PAUSED, Operation.PAUSE)]


def test_a_missing_directory_is_a_hypervisor_error(make_driver: DriverFactory, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    with pytest.raises(HypervisorError) as raised:
        make_driver(f"fake://{missing}/state.json")
    assert str(missing) in str(raised.value)
    assert not (tmp_path / "no").exists()


@pytest.mark.parametrize(
    "uri",
    [
        "http://example.com/state.json",
        "fake://host/state.json",
        "fake:///state.json?mode=x",
        "fake:///state.json#frag",
        "libvirt:///system",
    ],
)
def test_bad_uris_are_invalid_uri(make_driver: DriverFactory, uri: str) -> None:
    with pytest.raises(InvalidURI) as raised:
        make_driver(uri)
    assert "fake:///" in str(raised.value)


def test_a_directory_is_not_a_state_file(make_driver: DriverFactory, tmp_path: Path) -> None:
    with pytest.raises(InvalidURI) as raised:
        make_driver(f"fake://{tmp_path}")
    assert "directory" in str(raised.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "uri",
    [
        "fake://user:s3cr3t-pw@host/x",
        "http://admin:s3cr3t-pw@example.com/",
        "fake:///x.json?password=s3cr3t-pw",
    ],
)
def test_invalid_uri_messages_do_not_leak_the_password(make_driver: DriverFactory, uri: str) -> None:
    with pytest.raises(InvalidURI) as raised:
        make_driver(uri)
    assert "s3cr3t-pw" not in str(raised.value)
    assert "s3cr3t-pw" not in repr(raised.value.args)


def test_an_unparsable_uri_is_invalid_uri(make_driver: DriverFactory) -> None:
    with pytest.raises(InvalidURI):
        make_driver("fake://[::1/state.json")


def test_the_cli_reports_a_bad_uri_as_usage_without_the_password() -> None:
    completed = _cli("fake://user:s3cr3t-pw@host/x", "list")
    assert completed.returncode == 2
    assert "s3cr3t-pw" not in completed.stderr + completed.stdout
    assert "fake:///" in completed.stderr


def test_the_cli_reports_a_corrupt_file_as_failure_and_keeps_it(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    path.write_text("garbage")
    completed = _cli(f"fake://{path}", "list")
    assert completed.returncode == 1
    assert "not valid JSON" in completed.stderr
    assert path.read_text() == "garbage"
