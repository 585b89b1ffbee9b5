"""Listing every domain in one bulk call, at no more than the call's own cost.

libvirt-python's ``getAllDomainStats`` returns each domain as a Python
``virDomain`` (an ``__init__`` and a ``__del__`` in Python per domain), and
naming a domain takes a Python-to-C call for its UUID, which releases and
retakes the GIL, and one for its name. Over thousands of domains those costs
add a third to the bulk call. So a listing takes one of two paths, which give
the same readings:

``bulk``
    This package's C module, ``_bulk`` (built from ``_bulk.c`` where a C
    compiler and libvirt's headers are at hand, as libvirt-python's own build
    needs): the bulk call and every domain's UUID, name, state and reason in
    one call from C, on libvirt-python's own connection handle.
``public``
    libvirt-python's classes, where the C module was not built.

Whether a shut-off domain has a managed-save image is not in the bulk call's
answer; a second call lists the domains that have one, only when some domain
could, and beside the bulk call once listings are large (see
:meth:`DomainLister.read_all`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import UTC, datetime
from itertools import count, repeat
from operator import add, itemgetter
from typing import Any, Protocol

import libvirt

from powerdrivers import InstanceReading
from powerdrivers_libvirt._states import MAYBE_SAVED_REASONS

_STATE_STATS = libvirt.VIR_DOMAIN_STATS_STATE
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF
_MANAGED_SAVE_FILTER = libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE
#: From this many domains in the previous listing, the managed-save query may overlap the bulk call.
_OVERLAP_FROM = 256

#: Builds the reading of a (state, reason, has a managed-save image) at a time; id and name empty.
ReadingOf = Callable[[int, int, bool, datetime], InstanceReading]
#: One domain as a listing sees it: (uuid, name, state, reason), -1 for a number libvirt left out.
Row = tuple[str, str, int, int]

_uuid = itemgetter(0)
_uuid_and_name = itemgetter(0, 1)
_state_and_reason = itemgetter(2, 3)


class BulkModule(Protocol):
    """The C module of this package, ``powerdrivers_libvirt._bulk``."""

    def domain_states(self, conn_handle: Any, /) -> list[Row] | None:
        """Every domain's (uuid, name, state, reason); None when libvirt fails."""


def bulk_module() -> BulkModule | None:
    """Return this package's C module, or None where it was not built."""
    try:
        from powerdrivers_libvirt import _bulk
    except ImportError:
        return None
    return _bulk


class DomainLister:
    """Reads every domain of a connection as canonical readings, in one bulk call.

    With ``bulk``, this package's C module, listings go through it; without it
    (or on a connection without libvirt-python's handle) through the public
    API (see :attr:`path`). Both give the same readings. One lister serves one
    driver, from any number of threads.
    """

    def __init__(self, reading_of: ReadingOf, bulk: BulkModule | None) -> None:
        self._reading_of = reading_of
        self._bulk = bulk
        #: Every reading's fields after id and name but ``observed_at``, by (state, reason, saved).
        self._meanings: dict[tuple[tuple[int, int], bool], tuple[Any, ...]] = {}
        self._overlap = _Overlap()
        self._previous_count = 0
        self._previous_asked = False

    @property
    def path(self) -> str:
        """How listings reach libvirt: ``"bulk"`` or ``"public"``."""
        return "bulk" if self._bulk is not None else "public"

    def read_all(self, conn: libvirt.virConnect) -> list[InstanceReading]:
        """Return every domain's reading; libvirt errors propagate as ``libvirtError``.

        When some domain is off for a reason that allows a managed-save image,
        one ``listAllDomains`` call names the domains that have one. That query
        visits every domain, at up to a sixth of the bulk call's cost: where
        the previous listing was large and needed it, it starts at once on a
        thread of its own, so that it overlaps the bulk call.
        """
        overlapped = None
        if self._previous_asked and self._previous_count >= _OVERLAP_FROM:
            overlapped = self._overlap.submit(lambda: _managed_saves(conn))
        try:
            return self._readings(
                self._rows(conn), overlapped.result if overlapped else lambda: _managed_saves(conn)
            )
        finally:
            # No query outlives its listing, even one whose answer went unused: the
            # caller may close the connection next.
            if overlapped is not None:
                wait([overlapped])

    def close(self) -> None:
        """End the thread that overlaps queries, if one was started; later queries run in line."""
        self._overlap.close()

    def _rows(self, conn: libvirt.virConnect) -> Sequence[Row]:
        handle = getattr(conn, "_o", None)
        if self._bulk is None or handle is None:
            return _public_rows(conn)
        rows = self._bulk.domain_states(handle)
        if rows is None:
            raise libvirt.libvirtError("virConnectGetAllDomainStats() failed")
        return rows

    def _readings(self, rows: Sequence[Row], managed_saves: Callable[[], set[str]]) -> list[InstanceReading]:
        # From the rows on, per domain only C code runs (map, itemgetter, dict lookups),
        # and nothing per domain outlives the listing but its reading. Readings differ per domain only in
        # id and name: the rest (the "tail") is built once per distinct (state, reason)
        # and shared.
        observed_at = datetime.now(UTC)
        tails = _TailsByKey(lambda key: self._tail(key, False, observed_at))
        shared_tails = list(map(tails.__getitem__, map(_state_and_reason, rows)))
        maybe_saved = {key for key in tails if key[0] == _SHUTOFF and key[1] in MAYBE_SAVED_REASONS}
        self._previous_asked = bool(maybe_saved)
        self._previous_count = len(rows)
        if maybe_saved:
            saved = managed_saves()
            if saved:
                self._mark_saved(saved, rows, maybe_saved, shared_tails, observed_at)
        return list(
            map(tuple.__new__, repeat(InstanceReading), map(add, map(_uuid_and_name, rows), shared_tails))
        )

    def _mark_saved(
        self,
        saved: set[str],
        rows: Sequence[Row],
        maybe_saved: set[tuple[int, int]],
        tails: list[tuple[Any, ...]],
        observed_at: datetime,
    ) -> None:
        """Give each domain that has a managed-save image, off for a reason that allows one, its tail."""
        position = dict(zip(map(_uuid, rows), count()))
        for domain_id in saved:
            index = position.get(domain_id)
            if index is None:  # defined after the bulk call
                continue
            key = _state_and_reason(rows[index])
            if key in maybe_saved:
                tails[index] = self._tail(key, True, observed_at)

    def _tail(self, key: tuple[int, int], managed_save: bool, observed_at: datetime) -> tuple[Any, ...]:
        """Return a reading's fields after id and name; all but ``observed_at`` are remembered."""
        meaning = self._meanings.get((key, managed_save))
        if meaning is None:
            reading = self._reading_of(key[0], key[1], managed_save, observed_at)
            meaning = self._meanings[key, managed_save] = tuple(reading)[2:-1]
        return (*meaning, observed_at)


def _public_rows(conn: libvirt.virConnect) -> list[Row]:
    """Make the bulk call through libvirt-python's classes; return rows, no ``virDomain`` kept."""
    return [
        (domain.UUIDString(), domain.name(), *_lenient_state_and_reason(stats))
        for domain, stats in conn.getAllDomainStats(_STATE_STATS)
    ]


def _lenient_state_and_reason(stats: dict[str, Any]) -> tuple[int, int]:
    # A record without its state or reason (a server that misbehaves): -1 for what is
    # missing, which reads UNKNOWN with the numbers kept, as the C module does.
    return stats.get("state.state", -1), stats.get("state.reason", -1)


def _managed_saves(conn: libvirt.virConnect) -> set[str]:
    """Return the UUIDs of the domains that have a managed-save image."""
    return {domain.UUIDString() for domain in conn.listAllDomains(_MANAGED_SAVE_FILTER)}


class _TailsByKey(dict[tuple[int, int], tuple[Any, ...]]):
    """The shared tail of each (state, reason), built on the first lookup."""

    def __init__(self, build: Callable[[tuple[int, int]], tuple[Any, ...]]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: tuple[int, int]) -> tuple[Any, ...]:
        tail = self[key] = self._build(key)
        return tail


class _Overlap:
    """Runs one managed-save query at a time beside a listing, on a thread started on first use.

    :meth:`submit` declines (the caller asks in line) while a query runs, after
    :meth:`close`, and where no thread can be started. A lister dropped without
    ``close`` lets its thread end too: the executor's thread ends with it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._running: Future[set[str]] | None = None
        self._closed = False

    def submit(self, query: Callable[[], set[str]]) -> Future[set[str]] | None:
        """Start ``query`` beside the caller and return its future; None if declined."""
        with self._lock:
            if self._closed or (self._running is not None and not self._running.done()):
                return None
            if self._executor is None:
                self._executor = ThreadPoolExecutor(1, thread_name_prefix="powerdrivers-libvirt-listing")
            try:
                self._running = self._executor.submit(query)
            except RuntimeError:  # no thread to be had: out of resources, or the interpreter is exiting
                # The query is queued already: cancel it, and start afresh next time.
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
                return None
            return self._running

    def close(self) -> None:
        """Decline every later query; the thread ends once its current query is done."""
        with self._lock:
            self._closed = True
            if self._executor is not None:
                self._executor.shutdown(wait=False)
