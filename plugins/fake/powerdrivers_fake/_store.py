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

#: The whole state: ``{"format", "seq", "instances": {id: record}, "events": [...]}``.
Document = dict[str, Any]

FORMAT = 1
_KEEP_EVENTS = 500


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
    """Transactional access to the fake hypervisor's document."""

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[Document]:
        """Return a context manager yielding the document, exclusively.

        Changes are committed when the block ends normally; if it raises,
        nothing is written.
        """

    @abc.abstractmethod
    def fingerprint(self) -> object:
        """Return something that changes whenever another writer commits."""


class MemoryStore(Store):
    """State kept in this process, private to one driver instance.

    A transaction works on a copy of the instances mapping and replaces the
    committed document when it ends, so a committed document's instances
    (the mapping and its records) never change afterwards: :attr:`committed`
    may be read without the lock.
    """

    def __init__(self, seed: Callable[[], Document]) -> None:
        self._document = seed()
        self._lock = threading.RLock()

    @property
    def committed(self) -> Document:
        """The latest committed document; read its instances only, never change it."""
        return self._document

    def transaction(self) -> AbstractContextManager[Document]:
        return _MemoryTransaction(self)

    def fingerprint(self) -> object:
        return self._document["seq"]


class _MemoryTransaction:
    """One transaction on a :class:`MemoryStore` (a class: every operation's hot path)."""

    __slots__ = ("_logged", "_store", "_working")

    def __init__(self, store: MemoryStore) -> None:
        self._store = store

    def __enter__(self) -> Document:
        store = self._store
        store._lock.acquire()
        try:
            document = store._document
            # The event log only grows within a transaction, so it is shared rather
            # than copied, and undone by truncation. Records are shared too: the driver
            # copies one before changing it, so dropping the working copy undoes that.
            self._logged = len(document["events"])
            self._working: Document = {**document, "instances": dict(document["instances"])}
        except BaseException:
            store._lock.release()
            raise
        return self._working

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        store = self._store
        try:
            if exc_type is None:
                _trim(self._working)
                store._document = self._working
            else:
                del store._document["events"][self._logged :]
        finally:
            store._lock.release()


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
        problem = _structure_problem(document)
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


_RECORD_KEYS = frozenset(
    {"id", "name", "state", "reason", "guest", "vcpus", "memory_mib", "pending", "crash_at"}
)


def _structure_problem(document: object) -> str | None:
    """Say what is wrong with a loaded document's shape, or return None."""
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        return f"is not a format-{FORMAT} state file"
    if not isinstance(document.get("seq"), int) or not isinstance(document.get("instances"), dict):
        return "lacks its sequence number or instances"
    if not isinstance(document.get("events"), list):
        return "lacks its event log"
    for key, record in document["instances"].items():
        if not isinstance(record, dict) or not record.keys() >= _RECORD_KEYS or record["id"] != key:
            return f"has a malformed instance record {key!r}"
    return None


def _trim(document: Document) -> None:
    if len(document["events"]) > _KEEP_EVENTS:
        del document["events"][: len(document["events"]) - _KEEP_EVENTS]
