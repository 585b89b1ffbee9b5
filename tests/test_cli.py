"""The powerdrivers CLI: exit codes, JSON shapes, bad input, and nothing changed on failure."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from cli_support import run, run_json

from powerdrivers._cli import main
from powerdrivers._progress import Progress

READING_KEYS = {"id", "name", "power_state", "transition", "native_state", "native_reason"}


def states_of(capsys: pytest.CaptureFixture[str]) -> dict[str, tuple[str, str | None]]:
    return {row["name"]: (row["power_state"], row["transition"]) for row in run_json(capsys, "list")}


def assert_one_line_error(err: str, fragment: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("powerdrivers: error: ") and fragment in lines[0]
    assert "Traceback" not in err


@pytest.mark.usefixtures("state")
class TestReading:
    def test_list_json_shape(self, capsys: pytest.CaptureFixture[str]) -> None:
        rows = run_json(capsys, "list")
        assert [row["name"] for row in rows] == ["batch-7", "cache-1", "legacy-db", "web-1", "web-2"]
        for row in rows:
            assert set(row) >= READING_KEYS
        assert {row["power_state"] for row in rows} == {"running", "paused", "shutoff"}
        assert all(row["transition"] is None for row in rows)

    def test_info_by_name_and_by_id_agree(self, capsys: pytest.CaptureFixture[str]) -> None:
        by_name = run_json(capsys, "info", "web-1")
        by_id = run_json(capsys, "info", by_name["id"])
        assert by_name["id"] == by_id["id"] and by_id["name"] == "web-1"
        assert set(by_id) >= READING_KEYS

    def test_table_output_has_headers_and_rows(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "list")
        assert code == 0
        assert out.splitlines()[0].split()[:3] == ["ID", "NAME", "POWER"]
        assert len(out.splitlines()) == 6

    def test_global_options_may_follow_the_command(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "info", "web-1", "-f", "json")
        assert code == 0 and json.loads(out)["name"] == "web-1"

    def test_states_json_lists_model_table_and_native_states(
        self, capsys: pytest.CaptureFixture[str]
    ) -> None:
        model = run_json(capsys, "states")
        assert [s["name"] for s in model["power_states"]] == [
            "running", "paused", "suspended", "shutoff", "crashed", "unknown",
        ]  # fmt: skip
        shutdown = next(o for o in model["operations"] if o["operation"] == "shutdown")
        assert shutdown["transition"] == "shutting_down" and shutdown["guest_dependent"] is True
        assert shutdown["allowed_from"] == ["paused", "running"] and shutdown["already_done_in"] == [
            "shutoff"
        ]
        native = {row["native_state"]: row for row in model["native_states"]}
        assert native["shutting_down"]["power_state"] == "running"
        assert native["shutting_down"]["transition"] == "shutting_down"

    def test_states_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "states")
        assert code == 0 and "OPERATION" in out and "NATIVE STATE" in out

    def test_stats_json_has_per_vcpu_fractions(self, capsys: pytest.CaptureFixture[str]) -> None:
        stats = run_json(capsys, "stats", "web-1", "--window", "0.5")
        assert stats["name"] == "web-1" and stats["window_s"] == 0.5
        assert len(stats["vcpus"]) == 2
        for vcpu in stats["vcpus"]:
            assert vcpu["running"] + vcpu["blocked"] + vcpu["waiting"] == pytest.approx(1.0, abs=1e-3)

    def test_stats_table(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, _ = run(capsys, "stats", "web-1")
        assert code == 0 and out.splitlines()[0].split() == [
            "VCPU", "RUNNING", "BLOCKED", "WAITING", "HALTED", "HALT/S", "IO/S", "MMIO/S"
        ]  # fmt: skip

    def test_drivers_json_shape(self, capsys: pytest.CaptureFixture[str]) -> None:
        rows = run_json(capsys, "drivers")
        fake = next(row for row in rows if row["name"] == "fake")
        assert fake["status"] == "ok" and fake["distribution"] == "powerdrivers-fake"
        code, out, _ = run(capsys, "drivers")
        assert code == 0 and "powerdrivers-fake" in out


@pytest.mark.usefixtures("state")
class TestOperations:
    def test_start_pause_suspend_resume_poweroff(self, capsys: pytest.CaptureFixture[str]) -> None:
        assert run_json(capsys, "start", "batch-7")["power_state"] == "running"
        assert run_json(capsys, "pause", "batch-7")["power_state"] == "paused"
        assert run_json(capsys, "unpause", "batch-7")["power_state"] == "running"
        assert run_json(capsys, "suspend", "batch-7")["power_state"] == "suspended"
        assert run_json(capsys, "resume", "batch-7")["power_state"] == "running"
        assert run_json(capsys, "poweroff", "batch-7")["power_state"] == "shutoff"

    def test_graceful_and_forced_shutdown_outcomes(self, capsys: pytest.CaptureFixture[str]) -> None:
        graceful = run_json(capsys, "-o", "guest_delay=0.05", "shutdown", "web-1", "--timeout", "5")
        assert set(graceful) >= {"id", "outcome", "elapsed_s", "power_state"}
        assert (graceful["outcome"], graceful["power_state"]) == ("graceful", "shutoff")
        assert graceful["elapsed_s"] < 5
        forced = run_json(capsys, "shutdown", "legacy-db", "--timeout", "0.2", "--retry-interval", "0.05")
        assert (forced["outcome"], forced["power_state"]) == ("forced", "shutoff")
        again = run_json(capsys, "shutdown", "legacy-db")
        assert again["outcome"] == "already_off"

    def test_shutdown_without_force_times_out_with_exit_1(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "-f", "json", "shutdown", "legacy-db", "--timeout", "0.1", "--no-force")
        assert code == 1
        assert json.loads(out)["outcome"] == "timed_out"
        assert_one_line_error(err, "legacy-db did not shut down")
        assert states_of(capsys)["legacy-db"][0] == "running"

    def test_reboot_soft_and_hard(self, capsys: pytest.CaptureFixture[str]) -> None:
        soft = run_json(capsys, "-o", "guest_delay=0.05", "reboot", "web-2")
        assert (soft["outcome"], soft["power_state"]) == ("graceful", "running")
        hard = run_json(capsys, "reboot", "web-2", "--hard")
        assert hard["outcome"] == "forced"
        code, out, _ = run(capsys, "reboot", "legacy-db", "--timeout", "0.05", "--no-force")
        assert code == 1 and "timed_out" in out

    def test_events_stream_json_lines_attributed_to_the_operation(
        self, capsys: pytest.CaptureFixture[str], state: Path
    ) -> None:
        def act() -> None:
            time.sleep(0.3)
            main(["pause", "web-2"])

        worker = threading.Thread(target=act)
        worker.start()
        code, out, err = run(capsys, "-f", "json", "events", "--count", "1", "--timeout", "10")
        worker.join()
        assert code == 0, err
        line = next(row for row in out.splitlines() if row.startswith("{"))
        event = json.loads(line)
        assert set(event) == {
            "time", "id", "name", "event", "power_state", "transition",
            "native_state", "native_reason", "caused_by_operation",
        }  # fmt: skip
        assert (event["name"], event["event"], event["caused_by_operation"]) == ("web-2", "paused", "pause")

    def test_events_table_and_count_not_reached(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, out, err = run(capsys, "events", "--count", "2", "--timeout", "0.2")
        assert code == 1 and out == ""
        assert_one_line_error(err, "received 0 of 2 events")
        code, out, err = run(capsys, "events", "--timeout", "0.1")
        assert code == 0 and out == ""


@pytest.mark.usefixtures("state")
class TestBadInput:
    @pytest.mark.parametrize(
        ("argv", "code", "fragment"),
        [
            (["info", "nosuch"], 3, "no instance with id or name 'nosuch'"),
            (["pause", "batch-7"], 4, "cannot pause instance 'batch-7': it is shutoff"),
            (["resume", "cache-1"], 4, "allowed from: suspended"),
            (["stats", "batch-7"], 4, "cannot vcpu_stats"),
            (["-o", "fail_next=hypervisor", "start", "batch-7"], 1, "injected failure"),
            (["-o", "fail_next=timeout", "start", "batch-7"], 1, "injected failure"),
            (["-o", "fail_connect=connection", "list"], 5, "injected connection failure"),
            (["-o", "fail_connect=authentication", "list"], 5, "injected authentication failure"),
            (["-o", "colour=blue", "list"], 2, "no option colour"),
            (["-o", "novalue", "list"], 2, "is not KEY=VALUE"),
            (["-o", "password=hunter2", "list"], 2, "never a flag"),
            (["-o", "token=abc", "list"], 2, "never a flag"),
            (["shutdown", "web-1", "--retry-interval", "0"], 2, "must be more than 0 seconds, not '0'"),
            (["reboot", "web-1", "--timeout", "inf"], 2, "must be from 0 to 604800 seconds, not 'inf'"),
            (["shutdown", "web-1", "--timeout", "nan"], 2, "must be from 0 to 604800 seconds, not 'nan'"),
            (["events", "--timeout", "1e309"], 2, "must be from 0 to 604800 seconds, not '1e309'"),
            (["stats", "web-2", "--window", "1e-320"], 2, "0 or at least a microsecond, not '1e-320'"),
            (["events", "--count", "2**40"], 2, "must be a whole number, not '2**40'"),
            (["events", "--count", "9" * 30], 2, "must be from 1 to 1000000"),
            (["info", "a\x00b"], 2, "cannot contain a NUL character"),
            (["-c", "http://example.invalid/", "list"], 2, "takes fake:///"),
            (["list", "--bogus"], 2, "unrecognized arguments: --bogus"),
            (["shutdown", "web-1", "--timeout", "soon"], 2, "must be a number of seconds, not 'soon'"),
            (["events", "--count", "0"], 2, "must be from 1 to 1000000, not '0'"),
            ([], 2, "required: COMMAND"),
            (["-d", "nosuch", "list"], 2, "no driver named 'nosuch'; installed drivers: "),
        ],
    )
    def test_exit_code_one_line_and_nothing_changed(
        self, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, fragment: str
    ) -> None:
        before = states_of(capsys)
        got, out, err = run(capsys, *argv)
        assert got == code, err
        assert out == ""
        assert_one_line_error(err, fragment)
        assert states_of(capsys) == before

    def test_no_driver_lists_installed_ones(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.delenv("POWERDRIVERS_DRIVER")
        code, _, err = run(capsys, "list")
        assert code == 2
        assert_one_line_error(
            err, "no driver given: use -d DRIVER or set POWERDRIVERS_DRIVER; installed drivers: fake"
        )

    def test_debug_shows_the_traceback(self, capsys: pytest.CaptureFixture[str]) -> None:
        code, _, err = run(capsys, "--debug", "info", "nosuch")
        assert (
            code == 3 and "Traceback" in err and err.strip().endswith("no instance with id or name 'nosuch'")
        )

    def test_password_from_the_environment_never_shows(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("POWERDRIVERS_PASSWORD", "hunter2")
        code, out, err = run(capsys, "--debug", "-o", "fail_next=hypervisor", "start", "batch-7")
        assert code == 1
        assert "hunter2" not in out + err


@pytest.mark.usefixtures("test_plugins", "state")
def test_unsupported_operation_exits_4(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "-d", "thirdparty", "-c", "", "pause", "alpha")
    assert code == 4 and out == ""
    assert_one_line_error(err, "the thirdparty driver does not support pause")


def test_the_installed_command_runs_without_traceback(state: Path) -> None:
    command = Path(sys.executable).with_name("powerdrivers")
    done = subprocess.run(
        [str(command), "info", "nosuch"], capture_output=True, text=True, env=dict(os.environ), check=False
    )
    assert done.returncode == 3 and done.stdout == ""
    assert done.stderr == "powerdrivers: error: no instance with id or name 'nosuch'\n"
    done = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "shutdown", "web-1", "-o", "guest_delay=0.05"],
        capture_output=True, text=True, env=dict(os.environ), check=False,
    )  # fmt: skip
    assert done.returncode == 0 and "graceful" in done.stdout
    # Piped: no progress line, no control characters.
    assert done.stderr == "" and "\r" not in done.stdout


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_shows_elapsed_time_on_a_terminal_only() -> None:
    terminal = _Terminal()
    with Progress("waiting", terminal, interval_s=0.01):
        time.sleep(0.05)
    assert "waiting..." in terminal.getvalue() and terminal.getvalue().endswith("\r\033[K")
    piped = io.StringIO()
    with Progress("waiting", piped, interval_s=0.01):
        time.sleep(0.03)
    assert piped.getvalue() == ""


@pytest.mark.parametrize(
    "uri",
    [
        "http://user:hunter2#z@127.0.0.1:1",
        "http://user:hun?ter2@127.0.0.1:1",
        "fake://user:hun/ter2@host/x.json",
        "fake://u:a@hunter2@host/",
        "fake:///x.json?password=hunter2",
    ],
)
def test_a_password_in_a_rejected_uri_is_never_printed(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, uri: str
) -> None:
    code, out, err = run(capsys, "--debug", "-c", uri, "list")
    assert code == 2
    assert "hunter2" not in out + err + caplog.text
    assert "hun" not in err and "ter2" not in err  # nor any part of it
