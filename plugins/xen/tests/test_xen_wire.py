"""The Xen driver against misbehaving xapi servers on loopback: trickling, echoing, garbled.

Each server here speaks real HTTP and XML-RPC on 127.0.0.1; a script says how it answers each
method. They exist because the simulator is a well-behaved xapi, and these faults are not.
"""

from __future__ import annotations

import html
import logging
import shutil
import socketserver
import ssl
import subprocess
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest

import powerdrivers
from powerdrivers import (
    AuthenticationError,
    HypervisorConnectionError,
    HypervisorError,
    OperationTimeout,
    PowerDriversError,
    Secret,
)

SESSION = {"Status": "Success", "Value": "OpaqueRef:5e55"}
#: What xapi answers to the calls an SDK makes while logging in: older XenAPI SDKs (2.14) read
#: the pool's API version right after the session call.
LOGIN_ANSWERS = {
    "pool.get_all": ["OpaqueRef:pool"],
    "pool.get_master": "OpaqueRef:host",
    "host.get_API_version_major": "2",
    "host.get_API_version_minor": "21",
}


def login_reply(method: str) -> Reply | None:
    """xapi's answer to a call made while logging in, or None for any other call."""
    if method.startswith("session."):
        return Reply(SESSION)
    if method in LOGIN_ANSWERS:
        return Reply({"Status": "Success", "Value": LOGIN_ANSWERS[method]})
    return None


TRICKLE_GAP_S = 0.2


class Reply:
    """How the scripted server answers one call."""

    def __init__(
        self,
        value: Any = None,
        *,
        fault: str | None = None,
        http_error: str | None = None,
        trickle: str | None = None,
        raw: bytes | None = None,
    ) -> None:
        self.value, self.fault, self.http_error, self.trickle, self.raw = (
            value,
            fault,
            http_error,
            trickle,
            raw,
        )


Script = Callable[[str, tuple[Any, ...]], Reply]


class _Handler(BaseHTTPRequestHandler):
    server: ScriptedXapi
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        params, method = xmlrpc.client.loads(body)
        reply = self.server.script(method or "", params)
        if reply.http_error is not None:
            self.send_response(500, reply.http_error)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if reply.raw is not None:
            self.wfile.write(reply.raw)
            self.close_connection = True
            return
        if reply.fault is not None:
            payload = xmlrpc.client.dumps(xmlrpc.client.Fault(1, reply.fault), methodresponse=True)
        else:
            payload = xmlrpc.client.dumps((reply.value,), methodresponse=True, allow_none=True)
        data = payload.encode()
        head = f"HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        if reply.trickle is None:
            self.wfile.write(head + data)
            return
        # Send at once what comes before the trickle point, then a byte per gap.
        whole = head + data
        start = whole.index(reply.trickle.encode())
        self.wfile.write(whole[:start])
        self.wfile.flush()
        for index in range(start, len(whole)):
            if self.server.closing.wait(TRICKLE_GAP_S):
                return
            self.wfile.write(whole[index : index + 1])
            self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        """No access log."""


class ScriptedXapi(ThreadingHTTPServer):
    """An XML-RPC server on loopback answering as ``script`` says."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, script: Script, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self.closing = threading.Event()
        self.scheme = "http"
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)
            self.scheme = "https"

    @property
    def url(self) -> str:
        """Where it listens."""
        return f"{self.scheme}://127.0.0.1:{self.server_address[1]}/"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up mid-answer is what these tests make happen."""


@pytest.fixture
def serve() -> Iterator[Callable[..., ScriptedXapi]]:
    servers: list[ScriptedXapi] = []

    def start(script: Script, tls: ssl.SSLContext | None = None) -> ScriptedXapi:
        server = ScriptedXapi(script, tls)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.closing.set()
        server.shutdown()
        server.server_close()


def load(url: str, password: str = "pw", **options: object) -> powerdrivers.Driver:
    return powerdrivers.load_driver("xen", url, username="root", password=Secret(password), **options)


# -- a call's timeout bounds the whole call ------------------------------------------------------------


@pytest.mark.parametrize("where", ["HTTP/1.1", "<value>"])  # in the status line, or in the body
def test_a_trickling_login_times_out_within_the_call_timeout(
    serve: Callable[..., ScriptedXapi], where: str
) -> None:
    server = serve(lambda method, params: Reply(SESSION, trickle=where))
    began = time.monotonic()
    with pytest.raises(OperationTimeout):
        load(server.url, timeout="1")
    elapsed = time.monotonic() - began
    assert elapsed < 3  # the trickle alone would take over half a minute


@pytest.fixture(scope="module")
def server_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A TLS context with a fresh self-signed certificate for 127.0.0.1."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    folder: Path = tmp_path_factory.mktemp("tls")
    key, cert = folder / "key.pem", folder / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


def test_a_trickling_login_over_tls_times_out_within_the_call_timeout(
    serve: Callable[..., ScriptedXapi], server_tls: ssl.SSLContext
) -> None:
    server = serve(lambda method, params: Reply(SESSION, trickle="HTTP/1.1"), server_tls)
    began = time.monotonic()
    with pytest.raises(OperationTimeout):
        load(server.url, timeout="1", verify_tls="false")
    assert time.monotonic() - began < 3


def test_tls_works_through_the_bounded_transport(
    serve: Callable[..., ScriptedXapi], server_tls: ssl.SSLContext
) -> None:
    server = serve(after_login(Reply({"Status": "Success", "Value": {}})), server_tls)
    with load(server.url, timeout="2", verify_tls="false") as driver:
        assert driver.list_instances() == []
    with pytest.raises(HypervisorConnectionError, match="TLS"):
        load(server.url, timeout="2")  # self-signed: refused unless verification is off


def test_a_trickling_call_after_login_times_out_within_the_call_timeout(
    serve: Callable[..., ScriptedXapi],
) -> None:
    def script(method: str, params: tuple[Any, ...]) -> Reply:
        return login_reply(method) or Reply({"Status": "Success", "Value": {}}, trickle="<value>")

    server = serve(script)
    with load(server.url, timeout="1") as driver:
        began = time.monotonic()
        with pytest.raises(OperationTimeout):
            driver.list_instances()
        assert time.monotonic() - began < 3
        # The next call starts with a full timeout of its own.
        began = time.monotonic()
        with pytest.raises(OperationTimeout):
            driver.list_instances()
        assert 0.9 < time.monotonic() - began < 3


GARBLED = [
    b"garbage\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nnope!",
    b"HTTP/1.1 200 OK\r\n\r\n",
]
MALFORMED = ["not an envelope", ["a", "list"], {"Status": "Failure", "ErrorDescription": []}, {}]


def after_login(reply: Reply) -> Script:
    return lambda method, params: login_reply(method) or reply


@pytest.mark.parametrize("raw", GARBLED)
def test_a_garbled_answer_is_a_hypervisor_error_at_login_and_after(
    serve: Callable[..., ScriptedXapi], raw: bytes
) -> None:
    with pytest.raises((HypervisorError, HypervisorConnectionError)):
        load(serve(lambda method, params: Reply(raw=raw)).url, timeout="2")
    with (
        load(serve(after_login(Reply(raw=raw))).url, timeout="2") as driver,
        pytest.raises((HypervisorError, HypervisorConnectionError)),
    ):
        driver.list_instances()


@pytest.mark.parametrize("value", MALFORMED)
def test_a_malformed_envelope_is_a_hypervisor_error_at_login_and_after(
    serve: Callable[..., ScriptedXapi], value: object
) -> None:
    with pytest.raises(HypervisorError):
        load(serve(lambda method, params: Reply(value)).url, timeout="2")
    with load(serve(after_login(Reply(value))).url, timeout="2") as driver, pytest.raises(HypervisorError):
        driver.list_instances()


@pytest.mark.parametrize(
    "records",
    ["junk", ["a", "list"], {"OpaqueRef:1": "junk"}, {"OpaqueRef:1": {"uuid": "u", "name_label": "n"}}],
)
def test_a_malformed_listing_is_a_hypervisor_error(
    serve: Callable[..., ScriptedXapi], records: object
) -> None:
    server = serve(after_login(Reply({"Status": "Success", "Value": records})))
    with load(server.url, timeout="2") as driver, pytest.raises(HypervisorError, match="malformed"):
        driver.list_instances()


# -- what the server says never carries the password out --------------------------------------------------

PASSWORD = "Zq7s#?/@:%&<>'\"\\Wv9k"


def forms_of(password: str) -> list[str]:
    return [password, quote(password, safe=""), quote_plus(password), html.escape(password), "Zq7s", "Wv9k"]


def echo_login(how: str) -> Script:
    def script(method: str, params: tuple[Any, ...]) -> Reply:
        if not method.startswith("session.login"):
            return Reply({"Status": "Success", "Value": ""})
        said = " ".join(str(param) for param in params) + " " + quote(str(params[1]), safe="")
        if how == "failure":
            return Reply(
                {"Status": "Failure", "ErrorDescription": ["INTERNAL_ERROR", *map(str, params), said]}
            )
        if how == "authentication":
            return Reply({"Status": "Failure", "ErrorDescription": ["SESSION_AUTHENTICATION_FAILED", said]})
        if how == "fault":
            return Reply(fault=f"cannot log in with {said}")
        if how == "http":
            return Reply(http_error=f"Refused {said}".encode("latin-1", "replace").decode("latin-1"))
        return Reply(said)  # not an envelope: the SDK puts what it got in its own error

    return script


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        ("failure", HypervisorError),
        ("authentication", AuthenticationError),
        ("fault", HypervisorError),
        ("http", HypervisorConnectionError),
        ("weird", PowerDriversError),
    ],
)
def test_a_server_echoing_the_password_never_gets_it_into_errors_or_logs(
    serve: Callable[..., ScriptedXapi],
    caplog: pytest.LogCaptureFixture,
    how: str,
    expected: type[PowerDriversError],
) -> None:
    server = serve(echo_login(how))
    with caplog.at_level(logging.DEBUG), pytest.raises(expected) as caught:
        load(server.url, password=PASSWORD, timeout="2")
    error = caught.value
    assert error.__context__ is None and error.__cause__ is None
    texts = [str(error), repr(error), *map(str, error.args), str(getattr(error, "details", "")), caplog.text]
    for text in texts:
        for form in forms_of(PASSWORD):
            assert form not in text, (form, text)


def test_a_server_echoing_the_password_later_never_gets_it_into_errors(
    serve: Callable[..., ScriptedXapi],
) -> None:
    def script(method: str, params: tuple[Any, ...]) -> Reply:
        return login_reply(method) or Reply(
            {"Status": "Failure", "ErrorDescription": ["SR_FULL", PASSWORD, quote(PASSWORD, safe="")]}
        )

    server = serve(script)
    with load(server.url, password=PASSWORD) as driver, pytest.raises(HypervisorError) as caught:
        driver.list_instances()
    assert caught.value.code == "SR_FULL"
    for text in (str(caught.value), *caught.value.details):
        for form in forms_of(PASSWORD):
            assert form not in text


def test_the_scripted_server_is_a_real_xml_rpc_server(serve: Callable[..., ScriptedXapi]) -> None:
    server = serve(lambda method, params: Reply({"Status": "Success", "Value": [method, *params]}))
    proxy = xmlrpc.client.ServerProxy(server.url)
    assert proxy.VM.get_all("s") == {"Status": "Success", "Value": ["VM.get_all", "s"]}
    assert isinstance(server, socketserver.ThreadingMixIn)
