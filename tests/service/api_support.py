"""The API tests' shared parts: the app over a real fleet, in-process or on a real uvicorn.

``TestClient`` drives the app in-process for plain requests; a stream (SSE) and the load test
need a real server, so ``serve`` runs uvicorn on a free loopback port in a thread and stops it
the way ``powerdrivers serve`` does (streams closed, then uvicorn's exit).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from powerdrivers.service._sse import close_streams

#: Seconds a test waits for something the keeper does in the background.
WAIT_S = 15.0


def bearer(token: str) -> dict[str, str]:
    """Return the header authenticating with ``token``."""
    return {"Authorization": f"Bearer {token}"}


def api_endpoints(app: FastAPI) -> list[tuple[str, str]]:
    """Return (method, path template) of every JSON endpoint (``/v1``, ``/metrics``, ``/healthz``).

    Read from the app's OpenAPI document, which lists every route the app serves and documents.
    """
    paths: dict[str, dict[str, Any]] = app.openapi()["paths"]
    return sorted(
        (method.upper(), path)
        for path, operations in paths.items()
        if path.startswith("/v1/") or path in ("/metrics", "/healthz")
        for method in operations
    )


def concrete_path(path: str, instance_id: str = "no-such-instance", action_id: int = 999_999) -> str:
    """Fill a route template's parameters with the given ids."""
    return path.replace("{instance_id}", instance_id).replace("{action_id}", str(action_id))


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 free now (for a server the test starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(condition: Any, what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``condition()`` until it returns something true, and return that; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)


@contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on uvicorn on a free loopback port; yield its base URL; stop it cleanly."""
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        close_streams(app)
        server.should_exit = True
        thread.join(WAIT_S)
        assert not thread.is_alive(), "uvicorn did not stop"


def first_instance(client: httpx.Client | Any, headers: dict[str, str], **filters: str) -> dict[str, Any]:
    """Return the first instance the API lists (matching ``filters``)."""
    answer = client.get("/v1/instances", headers=headers, params=filters)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    assert items, f"no instance matches {filters}"
    return items[0]
