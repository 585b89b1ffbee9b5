"""What the procs driver's tests share besides fixtures: the test instances and process helpers.

A module of its own (not conftest) so test modules import it by a name no other test folder uses.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path
from urllib.parse import quote

from powerdrivers_procs._proc import Child, live_processes, read_stat, reap

from powerdrivers import Event, EventKind
from powerdrivers.conformance import EventRecorder

#: The instances every test directory defines.
INSTANCES = {
    "sleeper": ["sleep", "30"],
    "trapper": ["sh", "-c", "trap '' TERM; sleep 30"],
    "crasher": ["sh", "-c", "sleep 0.2; exit 3"],
    "segv": ["sh", "-c", "kill -SEGV $$"],
}


def uri_of(directory: Path) -> str:
    """Return the procs URI of ``directory``."""
    return "procs://" + quote(str(directory))


def recorded_groups(directory: Path) -> list[tuple[int, int]]:
    """Return (pid, start time) of every process the driver recorded in ``directory``."""
    state = directory / ".procs" / "state.json"
    if not state.exists():
        return []
    records = json.loads(state.read_text(encoding="utf-8"))["instances"].values()
    return [(record["pid"], record["starttime"]) for record in records]


def wait_until_ignoring(pid: int, signum: signal.Signals, timeout_s: float = 5.0) -> None:
    """Wait until process ``pid`` ignores ``signum`` (its shell has run ``trap '' ...``).

    A test that sends the stop signal right after ``start`` would otherwise race the shell's
    ``trap``: the default action would end the process and the shutdown would look graceful.
    """
    bit = 1 << (signum - 1)
    deadline = time.monotonic() + timeout_s
    while True:
        status = Path(f"/proc/{pid}/status").read_text(encoding="ascii")
        ignored = next(line for line in status.splitlines() if line.startswith("SigIgn:"))
        if int(ignored.split()[1], 16) & bit:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not start ignoring {signum.name}")
        time.sleep(0.005)


def live_members(pgid: int) -> list[int]:
    """Return the pids of the live (not zombie) processes in process group ``pgid``."""
    return [stat.pid for stat in live_processes() if stat.pgrp == pgid]


def kill_everything(directory: Path, timeout_s: float = 5.0) -> list[int]:
    """SIGKILL every process group recorded in ``directory``, reap ours, return any survivors."""
    groups = recorded_groups(directory)
    for pid, starttime in groups:
        stat = read_stat(pid)
        if stat is None or stat.starttime == starttime:  # not a reused pid
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout_s
    while True:
        pending = [pid for pid, starttime in groups if reap(pid, starttime) is Child.RUNNING]
        survivors = [member for pid, _ in groups for member in live_members(pid)]
        if not pending and not survivors:
            return []
        if time.monotonic() > deadline:
            return pending + survivors
        time.sleep(0.01)


class EventLog(EventRecorder):
    """The core's recording listener, waited on by instance name and kind."""

    def wait(self, name: str, kind: EventKind, timeout_s: float = 5.0) -> Event:
        """Return the first event of ``kind`` about ``name``, waiting up to ``timeout_s``."""
        return self.wait_for_event(kind=kind, name=name, timeout=timeout_s)
