"""What the operating system shows about a process, and the few things done to one.

Everything here speaks in OS terms (pids, ``/proc``, signals, wait
statuses) and lets ``OSError`` through: the driver translates errors in one
place (:mod:`powerdrivers_procs._errors`).

**Who can know an exit status.** Only a process's parent can collect it
(``waitpid``). A driver object is the parent of what it started only while
the Python process holding it lives; children are kept in a process-wide
registry, so every driver object in this process can reap them, and they are
reaped only with a non-blocking ``waitpid`` on a pid of that registry (never
a blind ``waitpid(-1)``, which would steal other code's children). A later
process sees a finished instance only as gone: its status is unknown.
"""

from __future__ import annotations

import enum
import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

_PROC = Path("/proc")

#: Letters of ``/proc/<pid>/stat`` for a process stopped by a signal (``T``) or a tracer (``t``).
STOPPED_LETTERS = frozenset("Tt")
#: Letters of a process that has ended: a zombie waiting for its parent, or one being torn down.
GONE_LETTERS = frozenset("ZX")

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ProcStat:
    """The fields of ``/proc/<pid>/stat`` the driver uses.

    ``starttime`` (clock ticks after boot) tells a process from a later one
    that reuses its pid.
    """

    pid: int
    state: str
    pgrp: int
    session: int
    starttime: int

    @property
    def gone(self) -> bool:
        """Whether the process has ended (zombie or dead), though its entry remains."""
        return self.state in GONE_LETTERS

    @property
    def stopped(self) -> bool:
        """Whether the process is stopped (``T`` or ``t``)."""
        return self.state in STOPPED_LETTERS


def read_stat(pid: int) -> ProcStat | None:
    """Return the process's ``/proc/<pid>/stat``, or ``None`` if there is no such process."""
    try:
        text = (_PROC / str(pid) / "stat").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) is in parentheses and may itself hold spaces
    # and parentheses: split after the last ')'.
    fields = text[text.rindex(")") + 2 :].split()
    # fields[0] is field 3 of proc(5): state, ppid, pgrp, session, ..., starttime (22).
    return ProcStat(pid, fields[0], int(fields[2]), int(fields[3]), int(fields[19]))


def alive(pid: int, starttime: int) -> ProcStat | None:
    """Return the stat of the process ``pid`` started at ``starttime`` if it has not ended."""
    stat = read_stat(pid)
    if stat is None or stat.starttime != starttime or stat.gone:
        return None
    return stat


def live_processes() -> Iterator[ProcStat]:
    """Yield the stat of every process on the system that has not ended."""
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            stat = read_stat(int(entry.name))
            if stat is not None and not stat.gone:
                yield stat


# -- starting and reaping ---------------------------------------------------


class Child(enum.Enum):
    """What a non-blocking reap found, when it found no exit status."""

    RUNNING = "running"
    """Our child, still running (or stopped)."""
    NOT_OURS = "not_ours"
    """Not a child of this process (or already reaped): its status cannot be known here."""


_children: dict[int, tuple[subprocess.Popen[bytes], int]] = {}
_children_lock = threading.Lock()


# Runs in the new process (``python -I -S -c``) between fork and the command's exec:
# default dispositions for every signal and an empty mask, because ignored
# signals survive exec and the driver's own process may ignore some (a shell
# starts background jobs ignoring SIGINT and SIGQUIT; Python ignores SIGPIPE),
# which would make a stop signal silently ineffective. An exec failure is
# reported through the close-on-exec pipe: its errno, or nothing on success.
_TRAMPOLINE = """
import os, signal, sys
report, argv = int(sys.argv[1]), sys.argv[2:]
for signum in signal.valid_signals():
    try:
        signal.signal(signum, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
signal.pthread_sigmask(signal.SIG_SETMASK, ())
os.set_inheritable(report, False)
try:
    os.execvp(argv[0], argv)
except OSError as error:
    os.write(report, str(error.errno or 0).encode())
os._exit(127)
"""


def spawn(argv: Sequence[str], cwd: Path, log: Path) -> ProcStat:
    """Start ``argv`` detached, in a session of its own, and return its stat.

    The process runs in ``cwd`` with this process's environment, every
    signal at its default disposition, stdin from ``/dev/null`` and its
    output appended to ``log``. Being a session (and process-group) leader,
    it and everything it starts can be signalled as one group. A command
    that cannot be executed raises ``OSError`` (``FileNotFoundError``,
    ``PermissionError``...) here, in the caller.
    """
    if not sys.executable:
        raise FileNotFoundError(errno.ENOENT, "no Python interpreter to start processes with")
    report_read, report_write = os.pipe()
    try:
        with log.open("ab") as output:
            process = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _TRAMPOLINE, str(report_write), *argv],
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                pass_fds=(report_write,),
            )
        os.close(report_write)
        report_write = -1
        with os.fdopen(report_read, "rb") as reader:
            report_read = -1
            failure = reader.read()  # EOF once the command is executing
    finally:
        for fd in (report_read, report_write):
            if fd >= 0:
                os.close(fd)
    if failure:
        process.wait()
        code = int(failure)
        raise OSError(code, os.strerror(code), argv[0])
    # An unreaped child keeps its /proc entry even if it has already exited.
    stat = read_stat(process.pid)
    if stat is None:  # pragma: no cover - only if someone else reaped our child
        raise ChildProcessError(f"process {process.pid} vanished as it started")
    with _children_lock:
        # Kept so that Popen never reaps it behind our back (it would, from
        # its finaliser, and take the exit status with it).
        _children[process.pid] = (process, stat.starttime)
    return stat


def reap(pid: int, starttime: int) -> int | Child:
    """Collect the exit status of our child ``pid`` (started at ``starttime``) without blocking.

    Returns the status as :func:`os.waitstatus_to_exitcode` gives it (a
    negative number is the signal that killed it), or :class:`Child`. Only a
    pid this process started, with the same start time, is waited for, so a
    reused pid never yields another process's status.
    """
    with _children_lock:
        child = _children.get(pid)
        if child is None or child[1] != starttime:
            return Child.NOT_OURS
        try:
            found, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            del _children[pid]
            return Child.NOT_OURS
        if found == 0:
            return Child.RUNNING
        code = os.waitstatus_to_exitcode(status)
        process, _ = _children.pop(pid)
        process.returncode = code  # Popen now knows it ended and leaves it alone.
        return code


def describe_exit(code: int) -> str:
    """Return ``exit:N`` for an exit status, ``signal:SIGNAME`` for death by a signal."""
    if code >= 0:
        return f"exit:{code}"
    try:
        return f"signal:{signal.Signals(-code).name}"
    except ValueError:
        return f"signal:{-code}"


# -- signals ----------------------------------------------------------------


def parse_signal(value: str | int) -> signal.Signals:
    """Return the signal named ``value``: ``TERM``, ``SIGTERM``, ``sigterm`` or ``15``.

    Raises ``ValueError`` for anything else.
    """
    text = str(value).strip()
    if text.isdigit():
        return signal.Signals(int(text))
    name = text.upper()
    if not name.startswith("SIG"):
        name = "SIG" + name
    try:
        return signal.Signals[name]
    except KeyError:
        raise ValueError(f"{value!r} is not a signal name") from None


def signal_group(pgid: int, signum: int) -> bool:
    """Send ``signum`` to process group ``pgid``; ``False`` if the group no longer exists."""
    try:
        os.killpg(pgid, signum)
    except ProcessLookupError:
        return False
    return True


def wait_until(check: Callable[[], _T | None], timeout_s: float, what: str) -> _T:
    """Call ``check`` until it returns something other than ``None``; ``TimeoutError`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.001
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"{what} did not happen within {timeout_s:g} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)
