"""Checking a state document read from a file, whole, before the fake uses any of it.

A file is shared with other processes and editable by hand, so anything may
be in it. Every value the driver later relies on is checked here, once per
load, so that a corrupt file is one clear error and never a ``KeyError``
deep inside an operation, nor a ``vcpus`` count that takes forever to
sample. This runs on every file-backed transaction: plain type and set
membership tests, no copies.
"""

from __future__ import annotations

import math
from typing import Any, Final

from powerdrivers import EventKind, Operation

FORMAT: Final = 1
#: The most events a state file keeps (older ones are trimmed on every write).
KEEP_EVENTS: Final = 500
#: The most VCPUs and memory an instance may have: the fake samples each VCPU.
MAX_VCPUS: Final = 4096
MAX_MEMORY_MIB: Final = 16 * 1024 * 1024
#: The longest name or id a file may hold.
_MAX_TEXT: Final = 255
#: 9999-12-31T23:59:59Z, the last time a ``datetime`` can show.
_LAST_TIME: Final = 253_402_300_799

_GUESTS: Final = frozenset({"cooperative", "uncooperative"})
_ACTIONS: Final = frozenset({"shutdown", "reboot"})
_KINDS: Final = frozenset(EventKind)
_CAUSES: Final = frozenset(Operation)
_RECORD_KEYS: Final = (
    "id",
    "name",
    "state",
    "reason",
    "guest",
    "vcpus",
    "memory_mib",
    "pending",
    "crash_at",
)
_EVENT_KEYS: Final = ("seq", "time", "kind", "id", "name", "state", "reason", "cause")
_OPERATION_KEYS: Final = ("id", "operation", "owner", "token", "pid", "started", "since")
#: The most operations a state file may have in flight (as many as processes share it, in practice).
MAX_OPERATIONS: Final = 10_000


def document_problem(document: object) -> str | None:
    """Say what is wrong with a document loaded from a state file, or return None if nothing is."""
    if type(document) is not dict or type(document.get("format")) is not int or document["format"] != FORMAT:
        return f"is not a format-{FORMAT} state file"
    if not _whole(document.get("seq"), 0, 2**53):
        return "lacks its sequence number"
    seq: int = document["seq"]
    instances = document.get("instances")
    if type(instances) is not dict:
        return "lacks its instances"
    names: set[str] = set()
    for key, record in instances.items():
        problem = _record_problem(key, record)
        if problem is None and record["name"] in names:
            problem = f"shares its name {record['name']!r} with another instance"
        if problem is not None:
            return f"has a malformed instance record {_shown(key)}: {problem}"
        names.add(record["name"])
    events = document.get("events")
    if type(events) is not list:
        return "lacks its event log"
    if len(events) > KEEP_EVENTS:
        return f"has {len(events)} events in its log, more than the {KEEP_EVENTS} kept"
    previous = 0
    for index, event in enumerate(events):
        problem = _event_problem(event, previous, seq)
        if problem is not None:
            return f"has a malformed event (number {index + 1} of its log): {problem}"
        previous = event["seq"]
    operations = document.get("operations", [])
    if type(operations) is not list or len(operations) > MAX_OPERATIONS:
        return f"has no list of at most {MAX_OPERATIONS} operations in flight"
    for operation in operations:
        problem = _operation_problem(operation)
        if problem is not None:
            return f"has a malformed operation in flight {_shown(operation)}: {problem}"
    return None


def _operation_problem(entry: object) -> str | None:
    if type(entry) is not dict:
        return "not an object"
    missing = [field for field in _OPERATION_KEYS if field not in entry]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not (_text(entry["id"]) and _text(entry["owner"]) and _text(entry["token"])):
        return "its instance id, owner and token must be text"
    if not _member(entry["operation"], _CAUSES):
        return "operation is not an operation"
    if not _whole(entry["pid"], 1, 2**31 - 1):
        return "pid must be a process id"
    if entry["started"] is not None and not _whole(entry["started"], 0, 2**63 - 1):
        return "started must be null or a process start time"
    if not _time(entry["since"]):
        return "since must be a time"
    return None


def _record_problem(key: str, record: object) -> str | None:
    if type(record) is not dict:
        return "not an object"
    missing = [field for field in _RECORD_KEYS if field not in record]
    if missing:
        return f"lacks {', '.join(missing)}"
    if record["id"] != key:
        return "its id is not its key"
    if not _text(record["name"]):
        return f"name must be text of 1 to {_MAX_TEXT} characters, not {_shown(record['name'])}"
    # Any native state is allowed: one the fake does not know reads as unknown, as a
    # real driver's would, which is how tests put an instance in that state.
    if not _text(record["state"]) or not _text(record["reason"]):
        return f"state and reason must be text of 1 to {_MAX_TEXT} characters"
    if not _member(record["guest"], _GUESTS):
        return f"guest must be cooperative or uncooperative, not {_shown(record['guest'])}"
    if not _whole(record["vcpus"], 1, MAX_VCPUS):
        return f"vcpus must be a whole number from 1 to {MAX_VCPUS}, not {_shown(record['vcpus'])}"
    if not _whole(record["memory_mib"], 1, MAX_MEMORY_MIB):
        shown = _shown(record["memory_mib"])
        return f"memory_mib must be a whole number from 1 to {MAX_MEMORY_MIB}, not {shown}"
    pending = record["pending"]
    if pending is not None and (
        type(pending) is not dict
        or pending.keys() != {"action", "due", "cause"}
        or not _member(pending["action"], _ACTIONS)
        or not _time(pending["due"])
        or not _cause(pending["cause"])
    ):
        return f"pending must be null or a planned shutdown or reboot, not {_shown(pending)}"
    if record["crash_at"] is not None and not _time(record["crash_at"]):
        return f"crash_at must be null or a time, not {_shown(record['crash_at'])}"
    if "created_at" in record and not _time(record["created_at"]):
        return f"created_at must be a time, not {_shown(record['created_at'])}"
    return None


def _event_problem(event: object, previous: int, last: int) -> str | None:
    if type(event) is not dict:
        return "not an object"
    missing = [field for field in _EVENT_KEYS if field not in event]
    if missing:
        return f"lacks {', '.join(missing)}"
    if not _whole(event["seq"], previous + 1, last):
        return f"sequence number {_shown(event['seq'])} is not after {previous} and at most {last}"
    if not _time(event["time"]):
        return f"time must be a time, not {_shown(event['time'])}"
    if not _member(event["kind"], _KINDS):
        return f"kind {_shown(event['kind'])} is not an event kind"
    if not _text(event["id"]) or not _text(event["name"]):
        return "its instance id and name must be text"
    if not _text(event["state"]) or not _text(event["reason"]):
        return f"state and reason must be text of 1 to {_MAX_TEXT} characters"
    if not _cause(event["cause"]):
        return f"cause must be null or an operation, not {_shown(event['cause'])}"
    return None


def _whole(value: object, low: int, high: int) -> bool:
    return type(value) is int and low <= value <= high


def _time(value: object) -> bool:
    # Seconds since the epoch, up to the last one datetime can show. JSON may also
    # spell NaN, Infinity and integers too large for a float, which no time is.
    if type(value) is int:
        return 0 <= value <= _LAST_TIME
    return type(value) is float and math.isfinite(value) and 0 <= value <= _LAST_TIME


def _member(value: object, allowed: frozenset[str]) -> bool:
    # The type first: a list or an object from the file is not hashable.
    return type(value) is str and value in allowed


def _text(value: object) -> bool:
    return type(value) is str and 0 < len(value) <= _MAX_TEXT


def _cause(value: object) -> bool:
    return value is None or (type(value) is str and value in _CAUSES)


def _shown(value: Any) -> str:
    """Show a value in a message: short and on one line."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
