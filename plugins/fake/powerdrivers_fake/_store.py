"""Where the fake hypervisor keeps its state: the store interface, and the in-memory store.

The file store, shared by processes, is in ``_filestore``.
"""

from __future__ import annotations

import abc
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from types import TracebackType
from typing import Any

from powerdrivers_fake._validate import FORMAT, KEEP_EVENTS

#: The whole state: ``{"format", "seq", "instances": {id: record}, "events": [...]}``.
Document = dict[str, Any]


def empty_document() -> Document:
    """Return a document with no instances and no events."""
    return {"format": FORMAT, "seq": 0, "instances": {}, "events": []}


def copy_document(document: Document) -> Document:
    """Return a copy of ``document`` that a transaction may change and then drop."""
    # Records are flat except "pending", which is only ever replaced, so
    # copying each record is enough for a transaction to be undone by dropping it.
    return {
        **document,
        "instances": {key: dict(record) for key, record in document["instances"].items()},
        "events": list(document["events"]),
    }


class Store(abc.ABC):
    """Transactional access to the fake hypervisor's document.

    Within a transaction, a record is never changed where it is: the driver
    copies it, changes the copy and :meth:`put` s that in its place, and
    :meth:`put` and :meth:`remove` are the only ways instances come and go.
    A record once committed therefore never changes, and may be read without
    the store's lock.
    """

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Document]:
        """Return a context manager yielding the document, exclusively.

        Changes are committed when the block ends normally; if it raises,
        nothing is written.
        """

    @abc.abstractmethod
    def fingerprint(self) -> object:
        """Return something that changes whenever another writer commits."""

    def put(self, document: Document, record: dict[str, Any]) -> None:
        """Add ``record`` to the transaction's ``document``, or replace the record with its id."""
        document["instances"][record["id"]] = record

    def remove(self, document: Document, record_id: str) -> None:
        """Remove the record ``record_id`` from the transaction's ``document``."""
        del document["instances"][record_id]


class MemoryStore(Store):
    """State kept in this process, private to one driver instance.

    A transaction changes the one document in place, under the lock, and
    keeps an undo journal (each replaced or removed record, the event log's
    length, the sequence number) to roll back if it raises: its cost does
    not grow with the number of instances. Readers take :attr:`lock` to see
    only committed states.
    """

    def __init__(self, seed: Callable[[], Document]) -> None:
        self._document = seed()
        #: Held by every transaction; readers of :attr:`committed` hold it too.
        self.lock = threading.RLock()
        #: Per change of the transactions under way: the record id, and the record it replaced (None: none).
        self._undo: list[tuple[str, dict[str, Any] | None]] = []
        #: How many transactions the lock's holder has open (one, unless nested).
        self._depth = 0

    @property
    def committed(self) -> Document:
        """The document; outside a transaction, read it only while holding :attr:`lock`."""
        return self._document

    def transaction(self) -> AbstractContextManager[Document]:
        return _MemoryTransaction(self)

    def fingerprint(self) -> object:
        return self._document["seq"]

    def put(self, document: Document, record: dict[str, Any]) -> None:
        instances = document["instances"]
        key = record["id"]
        self._undo.append((key, instances.get(key)))
        instances[key] = record

    def remove(self, document: Document, record_id: str) -> None:
        instances = document["instances"]
        self._undo.append((record_id, instances.pop(record_id)))


class _MemoryTransaction:
    """One transaction on a :class:`MemoryStore` (a class: every operation's hot path)."""

    __slots__ = ("_journaled", "_logged", "_seq", "_store")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __enter__(self) -> Document:
        store = self._store
        store.lock.acquire()
        store._depth += 1
        document = store._document
        # Where this transaction's undo starts: a transaction nested in another (same
        # thread) undoes only its own changes; the outermost one ends the journal.
        self._journaled = len(store._undo)
        self._logged = len(document["events"])
        self._seq: int = document["seq"]
        return document

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        document = store._document
        undo = store._undo
        try:
            if exc_type is not None:
                instances = document["instances"]
                while len(undo) > self._journaled:
                    key, previous = undo.pop()
                    if previous is None:
                        instances.pop(key, None)
                    else:
                        instances[key] = previous
                del document["events"][self._logged :]
                document["seq"] = self._seq
            elif store._depth == 1:
                undo.clear()
                trim(document)
        finally:
            store._depth -= 1
            store.lock.release()


def trim(document: Document) -> None:
    """Drop the oldest events beyond the ones a document keeps."""
    if len(document["events"]) > KEEP_EVENTS:
        del document["events"][: len(document["events"]) - KEEP_EVENTS]


def append_event(document: Document, record: dict[str, Any], kind: str, cause: str | None) -> None:
    """Append an event of ``kind`` about ``record`` (as it is now) to the log, with its cause."""
    document["seq"] += 1
    document["events"].append(
        {
            "seq": document["seq"],
            "time": time.time(),
            "kind": kind,
            "id": record["id"],
            "name": record["name"],
            "state": record["state"],
            "reason": record["reason"],
            "cause": cause,
        }
    )
