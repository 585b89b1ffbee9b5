"""GET /v1/events on a real uvicorn: live events, resuming with Last-Event-ID, heartbeats and endings."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from api_support import WAIT_S, bearer, serve
from fastapi import FastAPI

from powerdrivers.service import _sse
from powerdrivers.service._app import create_app
from powerdrivers.service._bus import ServiceEvent
from powerdrivers.service._config import ServiceConfig
from powerdrivers.service._fleet import Fleet


@dataclass
class Received:
    """One server-sent event as a client parses it (or a comment line)."""

    type: str
    id: str | None = None
    data: Any = None
    comment: str | None = None


class Stream:
    """A client of /v1/events reading in its own thread until the server ends the stream."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[Received | None] = queue.Queue()
        self.status: int | None = None
        self.ended = threading.Event()
        self._opened = threading.Event()
        self._thread = threading.Thread(target=self._read, args=(url, headers), daemon=True)
        self._thread.start()
        assert self._opened.wait(WAIT_S), "the stream did not open"

    def _read(self, url: str, headers: dict[str, str]) -> None:
        try:
            with (
                httpx.Client(timeout=httpx.Timeout(WAIT_S, read=60.0)) as client,
                client.stream("GET", url, headers=headers) as answer,
            ):
                self.status = answer.status_code
                self._opened.set()
                fields: dict[str, str] = {}
                for line in answer.iter_lines():
                    if line.startswith(":"):
                        self.events.put(Received("comment", comment=line[1:].strip()))
                    elif line:
                        name, _, value = line.partition(":")
                        fields[name] = value.removeprefix(" ")
                    elif fields:
                        if "event" in fields:
                            self.events.put(
                                Received(
                                    fields["event"], fields.get("id"), json.loads(fields.get("data", "null"))
                                )
                            )
                        fields = {}
        finally:
            self._opened.set()
            self.ended.set()
            self.events.put(None)

    def next_matching(self, matches: Callable[[Received], bool], what: str) -> Received:
        deadline = time.monotonic() + WAIT_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"timed out waiting for {what}")
            try:
                event = self.events.get(timeout=remaining)
            except queue.Empty:
                continue
            if event is None:
                raise AssertionError(f"the stream ended before {what}")
            if matches(event):
                return event

    def drain(self) -> list[Received]:
        assert self.ended.wait(WAIT_S), "the stream did not end"
        self._thread.join(WAIT_S)
        found: list[Received] = []
        while (event := self.events.get_nowait()) is not None:
            found.append(event)
        return found


@pytest.fixture
def base_url(app: FastAPI) -> Iterator[str]:
    with serve(app) as url:
        yield url


def some_instance(base_url: str, headers: dict[str, str]) -> str:
    items = httpx.get(f"{base_url}/v1/instances", headers=headers, params={"power_state": "shutoff"}).json()[
        "items"
    ]
    found: str = items[0]["id"]
    return found


def set_policy(base_url: str, headers: dict[str, str], instance_id: str, policy: str) -> None:
    answer = httpx.put(
        f"{base_url}/v1/instances/{instance_id}/policy", headers=headers, json={"policy": policy}
    )
    assert answer.status_code == 200, answer.text


def is_policy_record(instance_id: str) -> Callable[[Received], bool]:
    def matches(event: Received) -> bool:
        return (
            event.type == "record"
            and event.data["instance_id"] == instance_id
            and event.data["kind"] == "policy"
        )

    return matches


def test_a_change_made_through_the_api_is_streamed(base_url: str, operator: dict[str, str]) -> None:
    stream = Stream(f"{base_url}/v1/events", operator)
    assert stream.status == 200
    instance_id = some_instance(base_url, operator)
    set_policy(base_url, operator, instance_id, "halted")

    record = stream.next_matching(is_policy_record(instance_id), "the policy record")
    assert record.id is not None and int(record.id) == record.data["id"]
    assert record.data["requested_by"] == "operator"
    view = stream.next_matching(
        lambda event: (
            event.type == "instance" and event.data["id"] == instance_id and event.data["policy"] == "halted"
        ),
        "the instance's new view",
    )
    assert view.id is None


def test_a_client_resumes_with_last_event_id(base_url: str, operator: dict[str, str]) -> None:
    instance_id = some_instance(base_url, operator)
    first = Stream(f"{base_url}/v1/events", operator)
    set_policy(base_url, operator, instance_id, "halted")
    seen = first.next_matching(is_policy_record(instance_id), "the first policy record")

    # Changes made while no stream is open reach the client that comes back with its last id.
    set_policy(base_url, operator, instance_id, "manual")
    set_policy(base_url, operator, instance_id, "halted")
    resumed = Stream(f"{base_url}/v1/events", {**operator, "Last-Event-ID": str(seen.id)})
    replayed = [
        resumed.next_matching(is_policy_record(instance_id), f"policy record {number}") for number in (1, 2)
    ]
    ids = [int(event.id or 0) for event in replayed]
    assert ids == sorted(ids)
    assert ids[0] > int(seen.id or 0)
    assert len(set(ids)) == 2


def test_a_quiet_stream_gets_heartbeats(
    base_url: str, operator: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_sse, "HEARTBEAT", 0.2)
    stream = Stream(f"{base_url}/v1/events", operator)
    comment = stream.next_matching(lambda event: event.type == "comment", "a heartbeat")
    assert comment.comment is not None and comment.comment.startswith("heartbeat")


def test_a_stream_ends_when_the_server_stops(app: FastAPI, operator: dict[str, str]) -> None:
    began = time.monotonic()
    with serve(app) as url:
        streams = [Stream(f"{url}/v1/events", operator) for _ in range(3)]
    assert all(stream.ended.wait(WAIT_S) for stream in streams)
    assert time.monotonic() - began < WAIT_S


def test_a_client_that_falls_behind_is_dropped_and_may_resume(
    base_url: str, fleet: Fleet, operator: dict[str, str]
) -> None:
    host, port = base_url.removeprefix("http://").split(":")
    request = (
        f"GET /v1/events HTTP/1.1\r\nHost: {host}\r\nAuthorization: {operator['Authorization']}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=WAIT_S) as reader:
        reader.sendall(request)
        assert reader.recv(12).startswith(b"HTTP/1.1 200")
        # The client reads nothing while many large events arrive: its queue overflows.
        padding = "x" * 20_000
        published = 3 * _sse.QUEUE_SIZE
        for number in range(published):
            fleet.bus.publish(ServiceEvent(None, "host", {"name": f"flood-{number}", "padding": padding}))
        received = bytearray()
        while chunk := reader.recv(1 << 20):
            received += chunk
    # The server ended the stream (the last chunk came) before sending everything; what it drops
    # (maybe all of it, when the queue overflowed before the stream sent a thing) is in the store.
    assert received.endswith(b"\r\n0\r\n\r\n")
    assert received.count(b"event: host") < published
    # The service still streams to a new client.
    again = Stream(f"{base_url}/v1/events", operator)
    assert again.status == 200


def test_every_process_streams_every_host_on_postgresql(
    postgres_url: str,
    service_config_factory: Callable[..., ServiceConfig],
    service_tokens: dict[str, str],
) -> None:
    operator = bearer(service_tokens["operator"])
    config = service_config_factory(hosts=2, store=postgres_url)
    # The first fleet owns both hosts; the second owns none and serves the API all the same.
    with Fleet(config) as owner, Fleet(config) as other:
        assert sorted(owner.owned_hosts()) == ["host-1", "host-2"]
        assert other.owned_hosts() == []
        with serve(create_app(owner)) as owner_url, serve(create_app(other)) as other_url:
            watching_owner = Stream(f"{owner_url}/v1/events", operator)
            watching_other = Stream(f"{other_url}/v1/events", operator)
            instance_id = some_instance(other_url, operator)
            # Asked of the process that does not own the host: the owner carries it out.
            answer = httpx.post(
                f"{other_url}/v1/instances/{instance_id}/actions",
                headers=operator,
                json={"operation": "start"},
            )
            assert answer.status_code == 202, answer.text
            for stream in (watching_owner, watching_other):
                ended = stream.next_matching(
                    lambda event: (
                        event.type == "record"
                        and event.data["instance_id"] == instance_id
                        and event.data["kind"] == "action"
                    ),
                    "the action's record",
                )
                assert ended.data["operation"] == "start"
                assert ended.data["requested_by"] == "operator"
            action = httpx.get(f"{owner_url}/v1/actions/{answer.json()['id']}", headers=operator).json()
            assert action["status"] == "done"
