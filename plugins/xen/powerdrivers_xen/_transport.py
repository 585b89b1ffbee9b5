"""XML-RPC transports whose timeout bounds a whole call, and TLS verified unless opted out.

A socket timeout bounds each wait for data, not a call: a server that trickles a byte just
inside it would hold a call for ever. Here every call has a deadline (:class:`CallClock`), and
every socket operation of the call (connecting, the TLS handshake, each send and each read) may
wait only for what is left of it.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import time
import xmlrpc.client
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, SizedBuffer, WriteableBuffer


class CallClock:
    """The deadline of the call in progress on one transport (calls on one transport take turns)."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._deadline: float | None = None

    @contextmanager
    def bound(self) -> Iterator[None]:
        """Give everything sent and received in the ``with`` block one timeout, as a whole.

        Nested blocks share the outermost deadline: the SDK's own retries (a second login
        after an expired session) count against the call that made them.
        """
        if self._deadline is not None:
            yield
            return
        self._deadline = time.monotonic() + self.timeout_s
        try:
            yield
        finally:
            self._deadline = None

    def remaining(self) -> float:
        """Return the seconds left to the call; raise ``TimeoutError`` when none are."""
        if self._deadline is None:
            return self.timeout_s
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no complete answer within {self.timeout_s:g} s")
        return left


class _BoundedSocket(socket.socket):
    """A TCP socket whose every send and read waits only for what is left of the call."""

    clock: CallClock | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int = 0, flags: int = 0) -> int:
        """Read, for at most the time left."""
        _budget(self, self.clock)
        return super().recv_into(buffer, nbytes, flags)

    def sendall(self, data: ReadableBuffer, flags: int = 0) -> None:
        """Send everything, for at most the time left (a socket timeout bounds a whole sendall)."""
        _budget(self, self.clock)
        super().sendall(data, flags)


class _BoundedSSLSocket(ssl.SSLSocket):
    """A TLS socket whose every send and read waits only for what is left of the call."""

    clock: CallClock | None = None

    def recv_into(self, buffer: WriteableBuffer, nbytes: int | None = None, flags: int = 0) -> int:
        """Read, for at most the time left."""
        _budget(self, self.clock)
        return super().recv_into(buffer, nbytes, flags)

    def send(self, data: ReadableBuffer, flags: int = 0) -> int:
        """Send a part (``sendall`` sends in parts), for at most the time left."""
        _budget(self, self.clock)
        return super().send(data, flags)


def _budget(sock: socket.socket, clock: CallClock | None) -> None:
    if clock is not None:
        sock.settimeout(clock.remaining())


class _BoundedHTTPConnection(http.client.HTTPConnection):
    """Plain HTTP on a :class:`_BoundedSocket`."""

    def __init__(self, host: str, clock: CallClock) -> None:
        super().__init__(host)
        self.clock = clock

    def connect(self) -> None:
        """Connect within the time left, then bound every later send and read."""
        self.timeout = self.clock.remaining()
        super().connect()
        plain = self.sock
        bounded = _BoundedSocket(plain.family, plain.type, plain.proto, fileno=plain.detach())
        bounded.clock = self.clock
        self.sock = bounded


class _BoundedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS whose context makes :class:`_BoundedSSLSocket` sockets."""

    def __init__(self, host: str, clock: CallClock, context: ssl.SSLContext) -> None:
        super().__init__(host, context=context)
        self.clock = clock

    def connect(self) -> None:
        """Connect and shake hands within the time left, then bound every later send and read."""
        # The handshake is bounded as a whole by the socket's timeout when the wrap begins.
        self.timeout = self.clock.remaining()
        super().connect()
        assert isinstance(self.sock, _BoundedSSLSocket)
        self.sock.clock = self.clock


class _BoundedRequests(xmlrpc.client.Transport):
    """Bounds each XML-RPC request as a whole by the transport's ``clock``."""

    clock: CallClock

    def request(
        self,
        host: tuple[str, dict[str, str]] | str,
        handler: str,
        request_body: SizedBuffer,
        verbose: bool = False,
    ) -> tuple[Any, ...]:
        """Send one XML-RPC request, bounded as a whole (unless a wider bound is running)."""
        with self.clock.bound():
            return super().request(host, handler, request_body, verbose)


class TimeoutTransport(_BoundedRequests):
    """Plain-HTTP transport; each call must be complete within ``timeout_s``."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.clock = CallClock(timeout_s)

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPConnection:
        """Return the kept-alive connection to ``host``, or a new bounded one."""
        if self._connection[1] is not None and host == self._connection[0]:
            return self._connection[1]
        chost, self._extra_headers, _ = self.get_host_info(host)
        connection = _BoundedHTTPConnection(chost, self.clock)
        self._connection = host, connection
        return connection


class TimeoutSafeTransport(_BoundedRequests, xmlrpc.client.SafeTransport):
    """HTTPS transport bounded as :class:`TimeoutTransport`; certificates verified unless not ``verify``."""

    def __init__(self, timeout_s: float, verify: bool) -> None:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        context.sslsocket_class = _BoundedSSLSocket
        super().__init__(context=context)
        self.context = context
        self.clock = CallClock(timeout_s)
        self.verify = verify

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPSConnection:
        """Return the kept-alive connection to ``host``, or a new bounded one."""
        if self._connection[1] is not None and host == self._connection[0]:
            return self._connection[1]  # type: ignore[return-value]
        chost, self._extra_headers, _ = self.get_host_info(host)
        connection = _BoundedHTTPSConnection(chost, self.clock, self.context)
        self._connection = host, connection
        return connection


def transport_for(url: str, timeout_s: float, verify: bool) -> TimeoutTransport | TimeoutSafeTransport:
    """Return the transport for ``url``'s scheme."""
    if url.startswith("https://"):
        return TimeoutSafeTransport(timeout_s, verify)
    return TimeoutTransport(timeout_s)
