"""Where the fake hypervisor keeps its state: in memory, or in a JSON file shared by processes."""

from __future__ import annotations

import abc
import fcntl
import json
import os
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from powerdrivers import HypervisorError
from powerdrivers_fake._validate import FORMAT, KEEP_EVENTS, document_problem

#: The whole state: ``{"format", "seq", "instances": {id: record}, "events": [...]}``.
Document = dict[str, Any]


def empty_document() -> Document:
    """Return a document with no instances and no events."""
    return {"format": FORMAT, "seq": 0, "instances": {}, "events": []}


def _copy(document: Document) -> Document:
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
                _trim(document)
        finally:
            store._depth -= 1
            store.lock.release()


class FileStore(Store):
    """State kept in a JSON file; an exclusive ``flock`` serialises processes.

    Writes go to a temporary file renamed over the old one, so a reader
    never sees half a document and a crash mid-write loses nothing.
    """

    def __init__(self, path: Path, seed: Callable[[], Document]) -> None:
        self.path = path
        self._lock_path = path.with_name(path.name + ".lock")
        self._seed = seed
        self._thread_lock = threading.RLock()
        if not path.parent.is_dir():
            raise HypervisorError(f"fake state directory {path.parent} does not exist", code="no-directory")

    @contextmanager
    def transaction(self) -> Iterator[Document]:
        with self._thread_lock, open(self._lock_path, "a+b") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            original = self._load()
            working = _copy(original)
            yield working
            _trim(working)
            if working != original:
                self._save(working)

    def fingerprint(self) -> object:
        try:
            status = self.path.stat()
        except FileNotFoundError:
            return None
        return status.st_mtime_ns, status.st_size, status.st_ino

    def _load(self) -> Document:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            document = self._seed()
            self._save(document)
            return document
        except UnicodeDecodeError as error:
            raise self._corrupt(f"is not UTF-8 text: {error}") from None
        try:
            document = json.loads(text)
        except json.JSONDecodeError as error:
            raise self._corrupt(f"is not valid JSON: {error}") from None
        problem = document_problem(document)
        if problem:
            raise self._corrupt(problem)
        return document  # type: ignore[no-any-return]

    def _corrupt(self, problem: str) -> HypervisorError:
        return HypervisorError(
            f"fake state file {self.path} {problem}; it was left untouched", code="corrupt"
        )

    def _save(self, document: Document) -> None:
        handle, temporary = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as output:
                json.dump(document, output, indent=1, sort_keys=True)
            os.replace(temporary, self.path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise


def _trim(document: Document) -> None:
    if len(document["events"]) > KEEP_EVENTS:
        del document["events"][: len(document["events"]) - KEEP_EVENTS]
