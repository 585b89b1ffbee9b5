"""The object store: xapi's tables, each change stamped with the generation that event.from reads.

Like xapi's database, every insert, update and delete bumps one global generation count; a row
remembers the generation it was created and last modified at, and a deleted row leaves a
tombstone, so "what changed since generation N" can be answered as add, mod and del events.
All access goes through :attr:`Database.cond`, a re-entrant condition that is notified on every
change: the long-polls and the operations waiting on the guest sleep on it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

Record = dict[str, Any]
"""An object's fields as they travel on the wire."""

Renderer = Callable[[str, Record], Record]
"""Fills the computed fields of a copied record (its reference, the copy) before it is handed out."""

TABLES = ("VM", "VM_metrics", "task", "host", "pool")
"""The classes the simulator stores, spelled as xapi spells them in method names."""

MAX_TOMBSTONES = 10_000
"""Deleted rows remembered per table for del events; older ones are forgotten, as xapi's GC does."""


@dataclass
class _Row:
    record: Record
    created: int
    modified: int


@dataclass(frozen=True)
class Change:
    """One object's net change since a generation: what event.from reports for it."""

    table: str
    ref: str
    operation: str
    generation: int
    snapshot: Record | None


class Database:
    """The tables, their generation stamps and the condition every change notifies."""

    def __init__(self) -> None:
        self.cond = threading.Condition(threading.RLock())
        self._generation = 0
        self._rows: dict[str, dict[str, _Row]] = {table: {} for table in TABLES}
        self._tombstones: dict[str, dict[str, tuple[int, int]]] = {table: {} for table in TABLES}
        self._renderers: dict[str, Renderer] = {}

    @property
    def generation(self) -> int:
        """The generation of the latest change."""
        with self.cond:
            return self._generation

    def set_renderer(self, table: str, renderer: Renderer) -> None:
        """Compute some of ``table``'s fields when its records are read (live statistics)."""
        self._renderers[table] = renderer

    def notify(self) -> None:
        """Wake every waiter so it re-checks what it waits for (sessions, cancellation, shutdown)."""
        with self.cond:
            self.cond.notify_all()

    def _bump(self) -> int:
        self._generation += 1
        self.cond.notify_all()
        return self._generation

    def insert(self, table: str, ref: str, record: Record) -> None:
        """Add an object."""
        with self.cond:
            generation = self._bump()
            self._rows[table][ref] = _Row(copy.deepcopy(record), generation, generation)

    def update(self, table: str, ref: str, changes: Record) -> None:
        """Change some fields of an existing object; a change that changes nothing is no event."""
        with self.cond:
            row = self._rows[table][ref]
            if all(key in row.record and row.record[key] == value for key, value in changes.items()):
                return
            row.record.update(copy.deepcopy(changes))
            row.modified = self._bump()

    def delete(self, table: str, ref: str) -> None:
        """Remove an object, leaving a tombstone for del events."""
        with self.cond:
            row = self._rows[table].pop(ref, None)
            if row is None:
                return
            tombstones = self._tombstones[table]
            tombstones[ref] = (row.created, self._bump())
            while len(tombstones) > MAX_TOMBSTONES:
                del tombstones[next(iter(tombstones))]

    def exists(self, table: str, ref: str) -> bool:
        """Whether ``ref`` names a live object of ``table``."""
        with self.cond:
            return ref in self._rows[table]

    def raw(self, table: str, ref: str) -> Record | None:
        """Return the live record itself, for reading under :attr:`cond`; never mutate it directly."""
        with self.cond:
            row = self._rows[table].get(ref)
            return None if row is None else row.record

    def get(self, table: str, ref: str) -> Record | None:
        """Return a rendered copy of an object's record, or None when there is no such object."""
        with self.cond:
            row = self._rows[table].get(ref)
            return None if row is None else self._render(table, ref, row.record)

    def _render(self, table: str, ref: str, record: Record) -> Record:
        snapshot = copy.deepcopy(record)
        renderer = self._renderers.get(table)
        return snapshot if renderer is None else renderer(ref, snapshot)

    def refs(self, table: str) -> list[str]:
        """List the references of every object of ``table``, oldest first."""
        with self.cond:
            return list(self._rows[table])

    def find(self, table: str, field: str, value: object) -> list[str]:
        """List the references of the objects whose ``field`` equals ``value``."""
        with self.cond:
            return [ref for ref, row in self._rows[table].items() if row.record.get(field) == value]

    def counts(self) -> dict[str, int]:
        """How many objects each table holds, keyed by the lowercase class name."""
        with self.cond:
            return {table.lower(): len(rows) for table, rows in self._rows.items()}

    def changes_since(self, generation: int, tables: Iterable[str]) -> list[Change]:
        """Each object of ``tables`` changed after ``generation``, coalesced to one change, oldest first."""
        changes: list[Change] = []
        with self.cond:
            for table in tables:
                for ref, row in self._rows[table].items():
                    if row.created > generation:
                        operation, stamp = "add", row.created
                    elif row.modified > generation:
                        operation, stamp = "mod", row.modified
                    else:
                        continue
                    snapshot = self._render(table, ref, row.record)
                    changes.append(Change(table, ref, operation, stamp, snapshot))
                for ref, (created, deleted) in self._tombstones[table].items():
                    if created <= generation < deleted:
                        changes.append(Change(table, ref, "del", deleted, None))
        changes.sort(key=lambda change: change.generation)
        return changes
