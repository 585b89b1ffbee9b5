"""Operations in flight, shared through a state file so that every process sees them.

A graceful shutdown or a soft reboot outlives the call that asks the guest:
the core waits for the guest, resends, and may force. While it does, another
process sharing the file must see the transition and be refused what the
operation table refuses, as another thread of the same driver would be. So
the fake writes such an operation into the file (``"operations"``) when it
first asks the guest, and removes it when the public call ends.

Each entry names its writer's process (pid and start time): an entry whose
process no longer runs (killed, say) is dropped by the next transaction of
any process, so a dead writer never blocks an instance for longer than that.
"""

from __future__ import annotations

import secrets
import threading
import time
from typing import Any

from powerdrivers import Operation
from powerdrivers_fake._processes import process_alive, this_process
from powerdrivers_fake._store import Document

KEY = "operations"


class SharedOperations:
    """One driver's part in the operations in flight that a state file shares."""

    def __init__(self) -> None:
        #: Names this driver's entries, so that it knows its own from others' (even in this process).
        self.owner = secrets.token_hex(8)
        #: Per thread, a stack of public calls (one per nesting level) and the entries each wrote.
        self._calls = threading.local()
        #: Every entry this driver has written and not yet removed.
        self._live: set[str] = set()
        #: Per instance id, an operation other drivers or processes have in flight (as of the last load).
        self._others: dict[str, Operation] = {}

    def begin_call(self) -> list[str]:
        """Start a public call whose guest requests are to be shared; return its list of entries."""
        stack: list[list[str]] = self._calls.__dict__.setdefault("stack", [])
        tokens: list[str] = []
        stack.append(tokens)
        return tokens

    def end_call(self, tokens: list[str]) -> None:
        """End the call :meth:`begin_call` returned ``tokens`` for; its entries are to go."""
        self._calls.stack.remove(tokens)
        self._live.difference_update(tokens)

    def share(self, document: Document, instance_id: str, operation: Operation) -> None:
        """Write ``operation`` on ``instance_id`` into ``document``, once per call of this thread."""
        stack: list[list[str]] = self._calls.__dict__.get("stack", [])
        if not stack:
            return  # not within a public call: nothing would remove the entry
        tokens = stack[-1]
        # A new list: a transaction's working document shares the loaded one's.
        entries: list[dict[str, Any]] = list(document.get(KEY, ()))
        if any(entry["token"] in tokens and entry["id"] == instance_id for entry in entries):
            return
        pid, started = this_process()
        token = secrets.token_hex(8)
        entries.append(
            {
                "id": instance_id,
                "operation": str(operation),
                "owner": self.owner,
                "token": token,
                "pid": pid,
                "started": started,
                "since": time.time(),
            }
        )
        document[KEY] = entries
        tokens.append(token)
        self._live.add(token)

    def release(self, document: Document, tokens: list[str]) -> None:
        """Remove the entries named by ``tokens`` from ``document``."""
        entries = document.get(KEY)
        if entries:
            _store(document, [entry for entry in entries if entry["token"] not in tokens])

    def loaded(self, document: Document) -> None:
        """Drop the entries of writers that are gone; note what others have in flight."""
        entries = document.get(KEY)
        if not entries:
            if self._others:
                self._others = {}
            return
        owner = self.owner
        kept = [
            entry
            for entry in entries
            if (
                entry["token"] in self._live
                if entry["owner"] == owner
                else process_alive(entry["pid"], entry["started"])
            )
        ]
        if len(kept) != len(entries):
            _store(document, kept)
        self._others = {
            entry["id"]: Operation(entry["operation"]) for entry in kept if entry["owner"] != owner
        }

    def in_flight(self, instance_id: str) -> Operation | None:
        """Return the operation another driver or process has in flight on the instance, if any."""
        return self._others.get(instance_id) if self._others else None


def _store(document: Document, entries: list[dict[str, Any]]) -> None:
    if entries:
        document[KEY] = entries
    else:
        document.pop(KEY, None)
