"""The driver's own files in a procs directory, and the lock that serialises them.

``instances.json`` is the user's. The driver keeps what it learns in
``.procs/`` beside it:

``.procs/state.json``
    Per instance id: the pid and the start time ``/proc`` gave it (so a
    reused pid is never mistaken for the instance), when it started, which
    stop signal the driver sent or whether it powered it off, and the exit
    status once collected.
``.procs/lock``
    Held (``flock``) for every read and change, by every process and
    thread using the directory, so two clients never start one instance twice.
``.procs/logs/<name>.log``
    The instance's standard output and error, appended.
"""

from __future__ import annotations

import dataclasses
import fcntl
import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from powerdrivers_procs import _definitions
from powerdrivers_procs._definitions import BadFileError, Definition

STATE_DIR = ".procs"
_FORMAT = 1


@dataclass
class Record:
    """What the driver knows about the last run of one instance.

    ``status`` is the collected exit status (``exit:N`` or ``signal:NAME``),
    ``None`` while the process runs or when it could not be collected.
    ``stop_signal_sent`` is set by a graceful shutdown, ``powered_off`` by
    a power-off; they say whether an end was asked for.
    """

    pid: int
    starttime: int
    started_at: float
    status: str | None = None
    ended_at: float | None = None
    stop_signal_sent: str | None = None
    powered_off: bool = False

    def finish(self, status: str) -> None:
        """Record the exit status."""
        self.status = status
        self.ended_at = time.time()

    @classmethod
    def from_json(cls, entry: Any) -> Record:
        """Read a record written by :meth:`to_json`; ``ValueError`` if malformed."""
        if not isinstance(entry, dict):
            raise ValueError("a record is an object")
        names = {f.name for f in dataclasses.fields(cls)}
        record = cls(**{key: value for key, value in entry.items() if key in names})
        if not all(isinstance(value, int) for value in (record.pid, record.starttime)):
            raise ValueError("a record's pid and starttime are integers")
        return record

    def to_json(self) -> dict[str, Any]:
        """Return the record as it is written in ``state.json``."""
        return dataclasses.asdict(self)


@dataclass
class Snapshot:
    """The directory as one transaction sees it: definitions and records, both mutable."""

    definitions: dict[str, Definition]
    records: dict[str, Record]
    definitions_changed: bool = field(default=False)

    def find(self, ref: str) -> Definition | None:
        """Return the definition whose id or name is ``ref``."""
        for definition in self.definitions.values():
            if ref in (definition.id, definition.name):
                return definition
        return None

    def define(self, name: str, command: object, stop_signal: object = None) -> Definition:
        """Add or replace the definition of ``name``; raise ``DefinitionError`` if it is invalid."""
        definition = _definitions.make_definition(name, command, stop_signal)
        self.definitions[definition.name] = definition
        self.definitions_changed = True
        return definition

    def undefine(self, name: str) -> None:
        """Remove the definition of ``name`` and the driver's record of it."""
        definition = self.definitions.pop(name)
        self.records.pop(definition.id, None)
        self.definitions_changed = True


class Home:
    """A procs directory: the user's definitions and the driver's state, under one lock."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._state_dir = directory / STATE_DIR
        self._state_path = self._state_dir / "state.json"
        self._lock_path = self._state_dir / "lock"
        self.logs = self._state_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def log_of(self, name: str) -> Path:
        """Return the log file of instance ``name``."""
        return self.logs / f"{name}.log"

    @contextmanager
    def transaction(self) -> Iterator[Snapshot]:
        """Yield the directory's snapshot, exclusively, and write back what changed.

        Records are written even if the block raises: an exit status once
        collected cannot be collected again, and a process started must not
        be forgotten. Definitions are written only if the block succeeds.
        """
        with self._lock_path.open("a+b") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            snapshot = Snapshot(_definitions.load(self.directory), self._load_records())
            before = self._records_json(snapshot)
            try:
                yield snapshot
                if snapshot.definitions_changed:
                    _definitions.save(self.directory, snapshot.definitions)
            finally:
                after = self._records_json(snapshot)
                if after != before:
                    _definitions.write_json(self._state_path, after)

    def _load_records(self) -> dict[str, Record]:
        try:
            text = self._state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            document = json.loads(text)
            if not isinstance(document, dict) or document.get("format") != _FORMAT:
                raise ValueError(f"not a format-{_FORMAT} state file")
            return {key: Record.from_json(entry) for key, entry in document["instances"].items()}
        except (ValueError, TypeError, KeyError) as error:
            raise BadFileError(f"{self._state_path} is corrupt: {error}", "corrupt-state") from None

    @staticmethod
    def _records_json(snapshot: Snapshot) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "instances": {key: record.to_json() for key, record in snapshot.records.items()},
        }
