"""The procs driver: instances that are local processes."""

from __future__ import annotations

import math
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar

from powerdrivers import (
    Capability,
    Driver,
    EventKind,
    InstanceNotFound,
    InstanceReading,
    InvalidOption,
    Operation,
    PowerState,
    check_operation,
    redact_uri,
)
from powerdrivers_procs import _proc
from powerdrivers_procs._definitions import Definition
from powerdrivers_procs._errors import translated
from powerdrivers_procs._native import PROCS_NATIVE_STATES, ProcsNativeState
from powerdrivers_procs._proc import Child, ProcStat
from powerdrivers_procs._state import Home, Record, Snapshot
from powerdrivers_procs._uri import directory_of

_OPTIONS = frozenset({"poll_interval", "timeout"})
_UNKNOWN_EXIT = "exit:unknown"


class ProcessDriver(Driver):
    """Runs local processes as instances, to show the state model fits beyond hypervisors.

    **URI**: ``procs:///path/to/dir``, an existing directory holding
    ``instances.json``, which maps instance names to definitions::

        {"web": {"command": ["python3", "-m", "http.server"], "stop_signal": "SIGINT"}}

    ``command`` is an argv (no shell), run in the directory; ``stop_signal``
    (default ``SIGTERM``) is what a graceful shutdown sends. Write the file
    by hand, or call ``powerdrivers_procs.define(dir, name, argv)``. The
    driver keeps its own state (pid, start time, exit status) and the
    instances' output in ``.procs/`` there. An instance's id is a UUID5 of
    its name; either addresses it.

    **Options**: ``poll_interval`` (seconds between the core's polls for
    events, default 0.5) and ``timeout`` (seconds to wait for ``/proc`` to
    show a kill, stop or continue, default 10).

    **States** come from ``/proc/<pid>/stat``: running (any letter but T, t,
    Z, X), paused (T or t), and once the process has ended: shutoff if it
    exited 0 or ended because the driver asked, crashed if it exited
    nonzero or died of a signal the driver did not send, with the exit
    status as the native reason.

    **Limitation**: only the process that started an instance can collect
    its exit status. A later process sees an ended instance as
    ``exit:unknown``, shut off.
    """

    name: ClassVar[str] = "procs"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {
            Capability.START,
            Capability.POWER_OFF,
            Capability.SHUTDOWN,
            Capability.PAUSE,
            Capability.HARD_REBOOT,
            Capability.DELETE,
        }
    )
    native_states = PROCS_NATIVE_STATES

    def __init__(self, uri: str | None = None, **options: Any) -> None:
        self._reject_unknown_options(self.name, options, _OPTIONS)
        poll_interval = _seconds(options, "poll_interval", 0.5)
        self._timeout_s = _seconds(options, "timeout", 10.0)
        directory = directory_of(uri)
        super().__init__(uri, poll_interval_s=poll_interval)
        with translated(f"opening {redact_uri(uri or '')}"):
            self._home = Home(directory)

    # -- extras for users -------------------------------------------------

    def define(
        self, name: str, command: Sequence[str], stop_signal: str | int | None = None
    ) -> InstanceReading:
        """Define (or redefine) instance ``name`` in this directory and return its reading.

        Like :func:`powerdrivers_procs.define`; raises
        :class:`powerdrivers.InvalidSpec` for an invalid definition.
        """
        self._check_open()
        with self._directory(f"defining instance {name!r}") as snapshot:
            definition = snapshot.define(name, command, stop_signal)
        return self.get_instance(definition.id)

    def pid(self, ref: str) -> int | None:
        """Return the pid of the instance's process, or ``None`` if it is not running."""
        self._check_open()
        with self._directory(f"reading {ref}") as snapshot:
            definition = _find(snapshot, ref)
            record = snapshot.records.get(definition.id)
            if record is None or self._settle(record) is None:
                return None
            return record.pid

    # -- reading ------------------------------------------------------------

    def _read_all(self) -> list[InstanceReading]:
        with self._directory("listing instances") as snapshot:
            return [self._observe(snapshot, definition) for definition in snapshot.definitions.values()]

    def _read_one(self, ref: str) -> InstanceReading:
        with self._directory(f"reading {ref}") as snapshot:
            return self._observe(snapshot, _find(snapshot, ref))

    # -- operations ---------------------------------------------------------

    def _start(self, instance: InstanceReading) -> None:
        with self._operate(instance, Operation.START) as (snapshot, definition, _):
            self._launch(snapshot, definition)

    def _power_off(self, instance: InstanceReading) -> None:
        with self._operate(instance, Operation.POWER_OFF) as (snapshot, definition, current):
            record = snapshot.records.get(definition.id)
            if record is not None and current.power_state is not PowerState.SHUTOFF:
                self._kill(record)

    def _request_shutdown(self, instance: InstanceReading) -> None:
        with self._directory(f"shutting down {instance.name}") as snapshot:
            definition = _find(snapshot, instance.id)
            record = snapshot.records.get(definition.id)
            stat = self._settle(record) if record is not None else None
            if record is None or stat is None:
                return  # it has ended meanwhile; the core's next reading says how
            record.stop_signal_sent = definition.stop_signal.name
            _proc.signal_group(record.pid, definition.stop_signal)
            if stat.stopped:
                # A stopped process acts on the stop signal only once continued.
                _proc.signal_group(record.pid, signal.SIGCONT)

    def _pause(self, instance: InstanceReading) -> None:
        self._signal_and_wait(instance, Operation.PAUSE, signal.SIGSTOP, stopped=True)

    def _unpause(self, instance: InstanceReading) -> None:
        self._signal_and_wait(instance, Operation.UNPAUSE, signal.SIGCONT, stopped=False)

    def _hard_reboot(self, instance: InstanceReading) -> None:
        with self._operate(instance, Operation.HARD_REBOOT) as (snapshot, definition, _):
            record = snapshot.records.get(definition.id)
            if record is not None:
                self._kill(record)
            self._launch(snapshot, definition)
        # Polling sees running before and after, so it cannot report the restart: say it.
        self._publish(EventKind.REBOOTED, self._read_one(instance.id))

    def _delete(self, instance: InstanceReading) -> None:
        with self._operate(instance, Operation.DELETE) as (snapshot, definition, _):
            record = snapshot.records.get(definition.id)
            if record is not None:
                self._kill(record)
            snapshot.undefine(definition.name)
            self._home.log_of(definition.name).unlink(missing_ok=True)

    # -- internals ------------------------------------------------------------

    @contextmanager
    def _directory(self, what: str) -> Iterator[Snapshot]:
        """Open a transaction on the directory, with every error translated."""
        with translated(what), self._home.transaction() as snapshot:
            yield snapshot

    @contextmanager
    def _operate(
        self, instance: InstanceReading, operation: Operation
    ) -> Iterator[tuple[Snapshot, Definition, InstanceReading]]:
        """Open a transaction for ``operation``, re-checked against what the OS shows now.

        Another client, or the process itself, may have changed the instance
        since the core checked it. A power-off finding it already off is let
        through (the core's forced shutdown may race with the process's end)
        with the current reading, for the caller to do nothing.
        """
        with self._directory(f"{operation.value} {instance.name}") as snapshot:
            definition = _find(snapshot, instance.id)
            current = self._observe(snapshot, definition)
            if not (operation is Operation.POWER_OFF and current.power_state is PowerState.SHUTOFF):
                check_operation(definition.name, operation, current.power_state, None)
            yield snapshot, definition, current

    def _observe(self, snapshot: Snapshot, definition: Definition) -> InstanceReading:
        """Read one instance from its record and ``/proc``, collecting its exit status if we can."""
        record = snapshot.records.get(definition.id)
        if record is None:
            return self.native_states.reading(definition.id, definition.name, ProcsNativeState.NEVER_STARTED)
        stat = self._settle(record)
        if stat is not None:
            native = ProcsNativeState.STOPPED if stat.stopped else ProcsNativeState.RUNNING
            return self.native_states.reading(definition.id, definition.name, native, stat.state)
        if record.powered_off:
            native = ProcsNativeState.POWERED_OFF
        elif record.stop_signal_sent is not None:
            native = ProcsNativeState.TERMINATED
        else:
            native = ProcsNativeState.EXITED
        return self.native_states.reading(
            definition.id, definition.name, native, record.status or _UNKNOWN_EXIT
        )

    def _settle(self, record: Record) -> ProcStat | None:
        """Return the live process's stat; once it has ended, record its status if we can and return None."""
        if record.status is not None:
            return None
        outcome = _proc.reap(record.pid, record.starttime)
        if isinstance(outcome, int):
            record.finish(_proc.describe_exit(outcome))
            return None
        stat = _proc.alive(record.pid, record.starttime)
        if stat is None and outcome is Child.RUNNING:
            # It ended between the two looks: it is a zombie now, so collect it.
            again = _proc.reap(record.pid, record.starttime)
            if isinstance(again, int):
                record.finish(_proc.describe_exit(again))
        return stat

    def _launch(self, snapshot: Snapshot, definition: Definition) -> None:
        stat = _proc.spawn(definition.command, self._home.directory, self._home.log_of(definition.name))
        snapshot.records[definition.id] = Record(stat.pid, stat.starttime, time.time())

    def _kill(self, record: Record) -> None:
        """SIGKILL the instance's process group and wait until none of it is left."""
        record.powered_off = True
        if not self._group_is_ours(record):
            return  # its pid now belongs to someone else, so its group is gone
        _proc.signal_group(record.pid, signal.SIGKILL)
        _proc.wait_until(
            lambda: True if self._settle(record) is None and not _live_group(record.pid) else None,
            self._timeout_s,
            f"the end of process group {record.pid} after SIGKILL",
        )

    @staticmethod
    def _group_is_ours(record: Record) -> bool:
        """Whether process group ``record.pid`` can only be the instance's.

        True while its leader lives (a session leader cannot leave its
        group), and when no process has that pid at all: Linux does not
        reuse a pid while a group of that id exists. False when the pid
        belongs to a later process.
        """
        stat = _proc.read_stat(record.pid)
        return stat is None or stat.starttime == record.starttime

    def _signal_and_wait(
        self, instance: InstanceReading, operation: Operation, signum: signal.Signals, *, stopped: bool
    ) -> None:
        with self._operate(instance, operation) as (snapshot, definition, _):
            record = snapshot.records[definition.id]
            _proc.signal_group(record.pid, signum)

            def arrived() -> bool | None:
                stat = self._settle(record)
                return True if stat is None or stat.stopped is stopped else None

            _proc.wait_until(
                arrived, self._timeout_s, f"{instance.name} {'stopping' if stopped else 'continuing'}"
            )


def _find(snapshot: Snapshot, ref: str) -> Definition:
    definition = snapshot.find(ref)
    if definition is None:
        raise InstanceNotFound(ref)
    return definition


def _live_group(pgid: int) -> bool:
    return any(stat.pgrp == pgid for stat in _proc.live_processes())


def _seconds(options: dict[str, Any], option: str, default: float) -> float:
    value = options.get(option, default)
    try:
        seconds = float(str(value))
    except ValueError:
        raise InvalidOption(f"{option} must be a number of seconds, not {value!r}") from None
    if not (seconds > 0 and math.isfinite(seconds)):
        raise InvalidOption(f"{option} must be more than 0 s, not {value!r}")
    return seconds
