"""xapi's wire conventions: opaque references, uuids, int64s as strings and XML-RPC dates."""

from __future__ import annotations

import time
import uuid
import xmlrpc.client

NULL_REF = "OpaqueRef:NULL"
"""The null reference xapi sends where a reference field points at nothing (XML-RPC has no nil)."""

_DATE_FORMAT = "%Y%m%dT%H:%M:%SZ"


def new_ref() -> str:
    """Mint a fresh opaque reference, as xapi does: ``OpaqueRef:<uuid>``."""
    return f"OpaqueRef:{uuid.uuid4()}"


def new_uuid() -> str:
    """Make a fresh random uuid in its canonical string form."""
    return str(uuid.uuid4())


def int64(value: int) -> str:
    """Encode an int64 field as xapi sends it over XML-RPC: a decimal string."""
    return str(value)


def timestamp(seconds: float) -> xmlrpc.client.DateTime:
    """Encode a ``dateTime.iso8601`` value in xapi's UTC format (``20240101T12:00:00Z``)."""
    return xmlrpc.client.DateTime(time.strftime(_DATE_FORMAT, time.gmtime(seconds)))
