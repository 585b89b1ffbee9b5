"""The XML-RPC endpoint and HTTP handlers: a threaded server on loopback, with a gate that can hold replies.

Each request runs in its own daemon thread, so a long-poll or a slow operation does not block
other clients. The gate holds every request for a while (:meth:`ResponseGate.hang`) or until
released (:meth:`ResponseGate.pause`), so a client's socket timeout can be exercised, or has
connections closed unanswered for a while (:meth:`ResponseGate.refuse`), as a stalled xapi
does. Stopping the server drops the connections still open, as a dying xapi does.
"""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Callable
from typing import Any
from xmlrpc.server import SimpleXMLRPCRequestHandler, SimpleXMLRPCServer

from ._rrd_http import HttpReply

Dispatch = Callable[[str, tuple[Any, ...]], dict[str, Any]]
GetHandler = Callable[[str, str, str | None], HttpReply]
"""Answers a GET: (path, query string, ``Authorization`` header) -> reply."""

MAX_PAUSE = 600.0
"""The longest :meth:`ResponseGate.pause` holds requests if nothing releases them."""


class ResponseGate:
    """Holds incoming requests until a deadline passes or the gate is opened; or refuses them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._until = 0.0
        self._refuse_until = 0.0

    def refuse(self, seconds: float) -> None:
        """Close every connection, unanswered, for ``seconds`` from now."""
        with self._cond:
            self._refuse_until = time.monotonic() + max(0.0, seconds)

    @property
    def refusing(self) -> bool:
        """Whether connections are being closed unanswered."""
        return time.monotonic() < self._refuse_until

    def hang(self, seconds: float) -> None:
        """Hold every request, including ones arriving meanwhile, for ``seconds`` from now."""
        with self._cond:
            self._until = time.monotonic() + max(0.0, seconds)
            self._cond.notify_all()

    def pause(self) -> None:
        """Hold every request until :meth:`resume` (at most :data:`MAX_PAUSE` seconds)."""
        self.hang(MAX_PAUSE)

    def resume(self) -> None:
        """Let held and new requests through now."""
        with self._cond:
            self._until = 0.0
            self._cond.notify_all()

    def wait(self) -> None:
        """Block the calling request while the gate is closed."""
        with self._cond:
            while (remaining := self._until - time.monotonic()) > 0:
                self._cond.wait(remaining)


class _Handler(SimpleXMLRPCRequestHandler):
    rpc_paths = ("/", "/RPC2")
    server: XmlRpcServer

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches GET to
        """Serve xapi's HTTP handlers (``/rrd_updates``) after the gate, as XML-RPC calls are."""
        self.server.gate.wait()
        path, _, query = self.path.partition("?")
        reply = self.server.get_handler(path, query, self.headers.get("Authorization"))
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the test output quiet: no access log."""


class _Instance:
    """What the XML-RPC dispatcher calls for every method: the gate, then the API."""

    def __init__(self, dispatch: Dispatch, gate: ResponseGate) -> None:
        self._dispatch_fn = dispatch
        self._gate = gate

    def _dispatch(self, method: str, params: tuple[Any, ...]) -> dict[str, Any]:
        self._gate.wait()
        return self._dispatch_fn(method, params)


class XmlRpcServer(socketserver.ThreadingMixIn, SimpleXMLRPCServer):
    """The threaded XML-RPC server, tracking open connections so that stopping can drop them."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(
        self, address: tuple[str, int], dispatch: Dispatch, gate: ResponseGate, get_handler: GetHandler
    ) -> None:
        super().__init__(
            address, requestHandler=_Handler, logRequests=False, allow_none=False, encoding="utf-8"
        )
        self.register_instance(_Instance(dispatch, gate))
        self.gate = gate
        self.get_handler = get_handler
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse (close unanswered) every new connection while the gate refuses."""
        return not self.gate.refusing

    def process_request(self, request: Any, client_address: Any) -> None:
        """Remember the connection, then serve it in its own thread."""
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it."""
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Ignore a client that went away mid-reply (a timed-out or dropped connection)."""

    def drop_connections(self) -> None:
        """Reset every connection still open, so the clients on them see the server die."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                continue
