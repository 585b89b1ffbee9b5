"""XML-RPC transports with a timeout on every call, and TLS verified unless opted out."""

from __future__ import annotations

import http.client
import ssl
import xmlrpc.client


class TimeoutTransport(xmlrpc.client.Transport):
    """Plain-HTTP transport whose connections time out after ``timeout_s``."""

    def __init__(self, timeout_s: float) -> None:
        super().__init__()
        self.timeout_s = timeout_s

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPConnection:
        """Open the connection with the call timeout set."""
        connection = super().make_connection(host)
        connection.timeout = self.timeout_s
        return connection


class TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    """HTTPS transport with a call timeout; certificates are verified unless ``verify`` is false."""

    def __init__(self, timeout_s: float, verify: bool) -> None:
        context = ssl.create_default_context()
        if not verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        super().__init__(context=context)
        self.timeout_s = timeout_s
        self.verify = verify

    def make_connection(self, host: tuple[str, dict[str, str]] | str) -> http.client.HTTPSConnection:
        """Open the connection with the call timeout set."""
        connection = super().make_connection(host)
        connection.timeout = self.timeout_s
        return connection


def transport_for(url: str, timeout_s: float, verify: bool) -> xmlrpc.client.Transport:
    """Return the transport for ``url``'s scheme."""
    if url.startswith("https://"):
        return TimeoutSafeTransport(timeout_s, verify)
    return TimeoutTransport(timeout_s)
