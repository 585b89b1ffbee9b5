"""The power operations: checks, current_operations bookkeeping, timing and guest cooperation.

An operation is checked and entered in the VM's ``current_operations`` atomically, runs, and
leaves ``current_operations`` whatever its outcome, as xapi's ``with_vm_operation`` does.
Clean shutdown and clean reboot wait for the guest: a cooperative guest acts after the guest
delay; an uncooperative one never does, and the call fails with VM_SHUTDOWN_TIMEOUT when the
shutdown timeout expires (xapi's default is 1200 s), unless it is cancelled first, by
``task.cancel`` or by a hard shutdown/reboot, which cancel pending clean operations before
they act. Every wait is bounded and ends early when the simulator stops.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ._errors import HANDLE_INVALID, INTERNAL_ERROR, TASK_CANCELLED, VM_SHUTDOWN_TIMEOUT, XapiError
from ._lifecycle import CANCELLED_BY, HALTED, PAUSED, RUNNING, SUSPENDED, operation_error

if TYPE_CHECKING:
    from ._world import World

CANCEL_WAIT = 10.0
"""How long a hard operation waits for the operations it cancelled to leave current_operations."""


class PowerEngine:
    """Runs one lifecycle operation of one VM under one task."""

    def __init__(self, world: World) -> None:
        self._world = world

    def run(self, task: str, operation: str, vm: str, args: tuple[Any, ...]) -> str:
        """Check, perform and account for ``operation``; returns the call's (empty) result."""
        world = self._world
        with world.db.cond:
            record = world.db.raw("VM", vm)
            if record is None:
                raise XapiError(HANDLE_INVALID, "VM", vm)
            if operation in ("start_on", "resume_on") and not world.db.exists("host", args[0]):
                raise XapiError(HANDLE_INVALID, "host", args[0])
            error = operation_error(vm, record, operation)
            if error is not None:
                raise error
            victims = [
                t for t, op in record["current_operations"].items() if op in CANCELLED_BY.get(operation, ())
            ]
            world.set_current_operation(vm, task, operation)
        try:
            self._cancel(vm, victims)
            self._perform(task, operation, vm, args)
        finally:
            world.set_current_operation(vm, task, None)
        return ""

    def _perform(self, task: str, operation: str, vm: str, args: tuple[Any, ...]) -> None:
        world = self._world
        delay = world.settings.op_delay
        if operation in ("start", "start_on", "resume", "resume_on"):
            start_paused = bool(args[-2])
            self._hold(task, delay, cancellable=True)
            world.apply_power_state(vm, PAUSED if start_paused else RUNNING, new_domain=True)
        elif operation in ("clean_shutdown", "clean_reboot"):
            self._await_guest(task, vm)
            if operation == "clean_shutdown":
                world.apply_power_state(vm, HALTED)
            else:
                world.apply_power_state(vm, RUNNING, new_domain=True)
        elif operation == "suspend":
            self._hold(task, delay, cancellable=True)
            world.apply_power_state(vm, SUSPENDED)
        else:
            self._hold(task, delay, cancellable=False)
            target = {"hard_shutdown": HALTED, "hard_reboot": RUNNING, "pause": PAUSED, "unpause": RUNNING}
            world.apply_power_state(vm, target[operation], new_domain=operation == "hard_reboot")

    def _check(self, task: str, *, cancellable: bool) -> None:
        if self._world.closing.is_set():
            raise XapiError(INTERNAL_ERROR, "The simulated xapi is shutting down")
        if cancellable and self._world.tasks.cancel_requested(task):
            raise XapiError(TASK_CANCELLED, task)

    def _hold(self, task: str, seconds: float, *, cancellable: bool) -> None:
        cond = self._world.db.cond
        deadline = time.monotonic() + seconds
        with cond:
            while True:
                self._check(task, cancellable=cancellable)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return
                cond.wait(remaining)

    def _await_guest(self, task: str, vm: str) -> None:
        world = self._world
        world.tasks.set_progress(task, 0.5)
        start = time.monotonic()
        with world.db.cond:
            while True:
                self._check(task, cancellable=True)
                settings = world.settings
                elapsed = time.monotonic() - start
                cooperative = world.is_cooperative(vm)
                if cooperative and elapsed >= settings.guest_delay:
                    return
                if elapsed >= settings.shutdown_timeout:
                    raise XapiError(VM_SHUTDOWN_TIMEOUT, vm, str(float(settings.shutdown_timeout)))
                target = (
                    min(settings.guest_delay, settings.shutdown_timeout)
                    if cooperative
                    else settings.shutdown_timeout
                )
                world.db.cond.wait(max(0.001, target - elapsed))

    def _cancel(self, vm: str, victims: list[str]) -> None:
        if not victims:
            return
        world = self._world
        for task in victims:
            try:
                world.tasks.request_cancel(task)
            except XapiError:
                continue
        deadline = time.monotonic() + CANCEL_WAIT
        with world.db.cond:
            while True:
                record = world.db.raw("VM", vm)
                pending = record is not None and any(t in record["current_operations"] for t in victims)
                remaining = deadline - time.monotonic()
                if not pending or remaining <= 0 or world.closing.is_set():
                    return
                world.db.cond.wait(remaining)
