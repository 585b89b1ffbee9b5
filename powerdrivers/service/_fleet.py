"""The fleet: the configured hosts this process can own, kept by one keeper, and the service's reads.

Ownership is the store's claim (an ``flock`` beside an SQLite file, a PostgreSQL session
advisory lock), never a lease of our own: a claim loop tries, every ``takeover_interval``, each
configured host nobody holds; the process that gets it loads the host's driver and keeps it.
When an owner dies its claims end with it, so the next round of another process takes its
hosts over and resyncs them. A claim found no longer alive (the database connection holding
it died) is dropped at once: this process stops acting on that host until it claims it again.
A host whose driver cannot be loaded is recorded unreachable and tried again with backoff.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Final, TypeVar

from powerdrivers import (
    OPERATION_TABLE,
    Driver,
    HypervisorConnectionError,
    InvalidOption,
    InvalidStateTransition,
    Operation,
    PowerDriversError,
    PowerState,
    load_driver,
)
from powerdrivers.keeper._errors import HostAlreadyKept, StoreError
from powerdrivers.keeper._handoff import utcnow
from powerdrivers.keeper._keeper import Keeper
from powerdrivers.keeper._listeners import HostListeners, SyncListeners
from powerdrivers.keeper._model import Action, HistoryRecord, HostView, InstanceView, Policy, VcpuSample
from powerdrivers.keeper._operations import check_request
from powerdrivers.keeper._store_api import HostClaim, KeeperStore
from powerdrivers.keeper._vcpu_recording import VcpuListener
from powerdrivers.service._bus import EventBus
from powerdrivers.service._config import HostConfig, ServiceConfig
from powerdrivers.service._feed import Feed

_LOG = logging.getLogger("powerdrivers.service")

_E = TypeVar("_E", PowerState, Policy)

#: Seconds ``start()`` waits for each host's first resync.
FIRST_RESYNC_WAIT: Final = 60.0
#: The longest wait before trying again a host whose driver could not be loaded.
MAX_RETRY_DELAY: Final = 60.0
#: Hosts tried at once by a claim round: a host whose driver hangs while loading (an address that
#: does not answer) holds up one of these, not the take-over of every other host.
CLAIM_WORKERS: Final = 8
#: Records returned at most by one ``records_since`` call.
MAX_RECORDS: Final = 1000


@dataclass(slots=True)
class _Owned:
    claim: HostClaim
    driver: Driver


class Fleet:
    """Owns what hosts it can of ``config``, keeps them, and answers the API's reads and requests.

    ``store`` defaults to the one the config names, opened by :meth:`start` and closed by
    :meth:`stop`; a store given is the caller's to close. Every method raises the keeper's
    typed errors, ``StoreUnavailable`` when the database does not answer.
    """

    def __init__(self, config: ServiceConfig, store: KeeperStore | None = None) -> None:
        self.config = config
        self.bus = EventBus()
        self._given_store = store
        self._store: KeeperStore | None = store
        self._keeper: Keeper | None = None
        self._feed: Feed | None = None
        self._owned: dict[str, _Owned] = {}
        self._failures: dict[str, int] = {}
        self._retry_at: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._claimer: threading.Thread | None = None
        self._claim_pool: ThreadPoolExecutor | None = None
        self._trying: set[str] = set()
        self._synced = SyncListeners(_LOG)
        self._vcpu_rounds: HostListeners[list[VcpuSample]] = HostListeners(_LOG, "VCPU listener")

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Open the store, start the keeper and the feed, claim what hosts can be claimed, and go on.

        Returns once each host claimed in this first round has had its first resync. Raises
        ``StoreError`` when the store cannot be opened (then nothing runs).
        """
        if self._keeper is not None:
            raise PowerDriversError("this fleet was already started")
        if self._store is None:
            from powerdrivers.keeper._store import open_store

            self._store = open_store(self.config.store_url())
        try:
            self._keeper = Keeper(self._store, {}, self.config.keeper, dynamic=True)
            self._keeper.add_sync_listener(self._synced)
            self._keeper.add_vcpu_listener(self._vcpu_rounds)
            self._keeper.start()
            self._feed = Feed(self._store, self.bus)
            self._feed.start()
        except BaseException:
            self._close_parts()
            raise
        self._claim_pool = ThreadPoolExecutor(CLAIM_WORKERS, thread_name_prefix="service-claim")
        self._claim_round(FIRST_RESYNC_WAIT)
        self._claimer = threading.Thread(target=self._claim_loop, name="service-claims", daemon=True)
        self._claimer.start()

    def stop(self) -> None:
        """Stop claiming, stop the keeper (releasing every claim), close the drivers; join every thread."""
        self._stopping.set()
        self.bus.close()
        if self._claimer is not None:
            self._claimer.join()
            self._claimer = None
        if self._claim_pool is not None:
            # A try under way ends by itself (the driver bounds its own connecting); none starts.
            self._claim_pool.shutdown(wait=True, cancel_futures=True)
            self._claim_pool = None
        self._close_parts()

    def __enter__(self) -> Fleet:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def add_sync_listener(self, listener: Callable[[str, float], None]) -> Callable[[], None]:
        """Call ``listener(host, seconds)`` after each full resync of a host this process keeps.

        May be called before :meth:`start`. The listener runs on the host's worker thread and
        must return quickly; what it raises is logged. Returns a function that removes it.
        """
        return self._synced.add(listener)

    def add_vcpu_listener(self, listener: VcpuListener) -> Callable[[], None]:
        """Call ``listener(host, samples)`` after each stored VCPU sampling round of a host kept here.

        May be called before :meth:`start`. The listener runs on the keeper's sampling thread and
        must return quickly; what it raises is logged. Returns a function that removes it.
        """
        return self._vcpu_rounds.add(listener)

    def resync(self, timeout: float = 60.0) -> None:
        """Resync every host this process keeps now; returns once each has (``OperationTimeout`` else)."""
        self._running().resync(timeout)

    # -- reading --------------------------------------------------------------------------------

    @property
    def store(self) -> KeeperStore:
        """The fleet's store (for reads the fleet does not wrap, such as metrics' counts)."""
        if self._store is None:
            raise PowerDriversError("the fleet is not started")
        return self._store

    def hosts(self) -> list[HostView]:
        """Return every host the store knows, by name: driver, redacted URI, owner, reachable since when."""
        return self.store.hosts()

    def owned_hosts(self) -> list[str]:
        """Return the hosts this process keeps now."""
        with self._lock:
            return sorted(self._owned)

    def instances(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | str | None = None,
        policy: Policy | str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[InstanceView], str | None]:
        """Return one page of instance views by (host, id), and the next page's cursor (None at the end).

        Raises ``InvalidOption`` for an unknown power state or policy, a bad cursor or limit.
        """
        return self.store.instances_page(**_page_options(host, power_state, policy, after, limit))

    def instances_json(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | str | None = None,
        policy: Policy | str | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[str, str | None]:
        """Return :meth:`instances` as the JSON text of the views' dicts, and the cursor (for the API)."""
        return self.store.instances_page_json(**_page_options(host, power_state, policy, after, limit))

    def instance(self, instance_id: str) -> InstanceView:
        """Return one instance's view. Raises ``UnknownInstance``."""
        return self.store.instance(instance_id)

    def action(self, action_id: int) -> Action:
        """Return one action, with its status and outcome. Raises ``UnknownAction``."""
        return self.store.action(action_id)

    def history(self, instance_id: str, limit: int = 100, before: int | None = None) -> list[HistoryRecord]:
        """Return the instance's records, newest first; ``before`` (a record id) pages back."""
        return self._running().history(instance_id, limit, before)

    def vcpu_samples(
        self, instance_id: str, since: datetime, until: datetime | None = None, limit: int = 10_000
    ) -> list[VcpuSample]:
        """Return the instance's VCPU samples whose window ends in (``since``, ``until``], by (time, VCPU).

        Samples outlive their instance (an unknown id has none). Raises ``InvalidOption`` for a
        bad limit (1 to 100,000).
        """
        return self._running().vcpu_samples(instance_id, since, until, limit)

    def records_since(self, last_event_id: int, limit: int = MAX_RECORDS) -> list[HistoryRecord]:
        """Return every instance's records after ``last_event_id`` (an SSE client's resume), ascending."""
        return self.store.records_after(last_event_id, limit)

    def available(self) -> bool:
        """Return whether the store answers now."""
        return self._store is not None and self._store.available()

    # -- changing -------------------------------------------------------------------------------

    def set_policy(self, instance_id: str, policy: Policy | str, requested_by: str) -> InstanceView:
        """Set the instance's run policy; its owner (this process or another) acts on it."""
        view = self._running().set_policy(instance_id, policy, requested_by)
        self._wake_feed()
        return view

    def request(
        self, instance_id: str, operation: Operation | str, requested_by: str, **options: Any
    ) -> Action:
        """Record a pending action for the instance's owner to carry out; return it.

        Raises ``InvalidOption`` (operation or options), ``UnknownInstance``,
        ``InvalidStateTransition`` (the stored power state does not allow the operation: the
        error's ``allowed`` names the states that do), ``ActionInFlight``, and
        ``HypervisorConnectionError`` when no process can act on the instance's host now (it is
        unreachable, or nobody keeps it): nothing is written then, so nothing runs later.
        """
        checked, _ = check_request(operation, options)
        view = self.store.instance(instance_id)
        host = next((known for known in self.store.hosts() if known.name == view.host), None)
        if host is None or host.owner is None:
            raise HypervisorConnectionError(
                f"no service process keeps host {view.host!r} now; ask again once one does"
            )
        if not host.reachable:
            raise HypervisorConnectionError(
                f"host {view.host!r} cannot be reached now ({host.error or 'no answer'}); "
                "ask again once it can"
            )
        rule = OPERATION_TABLE[checked]
        if view.power_state not in rule.allowed_from | rule.already_done_in:
            raise InvalidStateTransition(
                instance_id,
                checked.value,
                view.power_state.value,
                allowed=(state.value for state in rule.allowed_from),
            )
        action = self._running().request(instance_id, checked, requested_by, **options)
        self._wake_feed()
        return action

    def release_quarantine(self, instance_id: str, requested_by: str) -> InstanceView:
        """End the instance's quarantine (an operator's decision)."""
        view = self._running().release_quarantine(instance_id, requested_by)
        self._wake_feed()
        return view

    # -- claiming -------------------------------------------------------------------------------

    def _claim_loop(self) -> None:
        while not self._stopping.wait(self.config.takeover_interval):
            try:
                self._claim_round(0.0)
            except Exception:
                _LOG.exception("service: the claim round failed")

    def _claim_round(self, wait: float) -> None:
        """Try every host not kept here, on the claim pool; with ``wait``, return once each try ended."""
        self._drop_lost()
        pool = self._claim_pool
        tries = []
        for host in self.config.hosts:
            if self._stopping.is_set() or pool is None:
                break
            with self._lock:
                if (
                    host.name in self._owned
                    or host.name in self._trying
                    or self._retry_at.get(host.name, 0.0) > time.monotonic()
                ):
                    continue
                self._trying.add(host.name)
            tries.append(pool.submit(self._try_guarded, host, wait))
        if wait > 0:
            futures.wait(tries)

    def _try_guarded(self, host: HostConfig, wait: float) -> None:
        try:
            self._try_host(host, wait)
        except Exception:
            _LOG.exception("service: host %s: trying to keep it failed", host.name)
        finally:
            with self._lock:
                self._trying.discard(host.name)

    def _try_host(self, host: HostConfig, wait: float) -> None:
        try:
            claim = self.store.claim_host(host.name)
        except HostAlreadyKept:
            return  # owned by a live process; its death frees the claim
        except StoreError as error:
            _LOG.debug("service: host %s: cannot claim it now: %s", host.name, error)
            return
        try:
            driver = load_driver(host.driver, host.uri, **host.driver_options())
        except PowerDriversError as error:
            self._unreachable(host, claim, error)
            return
        try:
            self._running().add_host(host.name, driver, claim=claim, wait=wait)
        except Exception as error:
            # add_host released the claim; the driver is this fleet's to close, whatever failed.
            driver.close()
            self._retry_later(host.name)
            _LOG.warning("service: host %s: cannot keep it: %s", host.name, error)
            return
        with self._lock:
            self._owned[host.name] = _Owned(claim, driver)
            self._failures.pop(host.name, None)
        _LOG.info("service: keeping host %s (%s)", host.name, host.driver)

    def _unreachable(self, host: HostConfig, claim: HostClaim, error: PowerDriversError) -> None:
        """Record (holding the claim) that the host's driver cannot be loaded, then let it go."""
        delay = self._retry_later(host.name)
        message = " ".join(str(error).split())
        _LOG.warning(
            "service: host %s: cannot load its driver (retry in %g s): %s", host.name, delay, message
        )
        try:
            self.store.register_host(host.name, host.driver, host.uri)
            self.store.set_host_reachable(host.name, False, utcnow(), message)
        except StoreError as store_error:
            _LOG.debug("service: host %s: cannot record it unreachable: %s", host.name, store_error)
        finally:
            _release(claim)

    def _retry_later(self, name: str) -> float:
        with self._lock:
            failures = self._failures.get(name, 0) + 1
            self._failures[name] = failures
            delay = min(self.config.takeover_interval * 2.0 ** min(failures - 1, 16), MAX_RETRY_DELAY)
            self._retry_at[name] = time.monotonic() + delay
        return delay

    def _drop_lost(self) -> None:
        with self._lock:
            owned = list(self._owned.items())
        for name, held in owned:
            if held.claim.alive():
                continue
            _LOG.warning("service: host %s: its claim was lost; no longer acting on it", name)
            self._drop(name, held)

    def _drop(self, name: str, held: _Owned) -> None:
        with self._lock:
            self._owned.pop(name, None)
        try:
            self._running().remove_host(name)
        except PowerDriversError as error:
            _LOG.debug("service: host %s: removing it: %s", name, error)
        held.driver.close()
        _release(held.claim)

    # -- internals ------------------------------------------------------------------------------

    def _running(self) -> Keeper:
        if self._keeper is None:
            raise PowerDriversError("the fleet is not started")
        return self._keeper

    def _wake_feed(self) -> None:
        if self._feed is not None:
            self._feed.wake()

    def _close_parts(self) -> None:
        if self._feed is not None:
            self._feed.stop()
        if self._keeper is not None:
            self._keeper.stop()
        with self._lock:
            owned, self._owned = list(self._owned.values()), {}
        for held in owned:
            held.driver.close()
            _release(held.claim)
        if self._given_store is None and self._store is not None:
            self._store.close()


def _release(claim: HostClaim) -> None:
    try:
        claim.release()
    except StoreError as error:
        _LOG.debug("service: host %s: clearing its owner: %s", claim.host, error)


def _enum(kind: type[_E], label: str, value: _E | str | None) -> _E | None:
    if value is None:
        return None
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(member.value for member in kind)
        raise InvalidOption(f"{label} is one of {allowed}, not {str(value)[:40]!r}") from None


def _page_options(
    host: str | None,
    power_state: PowerState | str | None,
    policy: Policy | str | None,
    after: str | None,
    limit: int,
) -> dict[str, Any]:
    """Return a page's arguments for the store, the filters' values checked."""
    return {
        "host": host,
        "power_state": _enum(PowerState, "power_state", power_state),
        "policy": _enum(Policy, "policy", policy),
        "after": after,
        "limit": limit,
    }
