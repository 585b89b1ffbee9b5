"""What the keeper needs of its store: the contract between the keeper and the SQL store.

The SQL implementation (``_store.py``) implements exactly this; the keeper and the CLI use only
this. Every method is one transaction; every write that changes what a keeper must act on
(policy, quarantine, actions) bumps the store's change cursor, which other processes poll.
Times are timezone-aware UTC. Listeners (``add_change_listener``) are woken after writes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from powerdrivers import InstanceReading, InstanceVcpuStats, PowerState
from powerdrivers.keeper._model import (
    Action,
    ActionStatus,
    Cause,
    HistoryRecord,
    HostView,
    InstanceView,
    Policy,
    RecordKind,
    VcpuSample,
)


class HostClaim(Protocol):
    """A host held by this process's keeper (``KeeperStore.claim_host``) until released."""

    host: str
    owner: str
    """Who holds it (``pid N on HOSTNAME``), as recorded in the host's ``owner``."""

    def alive(self) -> bool:
        """Return whether the claim is certainly still held (never raises).

        An SQLite store's claim is held until released. A PostgreSQL store's is held by the
        server for its connection (one per store, shared by all its claims): this asks that
        connection to answer, and once it has been lost, the claim is gone for good (another
        process may hold the host now): the holder must stop acting on the host and claim it
        again. False once released.
        """

    def release(self) -> None:
        """Let the host go and clear its recorded owner; a second call does nothing.

        Raises ``StoreError`` when the owner cannot be cleared (the host is let go all the same).
        """


class KeeperStore(Protocol):
    """The keeper's durable state: hosts, instances, actions (intents) and history.

    Besides what each method names, every method raises ``StoreUnavailable`` when the database
    cannot be reached or stays locked, and ``StoreError`` when it fails otherwise (one line,
    never the URL's password); a method given an instance raises ``UnknownInstance`` for one the
    store does not have, a method given a host ``KeeperError`` for one never registered, and
    one given a bad value (a naive time, an unknown enum text, a negative count)
    ``KeeperError`` or ``InvalidOption``, before anything is written.
    """

    # -- hosts -------------------------------------------------------------------------------
    def register_host(self, name: str, driver: str, uri: str | None) -> HostView:
        """Create or update a host (the URI is stored redacted). Raises ``StoreError``."""

    def claim_host(self, name: str) -> HostClaim:
        """Make this process the host's one keeper in this store, until released or the process ends.

        Held by the operating system or the database (an SQLite store: an exclusive lock on a file
        beside the database; PostgreSQL: a session advisory lock), so the claim of a process that
        dies, even by ``SIGKILL``, is released at once. The owner is recorded in the host's view
        while held. Raises ``HostAlreadyKept`` (naming the owner, if recorded) when a live keeper
        holds the host, then nothing was written; ``StoreError`` as every method.
        """

    def set_host_reachable(self, name: str, reachable: bool, at: datetime, error: str | None = None) -> bool:
        """Record whether the host answers; when it stops answering its instances turn stale.

        Returns whether anything changed (no write when nothing did). Raises ``StoreError``.
        """

    def hosts(self) -> list[HostView]:
        """Every registered host, by name."""

    # -- instances ---------------------------------------------------------------------------
    def instance(self, instance_id: str) -> InstanceView:
        """One instance's view, with its open action if any. Raises ``UnknownInstance``."""

    def instances(self, host: str | None = None) -> list[InstanceView]:
        """Every instance (of one host, if given), by host then id."""

    def instances_page(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[list[InstanceView], str | None]:
        """Return one page of instances ordered by (host, id), and the next page's cursor or ``None``.

        Filters (host, power state, policy) combine. ``after`` is the previous page's cursor: an
        opaque, URL-safe text; ``limit`` 1 to 1,000. Raises ``InvalidOption`` for a bad cursor
        (its message starts with "cursor"), a limit out of range or a bad filter value.
        """

    def instances_page_json(
        self,
        *,
        host: str | None = None,
        power_state: PowerState | None = None,
        policy: Policy | None = None,
        after: str | None = None,
        limit: int = 100,
    ) -> tuple[str, str | None]:
        """Return ``instances_page`` as the JSON text of its views' ``to_dict()`` list, and its cursor."""

    def instance_counts(self) -> dict[tuple[str, str], int]:
        """Return the number of instances per (host, power state value)."""

    def record_observation(
        self,
        host: str,
        reading: InstanceReading,
        *,
        previous: PowerState | None,
        cause: Cause,
        operation: str | None = None,
        detail: str | None = None,
    ) -> HistoryRecord:
        """Store a changed reading and append its ``observed`` record, in one transaction.

        A new instance is created under ``manual``; the stored reading is not stale.
        """

    def record_vanished(self, host: str, instance_id: str, at: datetime) -> HistoryRecord:
        """Append a ``vanished`` record and forget the instance (its host no longer lists it)."""

    def set_policy(self, instance_id: str, policy: Policy, requested_by: str) -> InstanceView:
        """Change the desired policy and append a ``policy`` record naming who. Raises ``UnknownInstance``."""

    def set_backoff(self, instance_id: str, failures: int, backoff_until: datetime | None) -> None:
        """Store the consecutive-failure count and the time before which no action is taken."""

    def set_action_failures(self, instance_id: str, count: int) -> None:
        """Store the instance's count of consecutive failed actions (kept across keeper restarts)."""

    def quarantine(self, instance_id: str, fault: str, at: datetime) -> InstanceView:
        """Quarantine the instance (no more actions) with a fault text; appends a record."""

    def release_quarantine(self, instance_id: str, requested_by: str, at: datetime) -> InstanceView:
        """End a quarantine, resetting the failure counts and backoff; appends a record.

        By an operator, or by the keeper once the state reads as desired. Raises ``UnknownInstance``.
        """

    # -- actions (intents) -------------------------------------------------------------------
    def open_action(
        self,
        instance_id: str,
        operation: str,
        options: Mapping[str, Any],
        requested_by: str,
        *,
        status: ActionStatus = ActionStatus.PENDING,
    ) -> Action:
        """Record an intent before anything is done.

        ``pending``: a request for the owning keeper; ``running``: the caller is about to call
        the driver. At most one open action per instance, across processes: raises
        ``ActionInFlight`` when one exists, ``UnknownInstance`` when the instance is not known,
        ``StoreUnavailable`` when it cannot be written (then the caller must not act).
        """

    def start_action(self, action_id: int, at: datetime) -> Action:
        """Move a pending action to running (the owning keeper is about to call the driver)."""

    def finish_action(
        self,
        action_id: int,
        status: ActionStatus,
        at: datetime,
        *,
        outcome: str | None = None,
        error: str | None = None,
    ) -> Action:
        """Close an action as done, failed or interrupted and append its ``action`` record."""

    def action(self, action_id: int) -> Action:
        """One action by id. Raises ``UnknownAction`` (unknown id)."""

    def open_actions(self, host: str | None = None) -> list[Action]:
        """Actions still pending or running (of one host, if given), oldest first."""

    # -- history and changes -----------------------------------------------------------------
    def append(self, instance_id: str, kind: RecordKind, at: datetime, **fields: Any) -> HistoryRecord:
        """Append a history record of any kind (fields as in ``HistoryRecord``)."""

    def history(self, instance_id: str, limit: int = 100, before: int | None = None) -> list[HistoryRecord]:
        """Return the instance's records, newest first; ``before`` (a record id) pages back.

        Retention is per instance (set when the store is opened): the oldest records beyond it
        are trimmed.
        """

    def changes_since(self, cursor: int) -> tuple[int, list[str]]:
        """Return the new cursor and the ids of instances changed after ``cursor`` (0 first).

        Changed means policy, quarantine or actions: how a keeper notices what other processes
        wrote.
        """

    def records_after(self, after_id: int, limit: int = 500) -> list[HistoryRecord]:
        """Return every instance's history records with an id above ``after_id``, ascending.

        Records are committed in id order, so a reader that carries on from the last id it saw
        misses none (but retention may have trimmed old ones). Raises ``InvalidOption`` for an
        ``after_id`` below 0 or a ``limit`` outside 1 to 10,000.
        """

    def last_record_id(self) -> int:
        """Return the newest history record's id (0 when there is none)."""

    # -- VCPU samples ------------------------------------------------------------------------
    def record_vcpu_samples(self, host: str, at: datetime, samples: Sequence[InstanceVcpuStats]) -> int:
        """Store one sampling round of a host, a row per VCPU of each instance at ``at``; return the rows.

        ``at`` is the end of the round's windows. One transaction; nothing for no samples. Not a
        change another keeper must act on: the change cursor stays and change listeners are not
        woken. Raises ``KeeperError`` for a naive ``at``, an empty host name or a value that is
        not an ``InstanceVcpuStats`` of ``VcpuStats``, before anything is written.
        """

    def vcpu_samples(
        self, instance_id: str, since: datetime, until: datetime | None = None, limit: int = 10_000
    ) -> list[VcpuSample]:
        """Return the instance's samples with ``since < at <= until`` (no end if ``None``), by (at, vcpu).

        At most ``limit`` (the oldest first). Samples outlive their instance, as history does, so
        an instance the store does not know has none (``[]``, no ``UnknownInstance``). Raises
        ``InvalidOption`` for a ``limit`` outside 1 to 100,000 and ``KeeperError`` for a naive time.
        """

    def latest_vcpu_samples(self, host: str | None = None) -> list[VcpuSample]:
        """Return the newest sample of each VCPU of each instance (of one host, if given), by instance, VCPU.

        That is each instance's newest round (a VCPU unplugged since is left out); with ``host``,
        of the instances whose newest round is of that host. An instance no longer sampled keeps
        its last round.
        """

    def trim_vcpu_samples(self, before: datetime) -> int:
        """Delete the samples with ``at < before``; return how many. Raises ``KeeperError`` for a naive time.

        Wakes no change listener, as recording does not.
        """

    # -- watching and health -----------------------------------------------------------------
    def add_change_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after writes; return the function that removes it.

        Called after every write this store object commits and, on PostgreSQL, whenever any
        process commits a write (``LISTEN``/``NOTIFY`` on channel ``powerdrivers_changes``,
        one listening connection per store object, reconnecting and then calling once after a
        lost connection). A wake-up only: it must be quick, carries nothing, and the consumer
        re-reads the store. What it raises is logged, never raised into the store.
        """

    def available(self) -> bool:
        """Return whether the database answers now: a cheap check (for health and 503s), never raising."""

    def close(self) -> None:
        """Release the store's connections."""
