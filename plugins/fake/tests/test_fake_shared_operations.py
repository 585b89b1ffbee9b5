"""Guest-dependent operations in flight are shared through the state file, and expire with their process.

Hardening issue, item 6: "an ACPI-ignoring guest's shutdown in process A is invisible to process B:
B sees running with no transition and may pause it (exit 0)."
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fake_helpers import DriverFactory, wait_until
from powerdrivers_fake import FakeDriver, instance_id

from powerdrivers import InvalidStateTransition, OperationResult, Outcome, PowerState, Transition

CLI_TIMEOUT = 30


def _environment() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if not key.startswith("POWERDRIVERS_")}


def _cli(uri: str, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "fake", "-c", uri, "-f", "json", *arguments],
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT,
        env=_environment(),
        check=False,
    )


def _start_cli(uri: str, *arguments: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", "-d", "fake", "-c", uri, "-f", "json", *arguments],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )


def _in_flight(path: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(path.read_text()).get("operations", [])
    return entries


def _shutting_down(driver: FakeDriver, name: str) -> bool:
    return driver.get_instance(name).transition is Transition.SHUTTING_DOWN


def test_a_shutdown_in_another_process_is_seen_and_refuses_a_pause(
    make_driver: DriverFactory, state_uri: str
) -> None:
    driver = make_driver(state_uri)
    driver.list_instances()
    shutdown = _start_cli(state_uri, "shutdown", "legacy-db", "--timeout", "5")
    try:
        wait_until(lambda: _shutting_down(driver, "legacy-db"), timeout=10)
        shown = json.loads(_cli(state_uri, "info", "legacy-db").stdout)
        assert (shown["power_state"], shown["transition"]) == ("running", "shutting_down")
        refused = _cli(state_uri, "pause", "legacy-db")
        assert refused.returncode == 4, refused.stderr
        assert "shutting_down" in refused.stderr
        with pytest.raises(InvalidStateTransition):
            driver.pause("legacy-db")
        assert driver.pause("web-1").power_state is PowerState.PAUSED  # other instances are free
        stdout, stderr = shutdown.communicate(timeout=CLI_TIMEOUT)
    finally:
        if shutdown.poll() is None:
            shutdown.kill()
        shutdown.wait()
    assert shutdown.returncode == 0, stderr
    assert json.loads(stdout)["outcome"] == "forced"
    after = driver.get_instance("legacy-db")
    assert (after.power_state, after.transition) == (PowerState.SHUTOFF, None)
    assert _in_flight(Path(state_uri.removeprefix("fake://"))) == []


def test_the_operation_of_a_killed_process_expires(make_driver: DriverFactory, state_uri: str) -> None:
    path = Path(state_uri.removeprefix("fake://"))
    driver = make_driver(state_uri)
    driver.list_instances()
    shutdown = _start_cli(state_uri, "shutdown", "legacy-db", "--timeout", "60")
    try:
        wait_until(lambda: _shutting_down(driver, "legacy-db"), timeout=10)
        assert [(entry["id"], entry["pid"]) for entry in _in_flight(path)] == [
            (instance_id("legacy-db"), shutdown.pid)
        ]
    finally:
        shutdown.send_signal(signal.SIGKILL)
        shutdown.wait()
    shown = _cli(state_uri, "info", "legacy-db")
    assert shown.returncode == 0, shown.stderr
    assert (json.loads(shown.stdout)["power_state"], json.loads(shown.stdout)["transition"]) == (
        "running",
        None,
    )
    paused = _cli(state_uri, "pause", "legacy-db")
    assert paused.returncode == 0, paused.stderr
    assert _in_flight(path) == []


def _run_in_thread(call: Any) -> tuple[threading.Thread, list[OperationResult]]:
    results: list[OperationResult] = []
    thread = threading.Thread(target=lambda: results.append(call()))
    thread.start()
    return thread, results


@pytest.mark.parametrize("operation", ["shutdown", "reboot"])
def test_another_driver_on_the_file_sees_the_operation_until_it_ends(
    make_driver: DriverFactory, state_uri: str, operation: str
) -> None:
    actor = make_driver(state_uri)
    other = make_driver(state_uri)
    method = getattr(actor, operation)
    thread, results = _run_in_thread(lambda: method("legacy-db", timeout=1.0, force=False))
    try:
        expected = Transition.SHUTTING_DOWN if operation == "shutdown" else Transition.REBOOTING
        wait_until(lambda: other.get_instance("legacy-db").transition is expected, timeout=10)
        for refused in (other.pause, other.suspend):
            with pytest.raises(InvalidStateTransition):
                refused("legacy-db")
        # The actor itself reads the transition from its own tracker, not from the file.
        assert actor.get_instance("legacy-db").transition is expected
    finally:
        thread.join(CLI_TIMEOUT)
    assert [result.outcome for result in results] == [Outcome.TIMED_OUT]
    assert other.get_instance("legacy-db").transition is None
    assert other.pause("legacy-db").power_state is PowerState.PAUSED


def _write_entry(path: Path, **fields: Any) -> None:
    document = json.loads(path.read_text())
    entry = {
        "id": instance_id("web-1"),
        "operation": "shutdown",
        "owner": "someone-else",
        "token": "0123456789abcdef",
        "since": time.time(),
        **fields,
    }
    document["operations"] = [entry]
    path.write_text(json.dumps(document))


def _start_time(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from /proc")
def test_an_entry_is_kept_while_its_process_runs_and_dropped_when_its_pid_is_reused(
    make_driver: DriverFactory, state_uri: str
) -> None:
    path = Path(state_uri.removeprefix("fake://"))
    driver = make_driver(state_uri)
    driver.list_instances()
    live = os.getpid()
    _write_entry(path, pid=live, started=_start_time(live))
    assert driver.get_instance("web-1").transition is Transition.SHUTTING_DOWN
    assert len(_in_flight(path)) == 1
    # The same pid, started at another time: another process now has the pid.
    _write_entry(path, pid=live, started=_start_time(live) + 1)
    assert driver.get_instance("web-1").transition is None
    assert _in_flight(path) == []
