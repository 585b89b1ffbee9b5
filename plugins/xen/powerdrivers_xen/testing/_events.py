"""event.from: the long-poll that reports each object changed since a token.

Semantics follow xapi's ``Xapi_event.from``: a token is two zero-padded generation counts
joined by a comma; the empty token means generation zero, so the first call returns every
current object of the subscribed classes as an ``add`` event (the way a client loads its
cache). Later calls return one coalesced event per object changed since the token (``add``,
``mod`` with the current record as ``snapshot``, or ``del`` without one; ``id`` is the
generation of the change, ``timestamp`` is ``"0.0"`` as in xapi's event.from), or block until
something changes or ``timeout`` seconds pass, then return no events and a fresh token.
Classes are lowercase class names (``vm``, ``vm_metrics``, ``task``, ``host``, ``pool``),
``*`` for all, or ``class/ref`` for one object. A session that expires or logs out while a
call waits makes that call fail with SESSION_INVALID.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ._database import TABLES, Database
from ._errors import EVENT_FROM_TOKEN_PARSE_FAILURE, SESSION_INVALID, XapiError
from ._sessions import SessionStore

MAX_TIMEOUT = 600.0
"""The longest one event.from call waits, whatever timeout it asks for."""


def format_token(generation: int) -> str:
    """Make the token for a generation, in xapi's form (two 20-digit counts: database, messages)."""
    return f"{generation:020d},{0:020d}"


def parse_token(token: str) -> int:
    """Read the generation a token stands for; EVENT_FROM_TOKEN_PARSE_FAILURE [token] if malformed."""
    if token == "":
        return 0
    parts = token.split(",")
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise XapiError(EVENT_FROM_TOKEN_PARSE_FAILURE, token)
    return int(parts[0])


@dataclass(frozen=True)
class Subscription:
    """One entry of event.from's ``classes``: all objects, one class, or one object."""

    cls: str | None
    ref: str | None

    @classmethod
    def parse(cls, text: str) -> Subscription:
        """Read ``*``, ``class`` or ``class/ref``; class names compare case-insensitively."""
        if text == "*":
            return cls(None, None)
        name, _, ref = text.partition("/")
        return cls(name.lower(), ref or None)

    def matches(self, table: str, ref: str) -> bool:
        """Whether a change to ``ref`` in ``table`` is one this subscription asks for."""
        if self.cls is None:
            return True
        return self.cls == table.lower() and (self.ref is None or self.ref == ref)


class EventService:
    """Answers event.from calls from the database's change stamps."""

    def __init__(self, db: Database, sessions: SessionStore, closing: threading.Event) -> None:
        self._db = db
        self._sessions = sessions
        self._closing = closing

    def event_from(self, session: str, classes: list[str], token: str, timeout: float) -> dict[str, Any]:
        """One event.from call: events since ``token``, waiting up to ``timeout`` seconds for some."""
        since = parse_token(token)
        subscriptions = [Subscription.parse(text) for text in classes]
        tables = [t for t in TABLES if any(s.cls is None or s.cls == t.lower() for s in subscriptions)]
        deadline = time.monotonic() + max(0.0, min(float(timeout), MAX_TIMEOUT))
        cond = self._db.cond
        with cond:
            while True:
                if not self._sessions.is_valid(session):
                    raise XapiError(SESSION_INVALID, session)
                changes = [
                    change
                    for change in self._db.changes_since(since, tables)
                    if any(s.matches(change.table, change.ref) for s in subscriptions)
                ]
                remaining = deadline - time.monotonic()
                if changes or remaining <= 0 or self._closing.is_set():
                    break
                cond.wait(remaining)
            generation = self._db.generation
            counts = self._db.counts()
        events: list[dict[str, Any]] = []
        for change in changes:
            event: dict[str, Any] = {
                "id": str(change.generation),
                "timestamp": "0.0",  # what xapi's event.from sends: use "id" and the token to order
                "class": change.table.lower(),
                "operation": change.operation,
                "ref": change.ref,
            }
            if change.snapshot is not None:
                event["snapshot"] = change.snapshot
            events.append(event)
        return {"events": events, "valid_ref_counts": counts, "token": format_token(generation)}
