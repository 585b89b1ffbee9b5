"""The procs driver, loaded by name as any third-party driver is, against real processes."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from powerdrivers_procs import (
    PROCS_NATIVE_STATES,
    ProcessDriver,
    ProcsNativeState,
    _proc,
    define,
    instance_id,
)
from powerdrivers_procs._errors import translated
from powerdrivers_procs._proc import read_stat
from procs_support import INSTANCES, EventLog, live_members, uri_of, wait_until_ignoring

import powerdrivers
from powerdrivers import (
    Capability,
    EventKind,
    HypervisorError,
    InstanceNotFound,
    InstanceReading,
    InstanceSpec,
    InvalidOption,
    InvalidSpec,
    InvalidStateTransition,
    InvalidURI,
    Operation,
    OperationTimeout,
    Outcome,
    PowerState,
    Transition,
    UnsupportedOperation,
)


def wait_for_state(
    driver: ProcessDriver, name: str, state: PowerState, timeout_s: float = 5.0
) -> InstanceReading:
    deadline = time.monotonic() + timeout_s
    while True:
        reading = driver.get_instance(name)
        if reading.power_state is state:
            return reading
        if time.monotonic() > deadline:
            pytest.fail(f"{name} is {reading.power_state.value} ({reading.native_reason}), not {state.value}")
        time.sleep(0.02)


def native(reading: InstanceReading) -> tuple[PowerState, str, str | None]:
    return reading.power_state, reading.native_state, reading.native_reason


def started_pid(driver: ProcessDriver, name: str) -> int:
    pid = driver.pid(name)
    assert pid is not None
    return pid


def start_trapper(driver: ProcessDriver) -> int:
    """Start the instance that ignores SIGTERM, returning once it does."""
    driver.start("trapper")
    pid = started_pid(driver, "trapper")
    wait_until_ignoring(pid, signal.SIGTERM)
    return pid


# -- loading and addressing -------------------------------------------------------


def test_loaded_by_name_with_its_declared_contract(driver: ProcessDriver) -> None:
    info = {i.name: i for i in powerdrivers.available_drivers()}["procs"]
    assert (info.status, info.distribution, info.interface_version) == ("ok", "powerdrivers-procs", "1.0")
    assert set(info.capabilities) == {"start", "power_off", "shutdown", "pause", "hard_reboot", "delete"}
    assert driver.name == "procs"


def test_instances_are_defined_never_started_and_addressable_by_id_or_name(driver: ProcessDriver) -> None:
    readings = driver.list_instances()
    assert [r.name for r in readings] == list(INSTANCES)
    for reading in readings:
        assert native(reading) == (PowerState.SHUTOFF, "never_started", None)
        assert reading.id == instance_id(reading.name)
        assert driver.get_instance(reading.id).name == reading.name
        assert reading.observed_at.utcoffset() is not None


@pytest.mark.parametrize(
    "uri",
    [
        None,
        "",
        "fake:///somewhere",
        "procs://otherhost/dir",
        "procs:relative/dir",
        "procs:///",
        "procs:///{home}?x=1",
        "procs:///{home}/no-such-dir",
        "procs:///{home}/instances.json",
    ],
)
def test_a_bad_uri_is_invalid(home: Path, uri: str | None) -> None:
    if uri is not None:
        uri = uri.replace("/{home}", str(home))
    with pytest.raises(InvalidURI):
        powerdrivers.load_driver("procs", uri)


@pytest.mark.parametrize("options", [{"colour": "blue"}, {"timeout": "soon"}, {"poll_interval": "0"}])
def test_a_bad_option_is_invalid(home: Path, options: dict[str, str]) -> None:
    with pytest.raises(InvalidOption):
        powerdrivers.load_driver("procs", uri_of(home), **options)


def test_an_unknown_instance_is_not_found(driver: ProcessDriver) -> None:
    for call in (
        lambda: driver.get_instance("nosuch"),
        lambda: driver.start("nosuch"),
        lambda: driver.pause("nosuch"),
        lambda: driver.shutdown("nosuch"),
        lambda: driver.power_off("nosuch"),
        lambda: driver.reboot("nosuch", hard=True),
        lambda: driver.delete("nosuch"),
        lambda: driver.pid("nosuch"),
    ):
        with pytest.raises(InstanceNotFound):
            call()


def test_undeclared_features_are_unsupported(driver: ProcessDriver) -> None:
    for capability in (Capability.SUSPEND, Capability.REBOOT, Capability.SPAWN, Capability.VCPU_STATS):
        assert not driver.supports(capability)
    with pytest.raises(UnsupportedOperation):
        driver.suspend("sleeper")
    with pytest.raises(UnsupportedOperation):
        driver.reboot("sleeper")
    with pytest.raises(UnsupportedOperation):
        driver.spawn(InstanceSpec("new-one"))
    with pytest.raises(UnsupportedOperation):
        driver.vcpu_stats("sleeper")


# -- operations ---------------------------------------------------------------------


def test_start_pause_unpause_and_power_off(driver: ProcessDriver) -> None:
    running = driver.start("sleeper")
    assert running.power_state is PowerState.RUNNING
    assert running.native_state == "running" and running.native_reason in set("RSD")
    pid = started_pid(driver, "sleeper")
    assert read_stat(pid) is not None

    paused = driver.pause("sleeper")
    assert native(paused) == (PowerState.PAUSED, "stopped", "T")
    stat = read_stat(pid)
    assert stat is not None and stat.state == "T"

    unpaused = driver.unpause("sleeper")
    assert unpaused.power_state is PowerState.RUNNING
    stat = read_stat(pid)
    assert stat is not None and stat.state != "T"

    off = driver.power_off("sleeper")
    assert native(off) == (PowerState.SHUTOFF, "powered_off", "signal:SIGKILL")
    assert driver.pid("sleeper") is None and live_members(pid) == []


def test_graceful_shutdown_sends_the_stop_signal(driver: ProcessDriver) -> None:
    driver.start("sleeper")
    result = driver.shutdown("sleeper", timeout=5, retry_interval=1)
    assert result.outcome is Outcome.GRACEFUL
    assert result.elapsed_s < 2
    assert native(result.reading) == (PowerState.SHUTOFF, "terminated", "signal:SIGTERM")
    assert driver.shutdown("sleeper").outcome is Outcome.ALREADY_OFF


def test_a_process_that_ignores_sigterm_is_forced_off_with_its_children(driver: ProcessDriver) -> None:
    pid = start_trapper(driver)
    result = driver.shutdown("trapper", timeout=0.6, retry_interval=0.2)
    assert result.outcome is Outcome.FORCED
    assert 0.6 <= result.elapsed_s < 3
    assert native(result.reading) == (PowerState.SHUTOFF, "powered_off", "signal:SIGKILL")
    assert live_members(pid) == []  # the shell's sleep went too


def test_a_shutdown_without_force_times_out_and_leaves_it_running(driver: ProcessDriver) -> None:
    start_trapper(driver)
    result = driver.shutdown("trapper", timeout=0.3, retry_interval=0.1, force=False)
    assert result.outcome is Outcome.TIMED_OUT
    assert result.reading.power_state is PowerState.RUNNING and result.reading.transition is None
    driver.power_off("trapper")


def test_a_paused_process_is_shut_down_and_nothing_is_left(driver: ProcessDriver) -> None:
    driver.start("sleeper")
    pid = started_pid(driver, "sleeper")
    driver.pause("sleeper")
    result = driver.shutdown("sleeper", timeout=5, retry_interval=1)
    # The core forces a paused instance off at once (it cannot act on the request);
    # were it asked, the driver would follow the stop signal with SIGCONT.
    assert result.outcome in (Outcome.FORCED, Outcome.GRACEFUL)
    assert result.elapsed_s < 2
    assert result.reading.power_state is PowerState.SHUTOFF
    assert live_members(pid) == []


def test_an_instance_may_name_its_own_stop_signal(driver: ProcessDriver) -> None:
    reading = driver.define("interrupted", ["sleep", "30"], stop_signal="INT")
    assert native(reading) == (PowerState.SHUTOFF, "never_started", None)
    driver.start("interrupted")
    result = driver.shutdown("interrupted", timeout=5, retry_interval=1)
    assert result.outcome is Outcome.GRACEFUL
    assert result.reading.native_reason == "signal:SIGINT"


def test_signals_the_driver_ignores_are_not_inherited(driver: ProcessDriver) -> None:
    # Background jobs of a shell start ignoring SIGINT, and ignored signals survive
    # exec: the driver resets every signal so the stop signal still works.
    driver.define("interrupted", ["sleep", "30"], stop_signal="SIGINT")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        driver.start("interrupted")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert driver.shutdown("interrupted", timeout=2, retry_interval=1).outcome is Outcome.GRACEFUL


def test_a_nonzero_exit_is_a_crash_with_its_status(driver: ProcessDriver) -> None:
    assert driver.start("crasher").power_state is PowerState.RUNNING
    crashed = wait_for_state(driver, "crasher", PowerState.CRASHED)
    assert native(crashed) == (PowerState.CRASHED, "exited", "exit:3")
    restarted = driver.start("crasher")  # start is allowed from crashed
    assert restarted.power_state is PowerState.RUNNING
    wait_for_state(driver, "crasher", PowerState.CRASHED)
    cleared = driver.power_off("crasher")  # clears the crash, keeping the status
    assert native(cleared) == (PowerState.SHUTOFF, "powered_off", "exit:3")


def test_death_by_a_signal_it_was_not_sent_is_a_crash(driver: ProcessDriver) -> None:
    driver.start("segv")
    crashed = wait_for_state(driver, "segv", PowerState.CRASHED)
    assert native(crashed) == (PowerState.CRASHED, "exited", "signal:SIGSEGV")


def test_a_kill_from_someone_else_is_a_crash(driver: ProcessDriver) -> None:
    driver.start("sleeper")
    os.kill(started_pid(driver, "sleeper"), signal.SIGTERM)  # not through the driver
    crashed = wait_for_state(driver, "sleeper", PowerState.CRASHED)
    assert native(crashed) == (PowerState.CRASHED, "exited", "signal:SIGTERM")


def test_a_clean_exit_is_shutoff(driver: ProcessDriver) -> None:
    driver.define("oneshot", ["true"])
    driver.start("oneshot")
    assert native(wait_for_state(driver, "oneshot", PowerState.SHUTOFF)) == (
        PowerState.SHUTOFF,
        "exited",
        "exit:0",
    )


def test_hard_reboot_replaces_the_process(driver: ProcessDriver) -> None:
    driver.start("sleeper")
    before = started_pid(driver, "sleeper")
    result = driver.reboot("sleeper", hard=True)
    assert result.outcome is Outcome.FORCED and result.reading.power_state is PowerState.RUNNING
    after = started_pid(driver, "sleeper")
    assert after != before and live_members(before) == []
    # From crashed too.
    driver.start("crasher")
    wait_for_state(driver, "crasher", PowerState.CRASHED)
    assert driver.reboot("crasher", hard=True).reading.power_state is PowerState.RUNNING


def test_delete_stops_it_and_removes_its_definition(driver: ProcessDriver, home: Path) -> None:
    driver.start("sleeper")
    pid = started_pid(driver, "sleeper")
    driver.delete("sleeper")
    assert live_members(pid) == []
    with pytest.raises(InstanceNotFound):
        driver.get_instance("sleeper")
    assert "sleeper" not in json.loads((home / "instances.json").read_text(encoding="utf-8"))
    assert [r.name for r in driver.list_instances()] == ["trapper", "crasher", "segv"]
    driver.delete("segv")  # never started: deleted all the same
    assert [r.name for r in driver.list_instances()] == ["trapper", "crasher"]


def test_invalid_transitions_are_refused_and_change_nothing(driver: ProcessDriver) -> None:
    with pytest.raises(InvalidStateTransition) as caught:
        driver.pause("sleeper")
    assert (caught.value.operation, caught.value.state) == ("pause", "shutoff")
    for call in (
        lambda: driver.unpause("sleeper"),
        lambda: driver.power_off("sleeper"),
        lambda: driver.reboot("sleeper", hard=True),
    ):
        with pytest.raises(InvalidStateTransition):
            call()
    assert native(driver.get_instance("sleeper")) == (PowerState.SHUTOFF, "never_started", None)
    driver.start("sleeper")
    with pytest.raises(InvalidStateTransition):
        driver.start("sleeper")
    with pytest.raises(InvalidStateTransition):
        driver.unpause("sleeper")
    assert driver.get_instance("sleeper").power_state is PowerState.RUNNING
    driver.power_off("sleeper")


# -- events ---------------------------------------------------------------------------


def test_events_come_from_the_cores_polling_with_their_causes(
    driver: ProcessDriver, event_log: EventLog
) -> None:
    with driver.subscribe(event_log):
        driver.start("sleeper")
        started = event_log.wait("sleeper", EventKind.STARTED)
        driver.pause("sleeper")
        paused = event_log.wait("sleeper", EventKind.PAUSED)
        driver.unpause("sleeper")
        unpaused = event_log.wait("sleeper", EventKind.UNPAUSED)
        driver.power_off("sleeper")
        stopped = event_log.wait("sleeper", EventKind.STOPPED)
        driver.start("segv")
        crashed = event_log.wait("segv", EventKind.CRASHED)
    assert started.caused_by_operation is Operation.START
    assert paused.caused_by_operation is Operation.PAUSE
    assert unpaused.caused_by_operation is Operation.UNPAUSE
    assert stopped.caused_by_operation is Operation.POWER_OFF
    assert crashed.caused_by_operation is None  # not ours: the process failed
    assert (crashed.native_state, crashed.native_reason) == ("exited", "signal:SIGSEGV")


def test_a_shutdown_in_progress_shows_in_events(driver: ProcessDriver, event_log: EventLog) -> None:
    with driver.subscribe(event_log):
        start_trapper(driver)
        event_log.wait("trapper", EventKind.STARTED)
        result = driver.shutdown("trapper", timeout=0.3, retry_interval=0.1)
        stopped = event_log.wait("trapper", EventKind.STOPPED)
    assert result.outcome is Outcome.FORCED
    assert stopped.caused_by_operation is Operation.SHUTDOWN
    shutting_down = [e for e in event_log.events if e.transition is Transition.SHUTTING_DOWN]
    assert shutting_down, "polling saw the shutdown in progress"


def test_hard_reboot_publishes_rebooted(driver: ProcessDriver, event_log: EventLog) -> None:
    driver.start("sleeper")
    with driver.subscribe(event_log):
        driver.reboot("sleeper", hard=True)
        rebooted = event_log.wait("sleeper", EventKind.REBOOTED)
    assert rebooted.caused_by_operation is Operation.HARD_REBOOT


# -- other processes, exit status, pid reuse ---------------------------------------------


def test_a_later_process_sees_the_instance_and_an_unknown_exit_status(
    driver: ProcessDriver, home: Path
) -> None:
    script = (
        "import sys, powerdrivers; "
        "d = powerdrivers.load_driver('procs', sys.argv[1]); "
        "d.start('sleeper'); d.start('crasher'); d.close()"
    )
    subprocess.run([sys.executable, "-c", script, uri_of(home)], check=True, timeout=30)
    assert driver.get_instance("sleeper").power_state is PowerState.RUNNING
    # The other process started it and has ended: nobody here can collect the status.
    ended = wait_for_state(driver, "crasher", PowerState.SHUTOFF)
    assert native(ended) == (PowerState.SHUTOFF, "exited", "exit:unknown")
    # And this driver can still stop what the other one started.
    assert native(driver.shutdown("sleeper", timeout=5, retry_interval=1).reading) == (
        PowerState.SHUTOFF,
        "terminated",
        "exit:unknown",
    )


def test_a_reused_pid_is_not_mistaken_for_the_instance(driver: ProcessDriver, home: Path) -> None:
    driver.start("sleeper")
    driver.power_off("sleeper")
    state_file = home / ".procs" / "state.json"
    state = json.loads(state_file.read_text(encoding="utf-8"))
    record = state["instances"][instance_id("sleeper")]
    # Pretend the instance's pid now belongs to this very test process.
    record.update(pid=os.getpid(), status=None, powered_off=False)
    state_file.write_text(json.dumps(state), encoding="utf-8")
    assert native(driver.get_instance("sleeper")) == (PowerState.SHUTOFF, "exited", "exit:unknown")


def test_two_drivers_share_one_directory(driver: ProcessDriver, home: Path) -> None:
    with powerdrivers.load_driver("procs", uri_of(home)) as other:
        driver.start("crasher")
        # Either driver may collect the status; both then report it.
        assert native(wait_for_state(driver, "crasher", PowerState.CRASHED))[2] == "exit:3"
        assert other.get_instance("crasher").native_reason == "exit:3"


# -- errors and definitions -----------------------------------------------------------------


def test_a_missing_command_is_a_hypervisor_error_with_its_code(driver: ProcessDriver) -> None:
    driver.define("ghost", ["no-such-command-anywhere"])
    with pytest.raises(HypervisorError) as caught:
        driver.start("ghost")
    assert caught.value.code == "ENOENT"
    assert native(driver.get_instance("ghost")) == (PowerState.SHUTOFF, "never_started", None)


def test_a_command_that_is_not_executable_is_refused(driver: ProcessDriver, home: Path) -> None:
    (home / "script").write_text("#!/bin/sh\n", encoding="utf-8")
    driver.define("noexec", ["./script"])
    with pytest.raises(HypervisorError) as caught:
        driver.start("noexec")
    assert caught.value.code == "EACCES"


@pytest.mark.parametrize(
    ("name", "command", "stop_signal"),
    [
        ("empty", [], None),
        ("string", "sleep 30", None),
        ("../escape", ["true"], None),
        ("kill", ["true"], "SIGKILL"),
        ("segv", ["true"], "SEGV"),
        ("bogus", ["true"], "SIGNOPE"),
    ],
)
def test_an_invalid_definition_is_an_invalid_spec(
    tmp_path: Path, name: str, command: list[str], stop_signal: str | None
) -> None:
    with pytest.raises(InvalidSpec):
        define(tmp_path, name, command, stop_signal=stop_signal)


def test_a_broken_instances_file_is_a_hypervisor_error(driver: ProcessDriver, home: Path) -> None:
    (home / "instances.json").write_text('{"x": {"comand": ["true"]}}', encoding="utf-8")
    with pytest.raises(HypervisorError) as caught:
        driver.list_instances()
    assert caught.value.code == "invalid-definitions"
    (home / "instances.json").write_text("not json", encoding="utf-8")
    with pytest.raises(HypervisorError):
        driver.get_instance("sleeper")


def test_a_process_that_never_stops_times_out_as_a_typed_error(
    driver: ProcessDriver, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    driver.start("sleeper")
    with powerdrivers.load_driver("procs", uri_of(home), timeout="0.2") as impatient:
        # SIGSTOP gets lost on its way: /proc never shows the process stopped.
        monkeypatch.setattr(_proc, "signal_group", lambda pgid, signum: True)
        began = time.monotonic()
        with pytest.raises(OperationTimeout):
            impatient.pause("sleeper")
        assert time.monotonic() - began < 2
    monkeypatch.undo()
    assert driver.get_instance("sleeper").power_state is PowerState.RUNNING
    driver.power_off("sleeper")


def test_the_native_table_covers_every_pair_the_driver_reports() -> None:
    for row in PROCS_NATIVE_STATES:
        assert row.why, f"{row.native_state}/{row.native_reason} says nothing about why"
    pairs = [
        ("never_started", None),
        ("running", "R"),
        ("running", "S"),
        ("running", "D"),
        ("running", "I"),
        ("stopped", "T"),
        ("stopped", "t"),
        ("exited", "exit:0"),
        ("exited", "exit:3"),
        ("exited", "exit:unknown"),
        ("exited", "signal:SIGSEGV"),
        ("exited", "signal:SIGTERM"),
        ("terminated", "signal:SIGTERM"),
        ("terminated", "exit:143"),
        ("terminated", "signal:SIGSEGV"),
        ("powered_off", "signal:SIGKILL"),
        ("powered_off", "exit:unknown"),
    ]
    expected: dict[tuple[str, str | None], PowerState] = {
        ("exited", "exit:3"): PowerState.CRASHED,
        ("exited", "signal:SIGSEGV"): PowerState.CRASHED,
        ("exited", "signal:SIGTERM"): PowerState.CRASHED,
        ("terminated", "signal:SIGSEGV"): PowerState.CRASHED,
    }
    for state, reason in pairs:
        assert PROCS_NATIVE_STATES.covers(state, reason)
        power_state, _ = PROCS_NATIVE_STATES.lookup(state, reason)
        default = {
            "running": PowerState.RUNNING,
            "stopped": PowerState.PAUSED,
        }.get(state, PowerState.SHUTOFF)
        assert power_state is expected.get((state, reason), default), (state, reason)
    assert {row.native_state for row in PROCS_NATIVE_STATES} == set(ProcsNativeState)


def test_the_readme_lists_every_row_of_the_native_table() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    for row in PROCS_NATIVE_STATES:
        reason = f"`{row.native_reason}`" if row.native_reason is not None else "*(any)*"
        assert f"| `{row.native_state}` | {reason} | {row.power_state.value} |" in readme, row


@pytest.mark.parametrize(
    ("raised", "expected", "code"),
    [
        (TimeoutError("too slow"), OperationTimeout, None),
        (PermissionError(errno.EPERM, "Operation not permitted"), HypervisorError, "EPERM"),
        (FileNotFoundError(errno.ENOENT, "No such file", "cmd"), HypervisorError, "ENOENT"),
        (OSError(errno.E2BIG, "Argument list too long"), HypervisorError, "E2BIG"),
        (RuntimeError("a bug"), HypervisorError, "internal"),
        (InstanceNotFound("x"), InstanceNotFound, None),
    ],
)
def test_errors_are_translated_in_one_place(
    raised: Exception, expected: type[Exception], code: str | None
) -> None:
    with pytest.raises(expected) as caught, translated("doing it"):
        raise raised
    if code is not None:
        assert isinstance(caught.value, HypervisorError) and caught.value.code == code
