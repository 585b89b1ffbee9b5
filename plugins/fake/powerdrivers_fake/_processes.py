"""Telling whether the process that wrote something into a shared state file still runs."""

from __future__ import annotations

import os


def process_start(pid: int) -> int | None:
    """Return when process ``pid`` started (clock ticks since boot), or None where that cannot be read.

    With its pid, this names a process for good: a pid is reused, a pid
    with its start time is not.
    """
    fields = _stat_fields(pid)
    return None if fields is None else _start(fields)


def process_alive(pid: int, started: int | None) -> bool:
    """Whether process ``pid``, which started at ``started`` (if known), still runs.

    A zombie (killed, not yet reaped) does not run; a pid now used by a
    process that started at another time is not the one asked about.
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    except OSError:
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return True  # no /proc: the pid answering is all there is to go on
    if fields[0] in ("Z", "X"):
        return False
    return started is None or _start(fields) in (started, None)


def this_process() -> tuple[int, int | None]:
    """Return this process's pid and start time, as :func:`process_alive` takes them."""
    pid = os.getpid()
    # Kept, but checked: a child forked from this process has its own.
    if _THIS[0] != pid:
        _THIS[:] = [pid, process_start(pid)]
    return pid, _THIS[1]


_THIS: list[int | None] = [None, None]


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of ``/proc/PID/stat`` after the command name, from the state on."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            text = stat_file.read().decode("ascii", "replace")
    except OSError:
        return None
    # The command name, in parentheses, may itself contain spaces and parentheses.
    return text.rpartition(")")[2].split()


def _start(fields: list[str]) -> int | None:
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None
