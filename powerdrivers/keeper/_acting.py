"""Carrying actions out: intent first, the driver second, the outcome last.

Runs on the keeper's action threads. A corrective action re-reads the instance right before it
acts and acts only if the drift is still there; every action is recorded as ``running`` before
the driver is called (none is taken when that record cannot be written) and closed after.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from powerdrivers import (
    HypervisorConnectionError,
    InstanceNotFound,
    Operation,
    PowerDriversError,
)
from powerdrivers.keeper._decide import Decision, decide
from powerdrivers.keeper._errors import ActionInFlight, KeeperError, StoreError
from powerdrivers.keeper._handoff import ActionEnd, utcnow
from powerdrivers.keeper._host import HostWorker
from powerdrivers.keeper._model import Action, ActionStatus, Cause, Policy
from powerdrivers.keeper._operations import perform
from powerdrivers.keeper._settings import KeeperSettings
from powerdrivers.keeper._store_api import KeeperStore

_LOG = logging.getLogger("powerdrivers.keeper")

#: Seconds between the tries to record an action's end when the store does not answer.
_FINISH_RETRIES = (0.2, 0.5, 1.0, 2.0)


class Actor:
    """Hands actions to a small pool of threads and reports each end to its host's worker."""

    def __init__(self, store: KeeperStore, settings: KeeperSettings, threads: int = 8) -> None:
        self._store = store
        self._settings = settings
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="keeper-action")
        self._closing = threading.Event()

    def correct(
        self, worker: HostWorker, instance_id: str, decision: Decision, cause: Cause | None, policy: Policy
    ) -> None:
        """Queue a corrective action (from the worker's thread)."""
        if self._closing.is_set():
            return
        self._pool.submit(self._correct, worker, instance_id, decision, cause, policy)

    def carry_out(self, worker: HostWorker, action: Action) -> None:
        """Queue a pending request (from the worker's thread)."""
        if self._closing.is_set():
            return
        self._pool.submit(self._carry_out, worker, action)

    def close(self) -> None:
        """Take no more actions and wait for those under way (their intents must be closed)."""
        self._closing.set()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- on the action threads ----------------------------------------------------------------

    def _correct(
        self, worker: HostWorker, instance_id: str, decision: Decision, cause: Cause | None, policy: Policy
    ) -> None:
        operation = decision.operation
        assert operation is not None
        try:
            live = worker.driver.get_instance(instance_id)
        except HypervisorConnectionError as error:
            # Nothing done; looked at again once a resync finds the host answering.
            worker.post("unreachable", error)
            worker.post("ended", ActionEnd(instance_id, operation, None, acted=False, retry=True))
            return
        except InstanceNotFound:
            worker.post("ended", ActionEnd(instance_id, operation, None, acted=False))
            worker.post("resync_soon", None)
            return
        except PowerDriversError as error:
            worker.post(
                "ended", ActionEnd(instance_id, operation, f"re-reading it failed: {error}", acted=False)
            )
            return
        worker.post("reading", (live, None))
        if decide(policy, live.power_state, live.transition, cause).operation is not operation:
            _LOG.info("keeper: %s: the drift is gone (%s); nothing done", live.name, live.power_state.value)
            worker.post("ended", ActionEnd(instance_id, operation, None, acted=False))
            return
        options: dict[str, Any] = {}
        if operation is Operation.SHUTDOWN:
            options["timeout"] = self._settings.action_timeout
        try:
            action = self._store.open_action(
                instance_id, operation.value, options, self._settings.who, status=ActionStatus.RUNNING
            )
        except ActionInFlight:
            worker.post(
                "ended", ActionEnd(instance_id, operation, None, acted=False, retry=True, blocked=True)
            )
            return
        except StoreError as error:
            _LOG.error(
                "keeper: %s: the intent to %s could not be recorded (%s); not acting",
                live.name,
                operation.value,
                error,
            )
            worker.post("ended", ActionEnd(instance_id, operation, None, acted=False, retry=True))
            return
        _LOG.info("keeper: %s: %s (%s)", live.name, operation.value, decision.reason)
        self._run(worker, action, operation, action.options)

    def _carry_out(self, worker: HostWorker, action: Action) -> None:
        operation = Operation(action.operation)
        try:
            started = self._store.start_action(action.id, utcnow())
        except KeeperError as error:
            _LOG.info("keeper: request %d not carried out: %s", action.id, error)
            worker.post("ended", ActionEnd(action.instance_id, operation, None, acted=False))
            return
        self._run(worker, started, operation, started.options)

    def _run(
        self, worker: HostWorker, action: Action, operation: Operation, options: Mapping[str, Any]
    ) -> None:
        error: str | None = None
        try:
            reading, outcome = perform(worker.driver, action.instance_id, operation, options)
        except PowerDriversError as failure:
            error = str(failure) or type(failure).__name__
            self._finish(action, ActionStatus.FAILED, error=error)
            if isinstance(failure, HypervisorConnectionError):
                worker.post("unreachable", failure)
        else:
            if outcome == "timed_out":
                error = f"{operation.value} timed out and forcing was not allowed"
            self._finish(
                action, ActionStatus.FAILED if error else ActionStatus.DONE, outcome=outcome, error=error
            )
            worker.post("reading", (reading, operation))
        worker.post("ended", ActionEnd(action.instance_id, operation, error, acted=True))

    def _finish(
        self, action: Action, status: ActionStatus, *, outcome: str | None = None, error: str | None = None
    ) -> None:
        ended = utcnow()
        try:
            for pause in _FINISH_RETRIES:
                try:
                    self._store.finish_action(action.id, status, ended, outcome=outcome, error=error)
                    return
                except StoreError as failure:
                    # An open intent blocks every later action on the instance: a blip is waited out.
                    _LOG.warning("keeper: recording the end of action %d failed: %s", action.id, failure)
                    time.sleep(pause)
            self._store.finish_action(action.id, status, ended, outcome=outcome, error=error)
        except StoreError as failure:
            # The intent stays open; the next start of a keeper closes it as interrupted.
            _LOG.error(
                "keeper: action %d ended %s but could not be recorded: %s", action.id, status.value, failure
            )
        except KeeperError as failure:
            # Someone closed the intent first (a keeper starting on the same host took it for a
            # dead one's): its record stands, and the worker must still hear that the action ended.
            _LOG.warning("keeper: action %d ended %s, but %s", action.id, status.value, failure)
