"""The CLI's last lines of defence and its human event stream.

A bug in a driver (an exception that is no powerdrivers error) is one line
and exit 1, not a traceback; Ctrl-C is exit 130 with one line; ``events``
without ``-f json`` prints one readable line per event, naming its cause.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import pytest
from powerdrivers_fake import FakeDriver

from powerdrivers import InstanceReading
from powerdrivers._cli import EXIT_FAILED, EXIT_INTERRUPTED, main


def _a_driver_bug(self: FakeDriver) -> Iterable[InstanceReading]:
    raise RuntimeError("the driver tripped over itself")


@pytest.mark.usefixtures("state")
def test_an_unexpected_exception_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeDriver, "_read_all", _a_driver_bug)
    code = main(["list"])
    out, err = capsys.readouterr()
    assert (code, out) == (EXIT_FAILED, "")
    assert err == (
        "powerdrivers: error: unexpected RuntimeError: the driver tripped over itself "
        "(run with --debug for details)\n"
    )


@pytest.mark.usefixtures("state")
def test_an_unexpected_exception_with_debug_shows_where_it_happened(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(FakeDriver, "_read_all", _a_driver_bug)
    code = main(["--debug", "list"])
    _, err = capsys.readouterr()
    assert code == EXIT_FAILED
    assert "Traceback" in err
    assert "in _a_driver_bug" in err


@pytest.mark.usefixtures("state")
def test_the_event_stream_as_text_names_instance_event_state_and_cause(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def act() -> None:
        time.sleep(0.3)
        main(["pause", "web-2"])

    worker = threading.Thread(target=act)
    worker.start()
    code = main(["events", "--count", "1", "--timeout", "10"])
    worker.join()
    out, err = capsys.readouterr()
    assert code == 0, err
    line = next(row for row in out.splitlines() if "cause=" in row)  # not the pause command's table
    fields = line.split()
    assert fields[1:] == ["web-2", "paused", "paused", "-", "cause=pause"]
    assert fields[0][:4].isdigit()  # the event's time comes first


def test_ctrl_c_while_streaming_events_is_exit_130_and_one_line(tmp_path: Path) -> None:
    uri = f"fake://{tmp_path / 'state.json'}"
    env = {**os.environ, "POWERDRIVERS_DRIVER": "fake", "POWERDRIVERS_URI": uri}
    env.pop("POWERDRIVERS_PASSWORD", None)
    stop = threading.Event()

    def toggle() -> None:
        # Until the stream shows an event, which proves it is up (and Python's Ctrl-C handling too).
        while not stop.wait(0.2):
            main(["-d", "fake", "-c", uri, "pause", "web-2"])
            main(["-d", "fake", "-c", uri, "unpause", "web-2"])

    pipe = subprocess.PIPE
    command = [sys.executable, "-m", "powerdrivers", "-f", "json", "events"]
    with subprocess.Popen(command, env=env, stdout=pipe, stderr=pipe, text=True) as stream:
        toggler = threading.Thread(target=toggle)
        watchdog = threading.Timer(60, stream.kill)
        toggler.start()
        watchdog.start()
        try:
            assert stream.stdout is not None
            line = stream.stdout.readline()
            stop.set()
            assert json.loads(line)["name"] == "web-2"
            stream.send_signal(signal.SIGINT)
            out, err = stream.communicate(timeout=30)
        finally:
            stop.set()
            watchdog.cancel()
            toggler.join()
    assert stream.returncode == EXIT_INTERRUPTED
    assert err.strip() == "powerdrivers: interrupted"
    assert "Traceback" not in out + err
