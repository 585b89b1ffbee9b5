"""The procs driver's native states: what the OS shows about a process, mapped to canonical states."""

from __future__ import annotations

import enum

from powerdrivers import NativeMapping, NativeStateTable, PowerState
from powerdrivers_procs._definitions import FAULT_SIGNALS


class ProcsNativeState(enum.StrEnum):
    """The native states the procs driver reports.

    While the process lives, the state comes from the letter in
    ``/proc/<pid>/stat`` and the reason is that letter. Once it has ended, the
    state says who ended it and the reason is its exit status: ``exit:N``,
    ``signal:SIGNAME``, or ``exit:unknown`` when this process could not
    collect it.
    """

    NEVER_STARTED = "never_started"
    RUNNING = "running"
    STOPPED = "stopped"
    EXITED = "exited"
    TERMINATED = "terminated"
    POWERED_OFF = "powered_off"


_N = ProcsNativeState

_ROWS = [
    NativeMapping(
        _N.NEVER_STARTED,
        None,
        PowerState.SHUTOFF,
        None,
        "Defined in instances.json but never started from this directory: no process, nothing held.",
    ),
    NativeMapping(
        _N.RUNNING,
        None,
        PowerState.RUNNING,
        None,
        "The process exists and /proc shows any letter but T, t, Z or X (R running, S sleeping, "
        "D in uninterruptible sleep, I idle...); the reason is that letter. Whether it computes or "
        "sleeps is a statistic, not a power state, as libvirt's BLOCKED should have been.",
    ),
    NativeMapping(
        _N.STOPPED,
        "T",
        PowerState.PAUSED,
        None,
        "Stopped by a signal (SIGSTOP from pause, or job control): its memory stays in place and "
        "nothing is scheduled until SIGCONT, which is what paused means.",
    ),
    NativeMapping(
        _N.STOPPED,
        "t",
        PowerState.PAUSED,
        None,
        "Stopped by a tracer (a debugger): nothing is scheduled, memory in place; unpause's SIGCONT "
        "does not release a tracee, the tracer must.",
    ),
    NativeMapping(
        _N.EXITED,
        "exit:0",
        PowerState.SHUTOFF,
        None,
        "Ended on its own with status 0: a clean end, nothing to inspect.",
    ),
    NativeMapping(
        _N.EXITED,
        "exit:unknown",
        PowerState.SHUTOFF,
        None,
        "Gone, but this process is not the one that started it, so its exit status could not be "
        "collected (only a parent can): reported off, since nothing shows that it failed.",
    ),
    NativeMapping(
        _N.EXITED,
        None,
        PowerState.CRASHED,
        None,
        "Ended without being asked, with a nonzero status (exit:N) or by a signal the driver did "
        "not send (signal:SIGSEGV, or a SIGTERM from someone else): a failure, kept for inspection "
        "with the exit status as the reason.",
    ),
    NativeMapping(
        _N.TERMINATED,
        None,
        PowerState.SHUTOFF,
        None,
        "Ended after a graceful shutdown sent its stop signal: killed by that signal, or exiting "
        "in response with any status (programs often exit nonzero, 143, when told to stop).",
    ),
    *(
        NativeMapping(
            _N.TERMINATED,
            f"signal:{signum.name}",
            PowerState.CRASHED,
            None,
            f"Killed by {signum.name} while shutting down: a fault signal the driver never sends "
            "(no stop signal may be one), so the program crashed on its way out.",
        )
        for signum in sorted(FAULT_SIGNALS)
    ),
    NativeMapping(
        _N.POWERED_OFF,
        None,
        PowerState.SHUTOFF,
        None,
        "Powered off by the driver: SIGKILL to its process group (power_off, a forced shutdown, "
        "a hard reboot, or clearing a crashed instance); the reason keeps how the process ended.",
    ),
]

#: Every (native state, reason) the procs driver can report, with its canonical meaning.
PROCS_NATIVE_STATES = NativeStateTable("procs", _ROWS)
