"""Which operation of this driver is in flight on which instance, and what it caused."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from powerdrivers._event_kinds import EventKind
from powerdrivers._exceptions import InvalidStateTransition
from powerdrivers._operations import Operation, rule_for
from powerdrivers._states import Transition

_MAX_FINISHED = 16

#: Event kinds a hypervisor may report more than once for one occurrence: QEMU reports a reset,
#: then the firmware's own reset as it starts (SeaBIOS resets again on a warm boot).
_REPEATED_KINDS = frozenset({EventKind.REBOOTED})


#: Orders the beginnings and ends of every tracker's operations: which happened before which.
_clock = itertools.count(1)


class _Entry:
    """One tracked operation: what it is still owed, and until when."""

    __slots__ = (
        "began",
        "ended",
        "forced",
        "instance_id",
        "operation",
        "owed",
        "repeats",
        "thread",
        "until",
    )

    def __init__(self, instance_id: str, operation: Operation, owed: set[EventKind], thread: int) -> None:
        self.instance_id = instance_id
        self.operation = operation
        self.owed = owed
        #: The kinds in ``_REPEATED_KINDS`` it received: their repeats are its own too.
        self.repeats: set[EventKind] = set()
        #: The thread running the operation: what it publishes meanwhile is the driver's own report.
        self.thread = thread
        #: ``None`` while the operation runs; afterwards, until when it may still be owed events.
        self.until: float | None = None
        #: When it began and ended, on ``_clock``: an operation that ended before another
        #: began reached the hypervisor first, so its events come first.
        self.began = next(_clock)
        self.ended: int | None = None
        #: Whether it stops the instance without the guest: a forced operation, or a graceful
        #: one that fell back to forcing. Only such an operation is owed a forced stop.
        self.forced = rule_for(operation).forced

    def settle(self) -> None:
        """Expect nothing more: no event it is owed, nor a repeat of one it received."""
        self.owed.clear()
        self.repeats.clear()


class OperationTracker:
    """Tracks operations so readings and events can name them.

    While an operation runs on an instance, readings report its transition.
    Each operation is owed the event kinds it causes (see
    ``OperationRule.events``). Hypervisors deliver events asynchronously,
    often after the operation returned and sometimes after the next one
    began, so an event is matched to the oldest operation on that instance
    still owed its kind, for up to ``grace_s`` seconds after that operation
    returned; each kind is matched once (repeated ``TRANSITION`` events
    excepted), and an operation that received one of its rule's
    ``final_events`` is owed nothing more. One reset may be reported more
    than once (QEMU reports it, then the firmware's own reset as it starts),
    so a ``REBOOTED`` no operation is owed goes to the newest operation that
    received one, while that operation is within its grace: no guest boots
    and reboots itself that fast. A stop the hypervisor reports as
    forced (a destroyed domain) is owed only to a forced operation or to a
    graceful one that fell back to forcing (:meth:`forcing`). Operations may
    run concurrently and reach the hypervisor in any order, so a matched
    event settles only the debts of operations that *ended before* the
    matched one began: those reached the hypervisor first, and since a
    hypervisor's events arrive in order, what they are still owed will
    never come, nor will repeats of what they received (an event the driver
    reports itself, from the operation's own thread, settles nothing). An
    operation that failed before reaching the hypervisor is owed nothing.
    ``TRANSITION`` events are matched by the transition they show instead.
    """

    def __init__(self, grace_s: float = 2.0) -> None:
        self._grace_s = grace_s
        self._lock = threading.Lock()
        #: Per instance, its operations in the order they began: running ones, and finished
        #: ones still owed events (some may be past their grace; readers skip those).
        self._entries: dict[str, list[_Entry]] = {}
        #: Per instance, only the running operations, oldest first. A tuple replaced whole
        #: under the lock, so that the frequent "what runs?" questions need no lock.
        self._running: dict[str, tuple[_Entry, ...]] = {}
        #: Per instance, a time before which none of its finished entries leaves its grace
        #: (their ends, and so their deadlines, come in order): until then, trimming the
        #: history needs no look at each entry's deadline.
        self._expires: dict[str, float] = {}
        #: Per instance with operations running, when (on ``_clock``) an operation of ours forced
        #: it, and on which thread. Dropped when its last operation ends: only a running
        #: operation asks (see ``forced_since``).
        self._forced: dict[str, dict[int, int]] = {}

    @contextmanager
    def track(
        self, instance_id: str, operation: Operation, *, label: str | None = None, state: str = "busy"
    ) -> Iterator[None]:
        """Mark ``operation`` as in flight on ``instance_id`` for the ``with`` block.

        A forced operation may start while another runs on the same instance
        (a forced power-off interrupts a graceful shutdown), and so may a
        second request for the operation in flight; any other is refused
        with :class:`InvalidStateTransition` naming the instance by ``label``
        (its name) and its ``state``.
        """
        entry = self.begin(instance_id, operation, label=label, state=state)
        try:
            yield
        finally:
            self.end(entry)

    def begin(
        self, instance_id: str, operation: Operation, *, label: str | None = None, state: str = "busy"
    ) -> object:
        """Start tracking, as :meth:`track` does; return the token :meth:`end` takes."""
        rule = rule_for(operation)
        entry = _Entry(instance_id, operation, set(rule.events), threading.get_ident())
        with self._lock:
            running = self._running.get(instance_id, ())
            if running and not rule.forced and running[-1].operation is not operation:
                raise InvalidStateTransition(
                    label or instance_id,
                    operation.value,
                    str(state),
                    transition=rule_for(running[-1].operation).transition.value,
                )
            self._running[instance_id] = (*running, entry)
            if entry.forced:
                self._forced.setdefault(instance_id, {})[entry.began] = entry.thread
            entries = self._entries.get(instance_id)
            if entries is None:
                self._entries[instance_id] = [entry]
            else:
                entries.append(entry)
                # Events arrive in order, so very old debts are settled by newer matches; a cap
                # keeps a busy instance's history (and every lookup) short.
                if len(entries) - len(running) - 1 > _MAX_FINISHED:
                    self._trim(instance_id, entries)
        return entry

    def end(self, token: object, *, reached_hypervisor: bool = True) -> None:
        """Stop tracking the operation :meth:`begin` returned ``token`` for.

        ``reached_hypervisor`` false says the operation failed before it
        changed anything (it was refused): it is owed no event.
        """
        assert isinstance(token, _Entry)
        with self._lock:
            token.ended = next(_clock)
            if not reached_hypervisor:
                token.settle()
                # A forced operation refused before it acted forced nothing.
                self._forced.get(token.instance_id, {}).pop(token.began, None)
            token.until = time.monotonic() + self._grace_s
            self._expires.setdefault(token.instance_id, token.until)
            running = self._running.get(token.instance_id, ())
            if running == (token,):
                del self._running[token.instance_id]
                self._forced.pop(token.instance_id, None)
            elif token in running:
                self._running[token.instance_id] = tuple(entry for entry in running if entry is not token)

    def caught_up(self, instance_id: str) -> None:
        """Settle the debts of finished operations on ``instance_id``: the source has reported all.

        A polling source that just looked has reported every change up to
        now; what older operations are still owed will never come.
        """
        with self._lock:
            for entry in self._entries.get(instance_id, ()):
                if entry.until is not None:
                    entry.settle()

    def forget_owed(self) -> None:
        """Forget what finished operations are still owed: their events will never come.

        Called when an event source starts, since it reports only what
        changes after it started.
        """
        with self._lock:
            for entries in self._entries.values():
                for entry in entries:
                    if entry.until is not None:
                        entry.settle()

    def any_in_flight(self) -> bool:
        """Whether any operation runs on any instance (a cheap check before per-instance ones)."""
        return bool(self._running)

    def in_flight(self, instance_id: str) -> Operation | None:
        """Return the newest operation running on ``instance_id``, if any."""
        running = self._running.get(instance_id)
        return running[-1].operation if running else None

    def forcing(self, instance_id: str) -> None:
        """Note that the calling thread's operation on ``instance_id`` now forces it off.

        Called by a graceful shutdown or reboot about to fall back to
        forcing: the forced stop that follows is its own.
        """
        ident = threading.get_ident()
        with self._lock:
            for entry in self._running.get(instance_id, ()):
                if entry.thread == ident:
                    entry.forced = True
            if instance_id in self._running:
                self._forced.setdefault(instance_id, {})[next(_clock)] = ident

    def now(self) -> int:
        """Return a mark on the tracker's clock, for :meth:`forced_since`."""
        return next(_clock)

    def forced_since(self, instance_id: str, mark: int) -> bool:
        """Whether another thread's operation of ours forced ``instance_id`` after ``mark``.

        ``mark`` comes from :meth:`now`. Asked by an operation still running
        on the instance (what forced it meanwhile is kept only that long);
        the calling thread's own forcing does not count: it knows of that.
        """
        ident = threading.get_ident()
        with self._lock:
            marks = self._forced.get(instance_id, {})
            return any(when > mark and thread != ident for when, thread in marks.items())

    def own_operation(self, instance_id: str) -> Operation | None:
        """Return the operation the calling thread is carrying out on ``instance_id``, if any.

        A driver that records causes itself (the fake's shared event log)
        asks this rather than :meth:`in_flight`: another thread's operation
        on the same instance is not what the calling thread's change causes.
        """
        ident = threading.get_ident()
        for entry in reversed(self._running.get(instance_id, ())):
            if entry.thread == ident:
                return entry.operation
        return None

    def cause(
        self,
        instance_id: str,
        kind: EventKind,
        transition: Transition | None = None,
        *,
        forced: bool = False,
    ) -> Operation | None:
        """Return the operation of ours that an event on ``instance_id`` comes from.

        A ``TRANSITION`` event belongs to the operation whose transition it
        shows, else to the operation running (a graceful shutdown that falls
        back to powering off shows that transition too) or, when it shows a
        transition ending (``transition`` None), to the newest operation
        still running or just finished. ``forced`` says the event's reading
        shows the instance was forced off (see the class docstring).
        """
        with self._lock:
            if kind is EventKind.TRANSITION:
                return self._match_transition(instance_id, transition)
            return self._match(instance_id, kind, consume=True, forced=forced)

    def expects(self, instance_id: str, kind: EventKind) -> Operation | None:
        """Like :meth:`cause`, without using the match up."""
        with self._lock:
            return self._match(instance_id, kind, consume=False)

    def _match_transition(self, instance_id: str, transition: Transition | None) -> Operation | None:
        entries = self._live(instance_id)
        if transition is None:
            return entries[-1].operation if entries else None
        for entry in entries:
            if rule_for(entry.operation).transition is transition:
                return entry.operation
        running = self._running.get(instance_id)
        return running[-1].operation if running else None

    def _trim(self, instance_id: str, entries: list[_Entry]) -> None:
        """Drop the instance's entries past their grace, then its oldest finished beyond the cap."""
        if self._expires.get(instance_id, 0.0) >= time.monotonic():
            # None has expired. Usually one entry too many has finished: the oldest.
            if entries[0].until is not None and len(entries) - len(self._running.get(instance_id, ())) == (
                _MAX_FINISHED + 1
            ):
                del entries[0]
            else:
                self._entries[instance_id] = _capped(entries)
            return
        kept = _capped(self._live(instance_id))
        self._entries[instance_id] = kept
        deadlines = [entry.until for entry in kept if entry.until is not None]
        if deadlines:
            self._expires[instance_id] = min(deadlines)
        else:
            self._expires.pop(instance_id, None)

    def _live(self, instance_id: str) -> list[_Entry]:
        now = time.monotonic()
        return [e for e in self._entries.get(instance_id, ()) if e.until is None or e.until >= now]

    def _match(
        self, instance_id: str, kind: EventKind, *, consume: bool, forced: bool = False
    ) -> Operation | None:
        entries = self._live(instance_id)
        if entries:
            self._entries[instance_id] = entries
        else:
            self._entries.pop(instance_id, None)
            self._expires.pop(instance_id, None)
        for index, entry in enumerate(entries):
            if kind in entry.owed and not (forced and not entry.forced):
                if consume:
                    if kind in _REPEATED_KINDS:
                        entry.repeats.add(kind)
                    if kind in rule_for(entry.operation).final_events:
                        entry.owed.clear()
                    elif kind is not EventKind.TRANSITION:
                        entry.owed.discard(kind)
                    # A hypervisor's event means its stream has moved past the operations
                    # that reached it before this one. One the driver reports itself, on
                    # the thread running the operation, says nothing about events on their way.
                    if entry.until is not None or entry.thread != threading.get_ident():
                        for older in entries[:index]:
                            if older.ended is not None and older.ended < entry.began:
                                older.settle()
                return entry.operation
        if kind in _REPEATED_KINDS:
            for entry in reversed(entries):
                if kind in entry.repeats:
                    return entry.operation
        return None


def _capped(entries: list[_Entry]) -> list[_Entry]:
    """Drop the oldest finished entries beyond ``_MAX_FINISHED``."""
    excess = sum(entry.until is not None for entry in entries) - _MAX_FINISHED
    if excess <= 0:
        return entries
    kept: list[_Entry] = []
    for entry in entries:
        if excess and entry.until is not None:
            excess -= 1
        else:
            kept.append(entry)
    return kept
