"""The Xen driver against malformed event answers, interruptions and stale state, on the simulator."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import XenAPI
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator

import powerdrivers
from powerdrivers import Driver, EventKind, HypervisorError, InvalidOption, Outcome, Secret
from powerdrivers.conformance import EventRecorder


def connect(sim: XapiSimulator, **options: object) -> Driver:
    settings: dict[str, object] = {"username": DEFAULT_USERNAME, "password": Secret(DEFAULT_PASSWORD)}
    settings.update(options)
    return powerdrivers.load_driver("xen", sim.url, **settings)


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def resyncs(recorder: EventRecorder) -> int:
    return sum(1 for event in recorder.events if event.kind is EventKind.RESYNC)


_TOKEN = "00000000000000000001,00000000000000000000"
_RECORD = {"uuid": "u", "name_label": "n", "power_state": "Running"}

MALFORMED_EVENT_ANSWERS: dict[str, Any] = {
    "not a struct": ["events", "token"],
    "no token": {"events": []},
    "a number as token": {"token": 7, "events": []},
    "events not a list": {"token": _TOKEN, "events": "none"},
    "an event not a struct": {"token": _TOKEN, "events": ["an event"]},
    "an event without ref": {"token": _TOKEN, "events": [{"operation": "add", "snapshot": _RECORD}]},
    "an event without operation": {"token": _TOKEN, "events": [{"ref": "OpaqueRef:1", "snapshot": _RECORD}]},
    "a snapshot not a struct": {
        "token": _TOKEN,
        "events": [{"ref": "OpaqueRef:1", "operation": "mod", "snapshot": "text"}],
    },
    "operations not text": {
        "token": _TOKEN,
        "events": [
            {
                "ref": "OpaqueRef:1",
                "operation": "mod",
                "snapshot": {**_RECORD, "current_operations": {"OpaqueRef:t": ["clean_shutdown"]}},
            }
        ],
    },
}


@pytest.mark.parametrize("answer", MALFORMED_EVENT_ANSWERS.values(), ids=MALFORMED_EVENT_ANSWERS.keys())
def test_a_malformed_first_event_answer_is_a_hypervisor_error_and_leaks_no_session(
    sim: XapiSimulator, answer: Any
) -> None:
    with connect(sim) as driver:
        sessions = sim.session_count
        sim.answer_event_from(answer)
        with pytest.raises(HypervisorError) as caught:
            driver.subscribe(EventRecorder())
        assert caught.value.code == "MALFORMED_ANSWER"
        assert sim.session_count == sessions  # the event session was logged out
        # shutdown subscribes inside: the same typed error, nothing untyped.
        sim.answer_event_from(answer)
        with pytest.raises(HypervisorError):
            driver.shutdown("web-01", timeout=5)


@pytest.mark.parametrize(
    "answer",
    [MALFORMED_EVENT_ANSWERS["no token"], MALFORMED_EVENT_ANSWERS["an event without ref"]],
    ids=["no token", "an event without ref"],
)
def test_a_malformed_event_answer_while_subscribed_resyncs_and_events_go_on(
    sim: XapiSimulator, answer: Any
) -> None:
    recorder = EventRecorder()
    with connect(sim, event_timeout="0.2") as driver, driver.subscribe(recorder):
        sim.answer_event_from(answer)
        recorder.wait_for_event(kind=EventKind.RESYNC, timeout=5)
        driver.pause("web-01")
        recorder.wait_for_event(kind=EventKind.PAUSED, name="web-01", timeout=5)
        wait_for(lambda: sim.session_count == 2)  # the driver's and one event session


def test_interruptions_of_the_event_stream_leak_no_session(sim: XapiSimulator) -> None:
    recorder = EventRecorder()
    with connect(sim, event_timeout="0.2", timeout="1") as driver, driver.subscribe(recorder):
        assert sim.session_count == 2
        for stall in range(1, 4):
            sim.stall(0.3)
            wait_for(lambda: resyncs(recorder) >= stall, timeout=10)  # noqa: B023 - called at once
            # The interrupted session could not be logged out during the stall; it is afterwards.
            wait_for(lambda: sim.session_count == 2)
        sim.restart()
        wait_for(lambda: resyncs(recorder) >= 4, timeout=10)
        driver.list_instances()  # the driver's own session logs in again when used
        wait_for(lambda: sim.session_count == 2)
    assert sim.session_count == 0


def test_a_second_shutdown_does_not_follow_a_task_xapi_dropped(sim: XapiSimulator) -> None:
    client = XenAPI.Session(sim.url)
    client.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "2.0", "tests")
    try:
        with connect(sim) as driver:
            assert driver.shutdown("web-01", timeout=10).outcome is Outcome.GRACEFUL
            driver.start("web-01")
            # Finished tasks are collected (or lost when xapi restarts): the old task is gone.
            for task in client.xenapi.task.get_by_name_label("Async.VM.clean_shutdown"):
                client.xenapi.task.destroy(task)
            assert driver.shutdown("web-01", timeout=10).outcome is Outcome.GRACEFUL
    finally:
        client.xenapi.session.logout()


def test_a_password_file_that_is_not_utf8_is_an_invalid_option_quoting_none_of_it(
    sim: XapiSimulator, tmp_path: Path
) -> None:
    secret_file = tmp_path / "password"
    secret_file.write_bytes(b"s\xe9cret\xff\n")
    with pytest.raises(InvalidOption, match="not UTF-8") as caught:
        connect(sim, password=None, password_file=str(secret_file))
    message = str(caught.value)
    assert "0xe9" not in message and "\\xe9" not in message and "cret" not in message


def test_a_password_file_path_with_a_nul_is_an_invalid_option(sim: XapiSimulator) -> None:
    with pytest.raises(InvalidOption, match="cannot read password_file"):
        connect(sim, password=None, password_file="pass\x00word")
