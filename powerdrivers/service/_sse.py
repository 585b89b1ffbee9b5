"""``GET /v1/events``: the fleet's events as server-sent events, resumable by record id.

A record event's SSE ``id`` is its history record's id, so a client that reconnects with
``Last-Event-ID`` gets every record it missed (read back from the store) before the live ones;
instance and host events carry no id. A comment line every ``HEARTBEAT`` seconds keeps proxies
from closing a quiet stream. A stream ends when the client goes, when it falls a whole queue
behind (it reconnects and resumes) and when the server shuts down (``close_streams``).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final

from fastapi import APIRouter, Header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import StreamingResponse

from powerdrivers.keeper import HistoryRecord
from powerdrivers.service._api import MAX_ID, Reader, ServiceFleet, fleet_of
from powerdrivers.service._bus import EventSubscription, ServiceEvent, SubscriptionError
from powerdrivers.service._http_errors import ApiError
from powerdrivers.service._schemas import ERROR_RESPONSES

#: Seconds between heartbeat comments on a quiet stream.
HEARTBEAT: Final = 15.0
#: The events a stream may have waiting before it is dropped (and resumes by its last id).
QUEUE_SIZE: Final = 1000
#: Milliseconds a browser waits before reconnecting a stream that ended.
RETRY_MS: Final = 1000

router = APIRouter(prefix="/v1", responses=ERROR_RESPONSES)


class _Streams:
    """The open streams of one app, so a shutting-down server can end them all."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: set[EventSubscription] = set()
        self.closing = False


def _streams(request: Request) -> _Streams:
    state = request.app.state
    streams: _Streams | None = getattr(state, "sse_streams", None)
    if streams is None:
        streams = state.sse_streams = _Streams()
    return streams


def close_streams(app: Any) -> None:
    """End every open event stream of ``app`` and refuse new ones (call when the server stops).

    Thread-safe and idempotent: a signal handler or another thread may call it.
    """
    streams: _Streams | None = getattr(app.state, "sse_streams", None)
    if streams is None:
        streams = app.state.sse_streams = _Streams()
    with streams.lock:
        streams.closing = True
        subscriptions = list(streams.open)
    for subscription in subscriptions:
        subscription.close()


def format_event(event: ServiceEvent) -> str:
    """Return ``event`` in the SSE wire format (``id:`` for records, ``event:``, ``data:``)."""
    data = json.dumps(event.data, separators=(",", ":"))
    head = f"id: {event.id}\n" if event.id is not None else ""
    return f"{head}event: {event.type}\ndata: {data}\n\n"


def _record_event(record: HistoryRecord) -> ServiceEvent:
    return ServiceEvent(record.id, "record", record.to_dict())


def _last_event_id(text: str | None) -> int | None:
    if text is None or not text.strip():
        return None
    value = text.strip()
    if not value.isdigit() or len(value) > 19 or int(value) > MAX_ID:
        raise ApiError(422, "Last-Event-ID must be a record id (a whole number)", field="Last-Event-ID")
    return int(value)


@router.get(
    "/events",
    tags=["events"],
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "The event stream."}},
)
async def events(
    request: Request,
    principal: Reader,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=40)] = None,
) -> StreamingResponse:
    """Live events: ``record`` (id = record id), ``instance`` and ``host``, JSON in ``data``.

    With ``Last-Event-ID``, first every record after it (from the store), then the live events.
    """
    after = _last_event_id(last_event_id)
    fleet = fleet_of(request)
    streams = _streams(request)
    with streams.lock:
        if streams.closing:
            raise ApiError(503, "the service is shutting down", code="shutting_down")
        # Subscribe before reading back, so nothing published in between is missed.
        subscription = fleet.bus.subscribe(maxsize=QUEUE_SIZE)
        streams.open.add(subscription)
    return StreamingResponse(
        _stream(fleet, subscription, streams, after),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _stream(
    fleet: ServiceFleet, subscription: EventSubscription, streams: _Streams, after: int | None
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RETRY_MS}\n\n"
        last_record = 0
        if after is not None:
            # The backlog is read in batches until it is exhausted: a long-gone client gets it all.
            last_record = after
            while batch := await run_in_threadpool(fleet.records_since, last_record):
                reached = last_record
                for record in batch:
                    if record.id > last_record:
                        last_record = record.id
                        yield format_event(_record_event(record))
                if last_record == reached:
                    break
        while True:
            try:
                event = await asyncio.wait_for(subscription.get(), timeout=HEARTBEAT)
            except TimeoutError:
                yield f": heartbeat {int(time.time())}\n\n"
                continue
            except SubscriptionError:
                # Closed (shutdown) or overflowed: the client reconnects with its last id.
                return
            if event.type == "record" and event.id is not None:
                if event.id <= last_record:
                    continue  # already sent from the backlog
                last_record = event.id
            yield format_event(event)
    finally:
        _forget(streams, subscription)


def _forget(streams: _Streams, subscription: EventSubscription) -> None:
    with streams.lock:
        streams.open.discard(subscription)
    subscription.close()
