"""The service's one error shape, and the mapping of every failure onto it.

Every error the HTTP layer answers, from a bad token to an unknown route, a validation error or
an unexpected exception, is ``{"error": {"status", "code", "message", "field", "allowed_states"}}``:
``field`` names the input at fault (400, 422), ``allowed_states`` the states an operation may start
from (409 on an invalid transition). Messages are one line, short, and never echo a token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from powerdrivers import (
    ConfigurationError,
    HypervisorConnectionError,
    InstanceNotFound,
    InvalidStateTransition,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers.keeper import ActionInFlight, HostAlreadyKept, StoreError, StoreUnavailable, UnknownAction

_LOG = logging.getLogger("powerdrivers.service.http")

#: The longest message an error carries: an id echoed back must not make the answer huge.
MAX_MESSAGE = 300

#: The largest request body the API reads (a policy or an action request is a few dozen bytes).
MAX_BODY_BYTES = 64 * 1024

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An error answer: raise it in an endpoint or dependency and the client gets the error JSON."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        field: str | None = None,
        allowed_states: Sequence[str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or _CODES.get(status, "error")
        self.message = message
        self.field = field
        self.allowed_states = list(allowed_states) if allowed_states is not None else None
        self.headers = headers


def error_body(error: ApiError) -> dict[str, Any]:
    """Return the JSON body of ``error`` (the one error shape)."""
    return {
        "error": {
            "status": error.status,
            "code": error.code,
            "message": _one_line(error.message),
            "field": error.field,
            "allowed_states": error.allowed_states,
        }
    }


def error_response(error: ApiError) -> JSONResponse:
    """Return the response answering ``error``."""
    return JSONResponse(error_body(error), status_code=error.status, headers=error.headers)


def api_error_of(exc: PowerDriversError, *, field: str | None = None) -> ApiError:
    """Map one of the framework's or the keeper's errors onto its HTTP answer.

    ``field`` names the input the caller validated with the failing call (for ``InvalidOption``).
    """
    message = str(exc)
    if isinstance(exc, InvalidStateTransition):
        return ApiError(409, message, code="invalid_transition", allowed_states=list(exc.allowed))
    if isinstance(exc, ActionInFlight):
        return ApiError(409, message, code="action_in_flight")
    if isinstance(exc, HostAlreadyKept):
        return ApiError(409, message, code="host_already_kept")
    if isinstance(exc, (InstanceNotFound, UnknownAction)):
        return ApiError(404, message)
    if isinstance(exc, StoreError):
        # The store's own message names the database (user, host, port, name): for the log only.
        _LOG.warning("service: a request met a store error: %s", message)
        if isinstance(exc, StoreUnavailable):
            return ApiError(503, "the store cannot be reached now; try again later", code="store_unavailable")
        return ApiError(503, "the store failed to answer; try again later", code="store_error")
    if isinstance(exc, HypervisorConnectionError):
        return ApiError(503, message, code="host_unreachable")
    if isinstance(exc, ConfigurationError):
        return ApiError(422, message, code="invalid_option", field=field or _leading_name(message))
    if isinstance(exc, UnsupportedOperation):
        return ApiError(422, message, code="unsupported_operation", field="operation")
    return ApiError(400, message, code="rejected")


def _leading_name(message: str) -> str | None:
    # The core's validators start their messages with the option's name ("timeout must be ...").
    first = message.split(" ", 1)[0]
    return first if first.isidentifier() and first.islower() else None


def _one_line(message: str) -> str:
    text = " ".join(message.split())
    return text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 3] + "..."


def _validation_error(exc: RequestValidationError) -> ApiError:
    errors = exc.errors()
    if not errors:
        return ApiError(422, "the request is not valid")
    first = errors[0]
    location = [str(part) for part in first.get("loc", ())]
    if first.get("type") == "json_invalid":
        return ApiError(400, "the request body is not valid JSON", code="malformed_json", field="body")
    # The first element says where (body, query, path, header); the rest is the field.
    field = ".".join(location[1:]) or (location[0] if location else None)
    if first.get("type") == "extra_forbidden":
        message = f"{field}: unknown field"
    elif first.get("type") == "missing":
        message = f"{field}: required"
    else:
        message = f"{field}: {first.get('msg', 'not valid')}"
    return ApiError(422, message, code="invalid_input", field=field)


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` with the one error JSON shape."""

    async def on_api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return error_response(exc)

    async def on_framework_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PowerDriversError)
        return error_response(api_error_of(exc))

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return error_response(_validation_error(exc))

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = {
            404: "no such resource",
            405: f"method {request.method} is not allowed here",
        }.get(exc.status_code, str(exc.detail))
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 400:
            # The framework's only 400: a body it could not parse (too deep, a number too long).
            unparsed = "the request body could not be parsed as JSON"
            return error_response(
                ApiError(400, unparsed, code="malformed_json", field="body", headers=headers)
            )
        return error_response(ApiError(exc.status_code, message, headers=headers))

    async def on_value_error(request: Request, exc: Exception) -> Response:
        # A value refused below the request models (a check of the fleet or the store).
        message = str(exc)
        return error_response(ApiError(422, message, code="invalid_input", field=_leading_name(message)))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(ValueError, on_value_error)
    app.add_exception_handler(PowerDriversError, on_framework_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(BodyLimit)


class UnexpectedErrors:
    """Answer an unexpected exception with a generic 500 and log it (type and place, never a request)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the request, turning an escaping exception into the 500 error JSON."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except Exception as exc:
            # The traceback names code, not data; the request's headers (tokens) are never logged.
            _LOG.error(
                "unexpected %s answering %s %s",
                type(exc).__name__,
                scope.get("method"),
                scope.get("path"),
                exc_info=exc,
            )
            if started:
                raise
            response = error_response(ApiError(500, "the service failed unexpectedly; see its log"))
            await response(scope, receive, send)


class BodyLimit:
    """Refuse a request body over ``MAX_BODY_BYTES`` with 413, before any endpoint reads it.

    Also a body sent to ``/v1`` as anything but JSON (422, ``body``): whether the framework
    reads a body without a content type as JSON differs between its versions, so the API
    decides that once, here.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Read the body (up to the limit) and hand it on, or answer 413."""
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        too_large = ApiError(413, f"the request body is over {self.limit // 1024} KiB")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await error_response(too_large)(scope, receive, send)
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await error_response(too_large)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if size and str(scope.get("path", "")).startswith("/v1/") and not _is_json(scope):
            not_json = ApiError(
                422, "body: must be JSON sent as Content-Type: application/json", field="body"
            )
            await error_response(not_json)(scope, receive, send)
            return
        await self.app(scope, _replay(chunks, None, receive), send)


def _is_json(scope: Scope) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            media: bytes = value.split(b";", 1)[0].strip().lower()
            return media == b"application/json" or media.endswith(b"+json")
    return False


def _replay(chunks: list[bytes], first: Message | None, receive: Receive) -> Receive:
    pending: list[Message] = (
        [first] if first is not None else [{"type": "http.request", "body": b"".join(chunks)}]
    )

    async def replayed() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replayed
