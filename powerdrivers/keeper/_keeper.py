"""The power keeper: keeps instances at their desired policy, on any driver, and records why."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any

from powerdrivers import (
    ConfigurationError,
    Driver,
    InstanceNotFound,
    InvalidOption,
    Operation,
    OperationTimeout,
    Subscription,
    parse_count,
    parse_duration,
)
from powerdrivers.keeper._acting import Actor
from powerdrivers.keeper._errors import KeeperError, StoreError
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.keeper._host import HostWorker
from powerdrivers.keeper._listeners import SyncListeners
from powerdrivers.keeper._model import Action, ActionStatus, HistoryRecord, InstanceView, Policy, VcpuSample
from powerdrivers.keeper._operations import check_request
from powerdrivers.keeper._restart import close_interrupted
from powerdrivers.keeper._settings import KeeperSettings, check_identity
from powerdrivers.keeper._store_api import HostClaim, KeeperStore
from powerdrivers.keeper._vcpu_recording import VcpuListener, VcpuRecorder

_LOG = logging.getLogger("powerdrivers.keeper")

_FIRST_RESYNC_S = 60.0
_FINAL = frozenset({ActionStatus.DONE, ActionStatus.FAILED, ActionStatus.INTERRUPTED})


class Keeper:
    """Keeps the instances of one or more hosts at their desired run policy.

    ``hosts`` maps a host name to a loaded driver (the caller keeps ownership: the keeper never
    closes a driver or the store). Nothing runs until :meth:`start` (or ``with``); :meth:`stop`
    joins every thread the keeper started. The read and policy methods work on the store, so
    they also describe instances of hosts another keeper process keeps.
    """

    def __init__(
        self,
        store: KeeperStore,
        hosts: Mapping[str, Driver] | Iterable[tuple[str, Driver]],
        settings: KeeperSettings | None = None,
        *,
        dynamic: bool = False,
    ) -> None:
        pairs = list(hosts.items() if isinstance(hosts, Mapping) else hosts)
        if not pairs and not dynamic:
            raise ConfigurationError(
                "a keeper needs at least one host (or dynamic=True, with hosts added by add_host)"
            )
        names = [check_identity("host name", name) for name, _ in pairs]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"host names must be unique, not {', '.join(names)}")
        for name, driver in pairs:
            _check_driver(name, driver)
        self._store = store
        self.settings = settings or KeeperSettings()
        self._actor = Actor(store, self.settings)
        self._synced = SyncListeners(_LOG)
        self._vcpu = VcpuRecorder(store, self.settings)
        # Replaced, never changed in place: the store poller iterates it without a lock.
        self._workers: dict[str, HostWorker] = {
            name: HostWorker(name, driver, store, self.settings, self._actor, self._synced)
            for name, driver in pairs
        }
        self._subscriptions: dict[str, Subscription] = {}
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._remove_listener: Callable[[], None] | None = None
        self._poller: threading.Thread | None = None
        self._state_lock = threading.Lock()
        self._hosts_lock = threading.Lock()
        self._started = False
        self._claims: dict[str, HostClaim] = {}

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Claim the hosts, register them, close interrupted intents, subscribe, run and resync.

        Returns once every host's first resync has ended (or a minute has passed). Each host is
        kept by one keeper at a time: its claim is held until :meth:`stop` or this process ends.

        Raises ``HostAlreadyKept`` when another live keeper keeps one of the hosts (that keeper
        is left untouched), ``StoreError`` when the store cannot be used, and what subscribing to
        a driver's events raises; then nothing is left running and no host stays claimed.
        """
        with self._state_lock:
            if self._started:
                raise KeeperError("this keeper was already started")
            self._started = True
        with self._hosts_lock:
            try:
                for name in self._workers:
                    self._claims[name] = self._store.claim_host(name)
                self._remove_listener = self._store.add_change_listener(self._wake.set)
                cursor, _ = self._store.changes_since(0)
                for worker in self._workers.values():
                    self._attach(worker)
            except BaseException:
                self._close_all()
                raise
            for worker in self._workers.values():
                worker.start()
                self._vcpu.add_host(worker.name, worker.driver)
            self._vcpu.start()
            for worker in self._workers.values():
                # A host that hangs is the driver's to time out; past this the keeper goes on regardless.
                worker.ready.wait(_FIRST_RESYNC_S)
                self._post_pending(worker)
        self._poller = threading.Thread(target=self._poll, args=(cursor,), name="keeper-store", daemon=True)
        self._poller.start()

    def add_host(self, name: str, driver: Driver, claim: HostClaim | None = None, wait: float = 60.0) -> None:
        """Keep one more host from now on, on this running keeper (built with ``dynamic=True`` or not).

        Claims the host (or adopts ``claim``, one this process already holds for it), registers
        it, closes its interrupted intents, subscribes to its events and starts its worker, then
        waits up to ``wait`` seconds for its first resync. The caller keeps owning ``driver``.

        Raises ``KeeperError`` (the keeper is not running, or already keeps a host of that name),
        ``HostAlreadyKept``, ``StoreError`` and what subscribing raises; then the host is not
        kept and its claim, given or taken, is released.
        """
        checked = check_identity("host name", name)
        _check_driver(checked, driver)
        seconds = parse_duration("wait", wait)
        with self._hosts_lock:
            if not self._started or self._stopping.is_set():
                raise KeeperError("the keeper is not running")
            if checked in self._workers:
                raise KeeperError(f"this keeper already keeps host {checked!r}")
            worker = HostWorker(checked, driver, self._store, self.settings, self._actor, self._synced)
            try:
                self._claims[checked] = claim if claim is not None else self._store.claim_host(checked)
                self._attach(worker)
            except BaseException:
                self._detach(checked)
                raise
            self._workers = {**self._workers, checked: worker}
            worker.start()
            self._vcpu.add_host(checked, driver)
        worker.ready.wait(seconds)
        self._post_pending(worker)

    def remove_host(self, name: str) -> None:
        """Stop keeping a host: no new actions, its worker joined, its claim released.

        Actions already handed to the action threads finish and record their end. The caller
        closes the host's driver afterwards. Raises ``KeeperError`` for a host not kept here.
        """
        with self._hosts_lock:
            worker = self._workers.get(name)
            if worker is None:
                raise KeeperError(f"this keeper does not keep host {name!r}")
            self._workers = {other: kept for other, kept in self._workers.items() if other != name}
            self._vcpu.remove_host(name)
            subscription = self._subscriptions.pop(name, None)
            if subscription is not None:
                subscription.unsubscribe()
            worker.stop()
            self._detach(name)

    def kept_hosts(self) -> list[str]:
        """Return the names of the hosts this keeper keeps now."""
        return sorted(self._workers)

    def stop(self) -> None:
        """Stop watching, let actions under way finish and record their end, and join every thread."""
        with self._state_lock:
            if not self._started or self._stopping.is_set():
                return
            self._stopping.set()
        self._wake.set()
        if self._poller is not None:
            self._poller.join()
        with self._hosts_lock:
            self._close_all()

    def __enter__(self) -> Keeper:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- desired state and requests -----------------------------------------------------------

    def set_policy(self, instance_id: str, policy: Policy | str, requested_by: str) -> InstanceView:
        """Set the instance's run policy, recorded with who set it; acts on it at once.

        Raises ``InvalidOption`` (bad policy or name), ``UnknownInstance``, ``StoreError``.
        """
        checked = _policy(policy)
        view = self._store.set_policy(instance_id, checked, check_identity("requested_by", requested_by))
        worker = self._workers.get(view.host)
        if worker is not None:
            worker.post("changed", view)
        return view

    def policy(self, instance_id: str) -> Policy:
        """Return the instance's run policy. Raises ``UnknownInstance``."""
        return self._store.instance(instance_id).policy

    def request(
        self, instance_id: str, operation: Operation | str, requested_by: str, **options: Any
    ) -> Action:
        """Ask the keeper that keeps the instance's host to carry out ``operation``; return the action.

        The action is recorded ``pending`` with ``requested_by`` and carried out by the owning
        keeper (this one, or another process's through the store). Shutdown and reboot take
        ``timeout`` and ``force``. Raises ``InvalidOption``, ``UnknownInstance``,
        ``ActionInFlight`` (another action is open), ``StoreError``.
        """
        checked_operation, checked = check_request(operation, options)
        action = self._store.open_action(
            instance_id, checked_operation.value, checked, check_identity("requested_by", requested_by)
        )
        worker = self._workers.get(action.host)
        if worker is not None:
            worker.post("request", action)
        return action

    def wait(self, action_id: int, timeout: float = 60.0) -> Action:
        """Wait until the action has ended and return it. Raises ``OperationTimeout``, ``KeeperError``."""
        seconds = parse_duration("timeout", timeout)
        deadline = time.monotonic() + seconds
        while True:
            action = self._store.action(action_id)
            if action.status in _FINAL:
                return action
            if time.monotonic() >= deadline:
                raise OperationTimeout(
                    f"action {action_id} is still {action.status.value} after {seconds:g} s"
                )
            time.sleep(0.02)

    def release_quarantine(self, instance_id: str, requested_by: str) -> InstanceView:
        """End the instance's quarantine (an operator's decision). Raises ``UnknownInstance``."""
        view = self._store.release_quarantine(
            instance_id, check_identity("requested_by", requested_by), utcnow()
        )
        worker = self._workers.get(view.host)
        if worker is not None:
            worker.post("changed", view)
        return view

    # -- reading ------------------------------------------------------------------------------

    def view(self, instance_id: str) -> InstanceView:
        """Return the instance's view: reading, policy, action in flight, backoff, quarantine, staleness."""
        return self._store.instance(instance_id)

    def views(self, host: str | None = None) -> list[InstanceView]:
        """Return every instance's view (of one host, if given)."""
        return self._store.instances(host)

    def history(self, instance_id: str, limit: int = 100, before: int | None = None) -> list[HistoryRecord]:
        """Return the instance's history, newest first. Raises ``InvalidOption`` for a bad limit."""
        checked = parse_count("limit", limit, minimum=1, maximum=10_000)
        return self._store.history(instance_id, checked, before)

    def resync(self, timeout: float = 60.0) -> None:
        """Resync every host now and return when done. Raises ``OperationTimeout``, ``KeeperError``."""
        if not self._started or self._stopping.is_set():
            raise KeeperError("the keeper is not running")
        seconds = parse_duration("timeout", timeout)
        deadline = time.monotonic() + seconds
        done = []
        for worker in self._workers.values():
            finished = threading.Event()
            worker.post("resync", finished)
            done.append((worker.name, finished))
        for name, finished in done:
            if not finished.wait(max(0.0, deadline - time.monotonic())):
                raise OperationTimeout(f"host {name} did not resync within {seconds:g} s")

    def add_sync_listener(self, listener: Callable[[str, float], None]) -> Callable[[], None]:
        """Call ``listener(host, seconds)`` after each full resync of a host this keeper keeps.

        Called on the host's worker thread, so it must return quickly; what it raises is logged
        and ignored. Returns a function that removes the listener.
        """
        return self._synced.add(listener)

    def add_vcpu_listener(self, callback: VcpuListener) -> Callable[[], None]:
        """Call ``callback(host, samples)`` after each stored VCPU sampling round of a host kept here.

        ``samples`` are the round's (an empty list when nothing runs there, and for a host's
        first round, which only primes the sampler). Called on the keeper's sampling thread, so
        it must return quickly (and not stop the keeper); what it raises is logged and ignored.
        Returns a function that removes it. Raises ``KeeperError`` for a callback not callable.
        """
        return self._vcpu.add_listener(callback)

    def vcpu_samples(
        self, instance_id: str, since: datetime, until: datetime | None = None, limit: int = 10_000
    ) -> list[VcpuSample]:
        """Return the instance's stored VCPU samples with ``since < at <= until``, by time then VCPU.

        Any keeper's samples (the store's). Raises ``InvalidOption`` for a limit outside 1 to
        100,000, ``KeeperError`` for a naive time, ``StoreError``.
        """
        return self._store.vcpu_samples(instance_id, since, until, limit)

    # -- internals ----------------------------------------------------------------------------

    def _attach(self, worker: HostWorker) -> None:
        """Register the claimed host, close its interrupted intents, load and subscribe its worker."""
        self._store.register_host(worker.name, worker.driver.name, worker.driver.uri)
        worker.held.update(close_interrupted(self._store, worker.name, worker.driver))
        worker.load()
        self._subscriptions[worker.name] = worker.driver.subscribe(worker.on_event)

    def _detach(self, name: str) -> None:
        """Unsubscribe a host (if subscribed) and release its claim (if held)."""
        subscription = self._subscriptions.pop(name, None)
        if subscription is not None:
            subscription.unsubscribe()
        claim = self._claims.pop(name, None)
        if claim is not None:
            _release(claim)

    def _post_pending(self, worker: HostWorker, actions: list[Action] | None = None) -> None:
        for action in actions if actions is not None else self._store.open_actions(worker.name):
            if action.status is ActionStatus.PENDING and action.host == worker.name:
                worker.post("request", action)

    def _poll(self, cursor: int) -> None:
        """Watch the store for what other processes write: policies, quarantine releases, requests."""
        while True:
            # Woken at once by the store's change listener (another process's write reaches
            # us through PostgreSQL's LISTEN/NOTIFY); the interval is the fallback.
            self._wake.wait(self.settings.poll_interval)
            self._wake.clear()
            if self._stopping.is_set():
                return
            try:
                cursor, changed = self._store.changes_since(cursor)
                if not changed:
                    continue
                for instance_id in changed:
                    view = self._store.instance(instance_id)
                    worker = self._workers.get(view.host)
                    if worker is not None:
                        worker.post("changed", view)
                pending = self._store.open_actions()
                for worker in self._workers.values():
                    self._post_pending(worker, pending)
            except (StoreError, InstanceNotFound) as error:
                _LOG.warning("keeper: reading the store's changes failed: %s", error)

    def _close_all(self) -> None:
        """Stop sampling, listening, subscribing; let actions under way end, join workers, release claims."""
        self._vcpu.stop()
        if self._remove_listener is not None:
            self._remove_listener()
            self._remove_listener = None
        self._unsubscribe()
        self._actor.close()
        for worker in self._workers.values():
            worker.stop()
        self._release_claims()

    def _release_claims(self) -> None:
        for claim in self._claims.values():
            _release(claim)
        self._claims.clear()

    def _unsubscribe(self) -> None:
        for subscription in self._subscriptions.values():
            subscription.unsubscribe()
        self._subscriptions.clear()


def _release(claim: HostClaim) -> None:
    try:
        claim.release()
    except StoreError as error:
        _LOG.warning("keeper: host %s: clearing its owner failed: %s", claim.host, error)


def _check_driver(name: str, driver: object) -> None:
    if not isinstance(driver, Driver):
        raise ConfigurationError(
            f"host {name!r} needs a loaded powerdrivers.Driver, not {type(driver).__name__}"
        )


def _policy(policy: Policy | str) -> Policy:
    try:
        return Policy(policy)
    except ValueError:
        allowed = ", ".join(p.value for p in Policy)
        raise InvalidOption(f"a policy is one of {allowed}, not {str(policy)[:40]!r}") from None
