"""The simulated hypervisor: instance records, guest actions, crashes, when each is due, the event log.

:class:`FakeHypervisor` knows nothing of :class:`powerdrivers.Driver`, as the Xen
plugin's simulator (``powerdrivers_xen.testing``) knows nothing of the Xen driver:
it keeps its records in a store, in transactions, and changes them as a hypervisor
would, on its own clock. :class:`~powerdrivers_fake.FakeDriver` holds one and
translates: it checks operations, attributes them, reads records as instance
readings and (through the two hooks it sets, ``on_change`` and ``on_commit``)
decides which changes are events.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from powerdrivers import InstanceNotFound, PowerDriversError
from powerdrivers_fake._native import FakeNativeState
from powerdrivers_fake._options import FakeOptions
from powerdrivers_fake._shared import SharedOperations
from powerdrivers_fake._store import Document, MemoryStore, Store

_LOG = logging.getLogger("powerdrivers.fake")
_S = FakeNativeState
#: The states in which the guest runs (and can crash).
RUNNING_STATES = frozenset({_S.RUNNING, _S.SHUTTING_DOWN, _S.REBOOTING})
#: The guest actions a cooperative guest carries out some time after it is asked, and the
#: state it is in meanwhile.
_GUEST_ACTIONS = {"shutdown": _S.SHUTTING_DOWN, "reboot": _S.REBOOTING}
_GUEST_ACTION_STATES = frozenset(_GUEST_ACTIONS.values())

#: Called after a record changed state: ``(document, record, (state, reason) before, cause)``.
ChangeHook = Callable[[Document, dict[str, Any], tuple[str, str], str | None], None]
#: Called after a transaction committed: ``(document, sequence number it began at)``.
CommitHook = Callable[[Document, int], None]


class FakeHypervisor:
    """The fake's hypervisor: records in a store, and the guest actions and crashes due on them.

    Every change happens in a :meth:`transaction`: it first settles the guest
    actions and crashes that are due (each state change goes to ``on_change``),
    notes when the next one is due (a timer settles it then, with no call being
    made), and once committed calls ``on_commit``. Raises what its store raises
    (:class:`~powerdrivers.HypervisorError` for a state file that cannot be used)
    and :class:`~powerdrivers.InstanceNotFound` from :meth:`find`.
    """

    def __init__(self, store: Store, settings: FakeOptions) -> None:
        self.store = store
        #: The in-memory store, or None when the state is a file other processes share.
        self.memory = store if isinstance(store, MemoryStore) else None
        #: With a file, the guest-dependent operations in flight it shares (see ``_shared``).
        self.shared = SharedOperations() if self.memory is None else None
        #: When the next guest action or crash is due (``time.time()``), if any.
        self.next_due: float | None = None
        self._settings = settings
        #: Called with each change of an instance's state (see :meth:`set_state`); ignored until set.
        self.on_change: ChangeHook = _ignore_change
        #: Called after each transaction commits; ignored until set.
        self.on_commit: CommitHook = _ignore_commit
        self._dues_changed = True
        self._timers: set[threading.Timer] = set()
        self._timers_lock = threading.Lock()
        #: Instance name -> the id it had when last looked up (see :meth:`find`).
        self._names: dict[str, str] = {}
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()

    def transaction(self) -> AbstractContextManager[Document]:
        """Return a store transaction that settles what is due first and calls ``on_commit`` last."""
        return _Transaction(self)

    def tick(self) -> None:
        """Settle what is due now, in a transaction of its own; log (not raise) a failure."""
        try:
            with self.transaction():
                pass
        except PowerDriversError as error:
            _LOG.warning("fake: could not apply pending guest actions: %s", error)

    def watch(self) -> None:
        """With a state file, settle (in a transaction) whenever another writer commits.

        A thread looks every ``poll_interval`` seconds, until :meth:`stop_watching`;
        each transaction ends with ``on_commit``, which thus sees others' changes.
        """
        if self.memory is not None:
            return
        self._watching.set()
        # The baseline is taken before this returns, so no later change is missed.
        baseline = self.store.fingerprint()
        self._watcher = threading.Thread(
            target=self._watch, args=(baseline,), name="powerdrivers-fake-watch", daemon=True
        )
        self._watcher.start()

    def stop_watching(self) -> None:
        """Stop the thread :meth:`watch` started (and wait for it, unless called from it)."""
        self._watching.clear()
        if self._watcher is not None and self._watcher is not threading.current_thread():
            self._watcher.join()
        self._watcher = None

    def close(self) -> None:
        """Cancel the timers of the guest actions and crashes still to come."""
        with self._timers_lock:
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()

    # -- records, within a transaction -----------------------------------------

    def find(self, document: Document, ref: str) -> dict[str, Any]:
        """Return the record of the instance with id or name ``ref``; raise InstanceNotFound if none."""
        instances = document["instances"]
        record: dict[str, Any] | None = instances.get(ref)
        if record is not None:
            return record
        # Names are looked up through a cache of the ids they last had, checked on use,
        # so that a lookup by name costs the same in a fleet of 10,000 as in one of 4.
        names = self._names
        known = names.get(ref)
        if known is not None:
            record = instances.get(known)
            if record is not None and record["name"] == ref:
                return record
        for record in instances.values():
            if record["name"] == ref:
                if len(names) > 2 * len(instances):
                    names.clear()
                names[ref] = record["id"]
                return record
        raise InstanceNotFound(ref)

    def writable(self, document: Document, record: dict[str, Any]) -> dict[str, Any]:
        """Copy a record before changing it: a committed record never changes (see ``Store``)."""
        copy = dict(record)
        self.store.put(document, copy)
        return copy

    def add(self, document: Document, record: dict[str, Any]) -> None:
        """Add a new instance's ``record``; one created running may crash (the ``crash`` option)."""
        self.store.put(document, record)
        self._arm_crash(record)

    def remove(self, document: Document, record: dict[str, Any]) -> None:
        """Remove the instance of ``record``, which is left describing it as deleted."""
        self.store.remove(document, record["id"])
        self._dues_changed = True
        record.update(state=_S.SHUTOFF, reason="deleted", pending=None, crash_at=None)

    def set_state(
        self,
        document: Document,
        record: dict[str, Any],
        state: FakeNativeState,
        reason: str,
        cause: str | None,
        *,
        report: bool = True,
    ) -> None:
        """Put the instance in ``state`` for ``reason``, on behalf of ``cause`` (an operation, or None).

        Leaving the running states cancels a planned crash, and leaving a
        transitional state the guest action planned; entering ``running`` arms
        a crash for an instance the ``crash`` option names. The change goes to
        ``on_change`` unless ``report`` is false (the caller reports it).
        """
        before = record["state"], record["reason"]
        if record["pending"] is not None or record["crash_at"] is not None:
            self._dues_changed = True
        record["state"], record["reason"] = str(state), reason
        if state not in RUNNING_STATES:
            record["crash_at"] = None
        if state not in _GUEST_ACTION_STATES:
            record["pending"] = None
        if report:
            self.on_change(document, record, before, cause)
        if state == _S.RUNNING:
            self._arm_crash(record)

    def ask_guest(self, document: Document, record: dict[str, Any], action: str, cause: str | None) -> None:
        """Ask the instance's guest to ``"shutdown"`` or ``"reboot"``.

        A cooperative guest that runs enters the action's transitional state
        (reason ``acpi``) and finishes ``guest_delay`` seconds later; any other
        guest ignores the request, as a real one ignoring ACPI would.
        """
        if record["guest"] == "cooperative" and record["state"] == _S.RUNNING:
            self.set_state(document, record, _GUEST_ACTIONS[action], "acpi", cause)
            self._dues_changed = True
            due = time.time() + self._settings.guest_delay
            record["pending"] = {"action": action, "due": due, "cause": cause}
            self._schedule(due)

    def apply_guest_options(self, document: Document) -> None:
        """Apply the ``uncooperative`` and ``crash`` options to the instances there are."""
        settings = self._settings
        for stored in list(document["instances"].values()):
            record = self.writable(document, stored)
            if record["name"] in settings.uncooperative or record["id"] in settings.uncooperative:
                record["guest"] = "uncooperative"
            if record["state"] in RUNNING_STATES and record["crash_at"] is None:
                self._arm_crash(record)

    # -- what is due ---------------------------------------------------------------

    def _opened(self, document: Document) -> None:
        """Start a transaction on ``document``: settle the guest actions and crashes that are due."""
        # Other processes may plan guest actions in a shared file; in memory, only this
        # hypervisor does, so settling and recomputing the next due time can wait until due.
        if self.shared is not None:
            self.shared.loaded(document)
        if self.memory is None or (self.next_due is not None and time.time() >= self.next_due):
            self._settle(document)
            self._dues_changed = True

    def _committing(self, document: Document) -> None:
        """End a transaction on ``document``, before it is committed: note when the next action is due."""
        if self.memory is None or self._dues_changed:
            dues = [
                due
                for record in document["instances"].values()
                for due in ((record["pending"] or {}).get("due"), record["crash_at"])
                if due is not None
            ]
            self.next_due = min(dues, default=None)
            self._dues_changed = False

    def _settle(self, document: Document) -> None:
        now = time.time()
        for stored in list(document["instances"].values()):
            pending = stored["pending"]
            crash_at = stored["crash_at"]
            if not (
                (pending is not None and pending["due"] <= now) or (crash_at is not None and crash_at <= now)
            ):
                continue
            record = self.writable(document, stored)
            if pending is not None and pending["due"] <= now:
                if pending["action"] == "shutdown" and record["state"] == _S.SHUTTING_DOWN:
                    self.set_state(document, record, _S.SHUTOFF, "shutdown", pending["cause"])
                elif pending["action"] == "reboot" and record["state"] == _S.REBOOTING:
                    self.set_state(document, record, _S.RUNNING, "rebooted", pending["cause"])
                record["pending"] = None
            if record["crash_at"] is not None and record["crash_at"] <= now:
                if record["state"] in RUNNING_STATES:
                    self.set_state(document, record, _S.CRASHED, "panicked", None)
                record["crash_at"] = None

    def _arm_crash(self, record: dict[str, Any]) -> None:
        if record["name"] in self._settings.crash or record["id"] in self._settings.crash:
            self._dues_changed = True
            record["crash_at"] = time.time() + self._settings.crash_after
            self._schedule(record["crash_at"])

    def _schedule(self, due: float) -> None:
        timer = threading.Timer(max(0.0, due - time.time()) + 0.001, self._fire)
        timer.daemon = True
        with self._timers_lock:
            self._timers.add(timer)
        timer.start()

    def _watch(self, fingerprint: object) -> None:
        while self._watching.is_set():
            time.sleep(self._settings.poll_interval)
            current = self.store.fingerprint()
            due = self.next_due
            if current != fingerprint or (due is not None and time.time() >= due):
                fingerprint = current
                self.tick()

    def _fire(self) -> None:
        with self._timers_lock:
            current = threading.current_thread()
            self._timers = {timer for timer in self._timers if timer is not current}
        self.tick()


def _ignore_change(
    document: Document, record: dict[str, Any], before: tuple[str, str], cause: str | None
) -> None:
    pass


def _ignore_commit(document: Document, seq: int) -> None:
    pass


class _Transaction:
    """A transaction of the hypervisor's store, wrapped in its bookkeeping.

    A class rather than a generator, because it is every operation's hot path.
    """

    __slots__ = ("_document", "_hypervisor", "_seq", "_stored")

    def __init__(self, hypervisor: FakeHypervisor) -> None:
        self._hypervisor = hypervisor
        self._stored = hypervisor.store.transaction()

    def __enter__(self) -> Document:
        document = self._stored.__enter__()
        self._seq: int = document["seq"]
        try:
            self._hypervisor._opened(document)
        except BaseException as error:
            self._stored.__exit__(type(error), error, error.__traceback__)
            raise
        self._document: Document = document
        return document

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            try:
                self._hypervisor._committing(self._document)
            except BaseException as error:
                self._stored.__exit__(type(error), error, error.__traceback__)
                raise
        self._stored.__exit__(exc_type, exc, tb)
        if exc_type is None:
            self._hypervisor.on_commit(self._document, self._seq)
