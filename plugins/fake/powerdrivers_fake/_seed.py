"""The instances a new fake hypervisor starts with."""

from __future__ import annotations

import time
import uuid
from typing import Any

from powerdrivers_fake._native import FakeNativeState
from powerdrivers_fake._store import Document, empty_document

_DEMO = (
    # name, state, reason, guest, vcpus, memory
    ("web-1", FakeNativeState.RUNNING, "booted", "cooperative", 2, 2048),
    ("web-2", FakeNativeState.RUNNING, "booted", "cooperative", 2, 2048),
    ("legacy-db", FakeNativeState.RUNNING, "booted", "uncooperative", 4, 8192),
    ("cache-1", FakeNativeState.PAUSED, "user", "cooperative", 1, 1024),
    ("batch-7", FakeNativeState.SHUTOFF, "shutdown", "cooperative", 1, 512),
)


def instance_id(name: str) -> str:
    """Return the stable id a seeded instance called ``name`` gets."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"powerdrivers-fake:{name}"))


def new_record(
    name: str,
    state: str,
    reason: str,
    *,
    guest: str = "cooperative",
    vcpus: int = 1,
    memory_mib: int = 512,
    record_id: str | None = None,
) -> dict[str, Any]:
    """Return a fresh instance record."""
    return {
        "id": record_id or str(uuid.uuid4()),
        "name": name,
        "state": str(state),
        "reason": reason,
        "guest": guest,
        "vcpus": vcpus,
        "memory_mib": memory_mib,
        "pending": None,
        "crash_at": None,
        "created_at": time.time(),
    }


def seed_document(kind: str, extra: int) -> Document:
    """Return a new document: the demo instances (``kind`` "demo") or none, plus ``extra`` generated ones."""
    document = empty_document()
    records = []
    if kind == "demo":
        records = [
            new_record(
                name, state, reason, guest=guest, vcpus=vcpus, memory_mib=memory, record_id=instance_id(name)
            )
            for name, state, reason, guest, vcpus, memory in _DEMO
        ]
    for number in range(extra):
        name = f"vm-{number:05d}"
        running = number % 2 == 0
        records.append(
            new_record(
                name,
                FakeNativeState.RUNNING if running else FakeNativeState.SHUTOFF,
                "booted" if running else "shutdown",
                record_id=instance_id(name),
            )
        )
    document["instances"] = {record["id"]: record for record in records}
    return document
