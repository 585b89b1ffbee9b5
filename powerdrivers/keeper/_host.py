"""One host under a keeper: its readings, its decisions and its timers, on one thread.

Everything the worker remembers is touched only by its own thread; the driver's event thread,
the keeper's store poller and the action threads hand it work through its queue. Actions run
on the keeper's action threads (``_acting.py``) so a long graceful shutdown holds up nothing.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from powerdrivers import (
    Driver,
    Event,
    EventKind,
    HypervisorConnectionError,
    InstanceReading,
    Operation,
    PowerDriversError,
    PowerState,
)
from powerdrivers.keeper._backoff import backoff_until, consecutive_failures
from powerdrivers.keeper._decide import classify, decide, is_crash, is_desired
from powerdrivers.keeper._errors import StoreError, UnknownInstance
from powerdrivers.keeper._handoff import ActionEnd, ActionTaker, reading_of, unchanged, utcnow
from powerdrivers.keeper._model import Action, Cause, InstanceView, Policy
from powerdrivers.keeper._restart import to_look_at
from powerdrivers.keeper._settings import KeeperSettings
from powerdrivers.keeper._store_api import KeeperStore

_LOG = logging.getLogger("powerdrivers.keeper")

_RESTARTING = frozenset({Policy.ALWAYS, Policy.ON_FAILURE})


class HostWorker:
    """Keeps one host's instances: observes, records, decides and hands actions out."""

    def __init__(
        self,
        name: str,
        driver: Driver,
        store: KeeperStore,
        settings: KeeperSettings,
        actor: ActionTaker,
        on_synced: Callable[[str, float], None] | None = None,
    ) -> None:
        self.name = name
        self._on_synced = on_synced
        self.driver = driver
        self._store = store
        self._settings = settings
        self._actor = actor
        self._requests: set[int] = set()
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._rng = random.Random()
        self._timers: list[tuple[float, int, str, str]] = []
        self._sequence = itertools.count()
        self._last: dict[str, InstanceReading] = {}
        self._views: dict[str, InstanceView] = {}
        self._stops: dict[str, float] = {}
        self._awaiting_reboot: dict[str, Cause | None] = {}
        self._deferred: set[str] = set()
        self._missed: dict[str, Cause | None] = {}
        # Of those, the ones held back by another process's open action: a store change that
        # shows the action closed brings them back at once; the rest wait for the next resync.
        self._blocked: set[str] = set()
        self.in_flight: dict[str, Operation] = {}
        self.reachable = True
        # Whether the store is known to say "reachable": this keeper alone writes it (it holds the
        # host), so once recorded, a steady resync need not ask the store again.
        self._reachable_recorded = False
        self._next_resync = 0.0
        self.ready = threading.Event()
        """Set once the first resync has ended (well or not)."""
        self.held: set[str] = set()
        """Instances whose intent a dead keeper left open (see ``_restart.py``)."""

    # -- lifecycle ------------------------------------------------------------------------------

    def load(self) -> None:
        """Take the store's last readings and views of this host as the starting point."""
        for view in self._store.instances(self.name):
            self._views[view.id] = view
            self._last[view.id] = reading_of(view)

    def start(self) -> None:
        """Run the worker's thread; the first thing it does is a full resync."""
        self._thread = threading.Thread(target=self._run, name=f"keeper-{self.name}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the thread to end (after the work already queued) and wait for it."""
        self.post("stop", None)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()

    def post(self, kind: str, payload: Any) -> None:
        """Hand the worker something to do, from any thread."""
        self._queue.put((kind, payload))

    def on_event(self, event: Event) -> None:
        """Queue a driver event (the listener: the driver's event thread must not wait)."""
        self.post("event", event)

    # -- the loop -----------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._resync()
        except Exception:
            _LOG.exception("keeper: host %s: the first resync failed", self.name)
        finally:
            self.ready.set()
        busy = self.in_flight.keys() | self._awaiting_reboot.keys()
        for instance_id in to_look_at(self._store, list(self._views.values()), self._last, busy):
            self._evaluate(instance_id, None)
        while True:
            now = time.monotonic()
            due = min([self._next_resync, *(timer[0] for timer in self._timers[:1])])
            try:
                kind, payload = self._queue.get(timeout=max(0.0, due - now))
            except queue.Empty:
                kind, payload = "timers", None
            if kind == "stop":
                return
            try:
                if kind != "timers":
                    self._handle(kind, payload)
                self._fire_timers()
            except StoreError as error:
                _LOG.error("keeper: host %s: the store failed (%s); nothing was acted on", self.name, error)
            except Exception:
                _LOG.exception("keeper: host %s: handling %s failed", self.name, kind)

    def _handle(self, kind: str, payload: Any) -> None:
        if kind == "event":
            self._on_event(payload)
        elif kind == "resync":
            self._resync()
            payload.set()
        elif kind == "reading":
            reading, own = payload
            self._observe(reading, None, own, own=own is not None, queued=True)
        elif kind == "changed":
            self._on_changed(payload)
        elif kind == "ended":
            self._on_action_end(payload)
        elif kind == "unreachable":
            self._mark_unreachable(payload)
        elif kind == "request":
            self._on_request(payload)
        elif kind == "resync_soon":
            self._next_resync = time.monotonic()

    def _fire_timers(self) -> None:
        now = time.monotonic()
        if now >= self._next_resync:
            self._resync()
        while self._timers and self._timers[0][0] <= now:
            _, _, what, instance_id = heapq.heappop(self._timers)
            if what == "reboot_window":
                if instance_id in self._awaiting_reboot:
                    self._evaluate(instance_id, self._awaiting_reboot.pop(instance_id), waited=True)
            else:
                self._evaluate(instance_id, None)

    def _schedule(self, delay: float, what: str, instance_id: str) -> None:
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._sequence), what, instance_id))

    # -- observing ----------------------------------------------------------------------------

    def _on_event(self, event: Event) -> None:
        if event.kind is EventKind.RESYNC:
            self._resync()
            return
        if event.instance_id is None:
            return
        if event.kind is EventKind.DELETED:
            self._vanish(event.instance_id, event.time)
            return
        if event.power_state is None:
            return
        reading = InstanceReading(
            event.instance_id,
            event.name or event.instance_id,
            event.power_state,
            event.transition,
            event.native_state or "",
            event.native_reason,
            event.time,
        )
        own = self.in_flight.get(event.instance_id) if event.caused_by_operation is not None else None
        self._observe(reading, event.kind, event.caused_by_operation, own=own is not None)

    def _resync(self) -> None:
        began = time.monotonic()
        self._next_resync = began + self._settings.resync_interval
        try:
            readings = self.driver.list_instances()
        except HypervisorConnectionError as error:
            self._mark_unreachable(error)
            return
        except PowerDriversError as error:
            _LOG.warning("keeper: host %s: resync failed: %s", self.name, error)
            return
        self._mark_reachable()
        last = self._last
        # The steady state is the common case: compare everything but the time, in one pass.
        changed = [r for r in readings if (before := last.get(r.id)) is None or not unchanged(before, r)]
        for reading in changed:
            self._observe(reading, None, None, own=False)
        if len(readings) != len(last):
            listed = {reading.id for reading in readings}
            for gone in [instance_id for instance_id in last if instance_id not in listed]:
                self._vanish(gone, utcnow())
        for instance_id in [i for i in self._missed if i not in self.in_flight]:
            self._evaluate(instance_id, self._take_missed(instance_id))
        if self._on_synced is not None:
            self._on_synced(self.name, time.monotonic() - began)

    def _observe(
        self,
        reading: InstanceReading,
        kind: EventKind | None,
        caused_by: Operation | None,
        *,
        own: bool,
        queued: bool = False,
    ) -> None:
        previous = self._last.get(reading.id)
        if previous is not None and unchanged(previous, reading) and kind is not EventKind.REBOOTED:
            return
        queued = queued or kind is not None
        if queued and previous is not None and reading.observed_at < previous.observed_at:
            # Older than what is known since: an event queued while a resync ran, or an action
            # thread's reading overtaken by an event (a crash right after the action's read).
            return
        if previous is None:
            cause = Cause.APPEARED
        elif own:
            cause = Cause.OPERATION
        else:
            quick = self._stops.pop(reading.id, None)
            follows_quick_stop = (
                quick is not None and time.monotonic() - quick <= self._settings.reboot_window
            )
            cause = classify(
                kind,
                reading.power_state,
                reading.native_reason,
                caused_by,
                follows_quick_stop=follows_quick_stop,
            )
        if cause is Cause.OUT_OF_BAND and reading.power_state is PowerState.SHUTOFF:
            self._stops[reading.id] = time.monotonic()
        self._store.record_observation(
            self.name,
            reading,
            previous=previous.power_state if previous else None,
            cause=cause,
            operation=caused_by.value if caused_by else None,
            detail="found by reading, not by an event" if kind is None and not own and previous else None,
        )
        self._last[reading.id] = reading
        if self.ready.is_set():
            self.held.discard(reading.id)
        if previous is None:
            self._views[reading.id] = self._store.instance(reading.id)
        if cause is Cause.GUEST_REBOOT:
            self._awaiting_reboot.pop(reading.id, None)
        if cause is Cause.CRASH:
            self._count_crash(reading.id, previous, reading.observed_at)
        self._evaluate(reading.id, cause, own=own)

    def _count_crash(self, instance_id: str, previous: InstanceReading | None, at: datetime) -> None:
        view = self._views.get(instance_id)
        if view is None or view.policy not in _RESTARTING:
            return
        running_since = (
            previous.observed_at if previous and previous.power_state is PowerState.RUNNING else None
        )
        failures = consecutive_failures(view.failures, running_since, at, self._settings)
        self._set_backoff(view, failures)

    def _set_backoff(self, view: InstanceView, failures: int) -> None:
        until = backoff_until(failures, utcnow(), self._settings, self._rng)
        self._store.set_backoff(view.id, failures, until)
        self._views[view.id] = dataclasses.replace(view, failures=failures, backoff_until=until)

    def _count_action_failures(self, instance_id: str, count: int) -> None:
        """Store the instance's consecutive failed actions, so a keeper restart does not forget them."""
        view = self._views.get(instance_id)
        if view is not None and view.action_failures != count:
            self._store.set_action_failures(instance_id, count)
            self._views[instance_id] = dataclasses.replace(view, action_failures=count)

    def _vanish(self, instance_id: str, at: datetime) -> None:
        if self._last.pop(instance_id, None) is None:
            return
        self._views.pop(instance_id, None)
        self._stops.pop(instance_id, None)
        self._awaiting_reboot.pop(instance_id, None)
        self._store.record_vanished(self.name, instance_id, at)

    def _mark_unreachable(self, error: Exception) -> None:
        if self._store.set_host_reachable(self.name, False, utcnow(), error=str(error)):
            _LOG.warning("keeper: host %s unreachable (%s): its readings are stale", self.name, error)
        self.reachable = False
        self._reachable_recorded = False

    def _mark_reachable(self) -> None:
        # The store writes only when the host was marked unreachable (by this keeper, or by a
        # keeper before it that stopped while the host was down).
        if not self._reachable_recorded:
            self._store.set_host_reachable(self.name, True, utcnow())
            self._reachable_recorded = True
        self.reachable = True
        deferred, self._deferred = self._deferred, set()
        for instance_id in deferred:
            self._evaluate(instance_id, None)

    # -- deciding -----------------------------------------------------------------------------

    def _evaluate(
        self, instance_id: str, cause: Cause | None, *, own: bool = False, waited: bool = False
    ) -> None:
        view = self._views.get(instance_id)
        reading = self._last.get(instance_id)
        if view is None or reading is None:
            return
        if not self.reachable:
            self._deferred.add(instance_id)
            return
        if cause is None and is_crash(None, reading.power_state, reading.native_reason):
            cause = Cause.CRASH
        if view.quarantined and is_desired(view.policy, reading.power_state):
            self._views[instance_id] = self._store.release_quarantine(
                instance_id, self._settings.who, utcnow()
            )
        decision = decide(view.policy, reading.power_state, reading.transition, cause, own=own)
        if decision.operation is None:
            if is_desired(view.policy, reading.power_state):
                self._count_action_failures(instance_id, 0)
            return
        if view.quarantined:
            return
        if instance_id in self.in_flight or view.in_flight is not None:
            # Looked at again when that action ends: the change must not be lost.
            self._missed[instance_id] = cause
            if instance_id not in self.in_flight:
                self._blocked.add(instance_id)
            return
        if instance_id in self.held:
            _LOG.warning("keeper: %s: its last action was interrupted; not issued again", view.name)
            return
        wait = (view.backoff_until - utcnow()).total_seconds() if view.backoff_until else 0.0
        if wait > 0:
            self._schedule(wait, "backoff", instance_id)
            return
        if decision.await_reboot and not waited:
            self._awaiting_reboot[instance_id] = cause
            self._schedule(self._settings.reboot_window, "reboot_window", instance_id)
            return
        self.in_flight[instance_id] = decision.operation
        self._actor.correct(self, instance_id, decision, cause, view.policy)

    def _on_request(self, action: Action) -> None:
        if action.id in self._requests or action.instance_id not in self._views:
            return
        self._requests.add(action.id)
        self.in_flight[action.instance_id] = Operation(action.operation)
        self._actor.carry_out(self, action)

    def _on_changed(self, posted: InstanceView) -> None:
        before = self._views.get(posted.id)
        if before is None or posted.host != self.name:
            return
        # The posted view may predate this thread's own last write (read by the poller just
        # before a quarantine, say), so the store's current row decides, never the posted copy.
        try:
            view = self._store.instance(posted.id)
        except UnknownInstance:
            return
        if view.host != self.name:
            return
        self._views[view.id] = view
        if view.policy is not before.policy or (before.quarantined and not view.quarantined):
            self.held.discard(view.id)
            if not view.quarantined:
                self._count_action_failures(view.id, 0)
            self._evaluate(view.id, None)
        elif view.in_flight is None and view.id in self._blocked and view.id not in self.in_flight:
            self._evaluate(view.id, self._take_missed(view.id))

    def _take_missed(self, instance_id: str) -> Cause | None:
        self._blocked.discard(instance_id)
        return self._missed.pop(instance_id, None)

    def _on_action_end(self, end: ActionEnd) -> None:
        self.in_flight.pop(end.instance_id, None)
        if end.retry:
            # Looked at again when the blocking action ends or at the next resync, not at once.
            self._missed.setdefault(end.instance_id, None)
            if end.blocked:
                self._blocked.add(end.instance_id)
            return
        if end.error is None:
            if end.acted:
                self._count_action_failures(end.instance_id, 0)
            if end.instance_id in self._missed:
                self._evaluate(end.instance_id, self._take_missed(end.instance_id))
            return
        self._take_missed(end.instance_id)
        before = self._views.get(end.instance_id)
        if before is None:
            return
        failed = before.action_failures + 1
        self._count_action_failures(before.id, failed)
        view = self._views[before.id]
        if failed >= self._settings.quarantine_after:
            fault = f"{failed} consecutive actions failed; the last, {end.operation.value}: {end.error}"
            self._views[view.id] = self._store.quarantine(view.id, fault, utcnow())
            _LOG.warning("keeper: %s quarantined: %s", view.name, fault)
            return
        self._set_backoff(view, view.failures + 1)
        self._evaluate(end.instance_id, None)
