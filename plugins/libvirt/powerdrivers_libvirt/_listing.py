"""Listing every domain in one bulk call, at no more than the call's own cost.

libvirt-python's ``getAllDomainStats`` returns each domain as a Python
``virDomain`` (an ``__init__`` and a ``__del__`` in Python per domain), and
naming a domain takes a Python-to-C call for its UUID, which releases and
retakes the GIL, and one for its name. Over thousands of domains those costs
add a third to the bulk call. So a listing takes the first of three paths
that this installation has; all three give the same readings:

``bulk``
    This package's C module, ``_bulk`` (built from ``_bulk.c`` where a C
    compiler and libvirt's headers are at hand, as libvirt-python's own build
    needs): the bulk call and every domain's UUID, name, state and reason in
    one call from C, on libvirt-python's own connection handle.
``libvirtmod``
    libvirt-python's own extension module, called directly: the bulk call,
    then per domain handle its raw UUID (formatted once and remembered), its
    name, and the ``virDomainFree`` that ``virDomain.__del__`` would make.
``public``
    libvirt-python's classes, where neither of the others is available.

Whether a shut-off domain has a managed-save image is not in the bulk call's
answer; a second call lists the domains that have one, only when some domain
could (see ``DomainLister._managed_saves``).
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable, Hashable, Iterator
from datetime import UTC, datetime
from itertools import count, repeat
from operator import add, itemgetter
from typing import Any, NamedTuple, Protocol

import libvirt

from powerdrivers import InstanceReading
from powerdrivers_libvirt._states import MAYBE_SAVED_REASONS

_STATE_STATS = libvirt.VIR_DOMAIN_STATS_STATE
_SHUTOFF = libvirt.VIR_DOMAIN_SHUTOFF
_MANAGED_SAVE_FILTER = libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE
#: Remembered UUID texts beyond this (or twice the last listing) start afresh.
_REMEMBERED_UUIDS = 4096
#: From this many domains in the previous listing, the managed-save query may overlap the bulk call.
_OVERLAP_FROM = 256

#: Builds the reading of a (state, reason, has a managed-save image) at a time; id and name empty.
ReadingOf = Callable[[int, int, bool, datetime], InstanceReading]
_Query = Callable[[], set[str]]
_first = itemgetter(0)
_second = itemgetter(1)
_state_and_reason = itemgetter("state.state", "state.reason")
_row_state_and_reason = itemgetter(2, 3)


def _lenient_state_and_reason(stats: dict[str, Any]) -> tuple[int, int]:
    return stats.get("state.state", -1), stats.get("state.reason", -1)


class BulkModule(Protocol):
    """The C module of this package, ``powerdrivers_libvirt._bulk``."""

    def domain_states(self, conn_handle: Any, /) -> list[tuple[str, str, int, int]] | None:
        """Every domain's (uuid, name, state, reason); None when libvirt fails."""


def bulk_module() -> BulkModule | None:
    """Return this package's C module, or None where it was not built."""
    try:
        from powerdrivers_libvirt import _bulk
    except ImportError:
        return None
    return _bulk


class CFunctions(NamedTuple):
    """The ``libvirtmod`` functions a listing calls instead of the public API."""

    get_all_domain_stats: Callable[[Any, int, int], Any]
    list_all_domains: Callable[[Any, int], Any]
    domain_uuid: Callable[[Any], bytes | None]
    domain_name: Callable[[Any], str | None]
    domain_free: Callable[[Any], Any]


def c_functions() -> CFunctions | None:
    """Return the ``libvirtmod`` functions, or None where this libvirt-python lacks any."""
    try:
        import libvirtmod
    except ImportError:
        return None
    try:
        return CFunctions(
            libvirtmod.virConnectGetAllDomainStats,
            libvirtmod.virConnectListAllDomains,
            libvirtmod.virDomainGetUUID,
            libvirtmod.virDomainGetName,
            libvirtmod.virDomainFree,
        )
    except AttributeError:
        return None


class DomainLister:
    """Reads every domain of a connection as canonical readings, in one bulk call.

    ``bulk`` is this package's C module and ``c`` libvirt-python's ``libvirtmod``
    functions; a listing takes the first of them that is not None, else the
    public API (see :attr:`path`), and all give the same readings. One lister
    serves one driver, from any number of threads.
    """

    def __init__(self, reading_of: ReadingOf, c: CFunctions | None, bulk: BulkModule | None = None) -> None:
        self._reading_of = reading_of
        self._c = c
        self._bulk = bulk
        self._uuid_texts = _UuidTexts()
        self._previous_count = 0
        self._previous_asked = False
        self._overlap = _OverlapThread()
        # A lister dropped without close() still lets its thread end.
        weakref.finalize(self, self._overlap.close)
        self._meanings: dict[tuple[tuple[int, int], bool], tuple[Any, ...]] = {}

    @property
    def path(self) -> str:
        """How listings reach libvirt: ``"bulk"``, ``"libvirtmod"`` or ``"public"``."""
        if self._bulk is not None:
            return "bulk"
        return "libvirtmod" if self._c is not None else "public"

    def read_all(self, conn: libvirt.virConnect) -> list[InstanceReading]:
        """Every domain's reading; libvirt errors propagate as ``libvirtError``."""
        c = self._c
        handle_of_conn = getattr(conn, "_o", None)
        if handle_of_conn is None or (c is None and self._bulk is None):
            return self._read_public(conn)
        # The closures hold conn itself, so that its handle outlives any query on it.
        job, managed = self._managed_saves(
            (lambda: _managed_through_c(c, conn._o)) if c else (lambda: _managed_through_api(conn))
        )
        try:
            if self._bulk is not None:
                rows = self._bulk.domain_states(handle_of_conn)
                if rows is None:
                    raise libvirt.libvirtError("virConnectGetAllDomainStats() failed")
                return self._assemble(
                    list(map(_first, rows)),
                    list(map(_second, rows)),
                    map(_row_state_and_reason, rows),
                    lambda index: _row_state_and_reason(rows[index]),
                    managed,
                )
            assert c is not None
            records = c.get_all_domain_stats(handle_of_conn, _STATE_STATS, 0)
            if records is None:
                raise libvirt.libvirtError("virConnectGetAllDomainStats() failed")
            try:
                return self._from_records(records, c.domain_uuid, c.domain_name, managed)
            finally:
                free = c.domain_free
                for handle, _ in records:
                    free(handle)
        finally:
            # No query outlives its listing, even one whose answer went unused.
            if job is not None:
                job.wait()

    def _read_public(self, conn: libvirt.virConnect) -> list[InstanceReading]:
        job, managed = self._managed_saves(lambda: _managed_through_api(conn))
        try:
            records = conn.getAllDomainStats(_STATE_STATS)
            return self._from_records(records, libvirt.virDomain.UUIDString, libvirt.virDomain.name, managed)
        finally:
            if job is not None:
                job.wait()

    def _managed_saves(self, query: _Query) -> tuple[_Job | None, _Query]:
        """How this listing learns which domains have a managed-save image, if it must.

        The query visits every domain, at about a sixth of the bulk call's cost. A
        listing asks it only on meeting a domain that could have an image; where the
        previous listing was large and did, the query starts now, on a thread of its
        own (see ``_OverlapThread``), so that it overlaps the bulk call. Returns the
        job started, if any, and how to get the answer.
        """
        if self._previous_asked and self._previous_count >= _OVERLAP_FROM:
            job = self._overlap.submit(query)
            if job is not None:
                return job, job.result
        return None, query

    def close(self) -> None:
        """End the thread that overlaps queries, if one was started."""
        self._overlap.close()

    def _from_records(
        self,
        records: list[tuple[Any, dict[str, Any]]],
        raw_uuid: Callable[[Any], Any],
        name_of: Callable[[Any], Any],
        managed_saves: _Query,
    ) -> list[InstanceReading]:
        texts = self._uuid_texts
        if len(texts) > max(_REMEMBERED_UUIDS, 2 * len(records)):
            texts.clear()
        handles = list(map(_first, records))
        names = list(map(name_of, handles))
        if None in names:
            raise libvirt.libvirtError("virDomainGetName() failed")
        return self._assemble(
            list(map(texts.__getitem__, map(raw_uuid, handles))),
            names,
            map(_state_and_reason, map(_second, records)),
            lambda index: _lenient_state_and_reason(records[index][1]),
            managed_saves,
        )

    def _assemble(
        self,
        ids: list[str],
        names: list[str],
        keys: Iterator[tuple[int, int]],
        key_at: Callable[[int], tuple[int, int]],
        managed_saves: _Query,
    ) -> list[InstanceReading]:
        # Per domain, only C code runs (map, itemgetter, dict lookups), and nothing per
        # domain outlives the listing but its reading. Readings differ per domain only in
        # id and name: the rest (the "tail") is built once per distinct (state, reason)
        # and shared.
        observed_at = datetime.now(UTC)
        tails = _TailsByKey(lambda key: self._tail(key, False, observed_at))
        try:
            shared_tails = list(map(tails.__getitem__, keys))
        except KeyError:
            # A record without its state or reason (a server that misbehaves): -1 for
            # what is missing, which reads UNKNOWN with the numbers kept, as on the C path.
            shared_tails = list(map(tails.__getitem__, map(key_at, range(len(ids)))))
        maybe_saved = {key for key in tails if key[0] == _SHUTOFF and key[1] in MAYBE_SAVED_REASONS}
        self._previous_asked = bool(maybe_saved)
        self._previous_count = len(ids)
        if maybe_saved:
            managed = managed_saves()
            if managed:
                self._mark_managed_saves(managed, ids, key_at, maybe_saved, shared_tails, observed_at)
        return list(
            map(tuple.__new__, repeat(InstanceReading), map(add, zip(ids, names, strict=True), shared_tails))
        )

    def _mark_managed_saves(
        self,
        managed: set[str],
        ids: list[str],
        key_at: Callable[[int], tuple[int, int]],
        maybe_saved: set[tuple[int, int]],
        tails: list[tuple[Any, ...]],
        observed_at: datetime,
    ) -> None:
        """Give each domain that has a managed-save image the tail that says so."""
        position = dict(zip(ids, count()))
        for domain_id in managed:
            index = position.get(domain_id)
            if index is None:
                continue
            key = key_at(index)
            if key in maybe_saved:
                tails[index] = self._tail(key, True, observed_at)

    def _tail(self, key: tuple[int, int], managed_save: bool, observed_at: datetime) -> tuple[Any, ...]:
        """Return a reading's fields after id and name; all but ``observed_at`` are remembered."""
        meaning = self._meanings.get((key, managed_save))
        if meaning is None:
            reading = self._reading_of(key[0], key[1], managed_save, observed_at)
            meaning = self._meanings[key, managed_save] = tuple(reading)[2:-1]
        return (*meaning, observed_at)


def _managed_through_api(conn: libvirt.virConnect) -> set[str]:
    return {domain.UUIDString() for domain in conn.listAllDomains(_MANAGED_SAVE_FILTER)}


def _managed_through_c(c: CFunctions, handle_of_conn: Any) -> set[str]:
    handles = c.list_all_domains(handle_of_conn, _MANAGED_SAVE_FILTER)
    if handles is None:
        raise libvirt.libvirtError("virConnectListAllDomains() failed")
    try:
        return {_UuidTexts()[c.domain_uuid(handle)] for handle in handles}
    finally:
        for handle in handles:
            c.domain_free(handle)


class _UuidTexts(dict[Hashable, str]):
    """Each domain's UUID, raw (16 bytes) or text, and its text, made on the first lookup."""

    def __missing__(self, raw: Hashable) -> str:
        if isinstance(raw, bytes):
            text = self[raw] = _uuid_text(raw)
            return text
        if isinstance(raw, str):
            return raw
        raise libvirt.libvirtError("virDomainGetUUID() failed")


class _TailsByKey(dict[tuple[int, int], tuple[Any, ...]]):
    """The shared tail of each (state, reason), built on the first lookup."""

    def __init__(self, build: Callable[[tuple[int, int]], tuple[Any, ...]]) -> None:
        super().__init__()
        self._build = build

    def __missing__(self, key: tuple[int, int]) -> tuple[Any, ...]:
        tail = self[key] = self._build(key)
        return tail


class _Job:
    """One query handed to the overlap thread; ``result()`` waits for it, then returns or raises."""

    __slots__ = ("_answer", "_done", "_error", "_query")

    def __init__(self, query: _Query) -> None:
        self._query = query
        self._answer: set[str] = set()
        self._error: BaseException | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def run(self) -> None:
        """Run the query, keeping its answer or its exception."""
        try:
            self._answer = self._query()
        except BaseException as error:  # raised again in the waiting thread
            self._error = error
        finally:
            self._done.release()

    def wait(self) -> None:
        """Wait until the query has finished, however it ended."""
        with self._done:
            pass

    def result(self) -> set[str]:
        """Wait for the query; return its answer, or raise its exception."""
        self.wait()
        if self._error is not None:
            raise self._error
        return self._answer


class _OverlapThread:
    """A thread, started on first use, that runs one query at a time beside the caller.

    While it runs one, ``submit`` declines another (the caller runs its query in
    line); after ``close`` it declines all, and the thread ends once its query is done.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._busy = False
        self._closed = False

    def submit(self, query: _Query) -> _Job | None:
        """Start ``query`` on the thread; None if it is busy, closed, or cannot start."""
        with self._lock:
            if self._busy or self._closed:
                return None
            if self._thread is None:
                thread = threading.Thread(
                    target=self._serve, name="powerdrivers-libvirt-listing", daemon=True
                )
                try:
                    thread.start()
                except RuntimeError:  # no thread to be had: out of resources, or the interpreter is exiting
                    return None
                self._thread = thread
            self._busy = True
            job = _Job(query)
            self._jobs.put(job)
            return job

    def close(self) -> None:
        """Decline every later query; the thread ends once its current one is done."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._thread is not None:
                self._jobs.put(None)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            job.run()
            with self._lock:
                self._busy = False


def _uuid_text(raw: bytes) -> str:
    """Return the canonical text of a raw 16-byte UUID."""
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
