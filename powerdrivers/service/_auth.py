"""Who is asking: bearer tokens (or the dashboard's cookie) and their two roles.

A token is checked against every configured token with a constant-time comparison, all of them
every time, so neither the answer's timing nor its content says which token came close. A token's
*name* is what the service records (``requested_by``) and logs; its value is never shown.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends
from fastapi.security import HTTPBearer
from starlette.requests import HTTPConnection

from powerdrivers.service._config import Role, TokenConfig
from powerdrivers.service._http_errors import ApiError

#: The dashboard's cookie holding the token (HttpOnly, SameSite=Strict; set by ``/login``).
COOKIE_NAME = "powerdrivers_token"

#: The header the dashboard's scripts send with a change authenticated by the cookie (against CSRF).
DASHBOARD_HEADER = "X-Powerdrivers-Dashboard"

#: A token longer than this is refused without comparing (configured tokens are far shorter).
MAX_TOKEN_LENGTH = 4096

# Only documents the scheme in the OpenAPI document (the /docs "Authorize" button); the check is ours.
_BEARER = HTTPBearer(
    auto_error=False, description="A configured token: a reader's, or an operator's to change."
)

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="powerdrivers"'}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: the token's name and role (never its value)."""

    name: str
    role: Role

    @property
    def may_change(self) -> bool:
        """Whether this caller may change something (an operator)."""
        return self.role is Role.OPERATOR


def presented_token(connection: HTTPConnection) -> str | None:
    """Return the token the request carries: ``Authorization: Bearer`` first, else the cookie."""
    header = connection.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        return value.strip() if scheme.lower() == "bearer" and value.strip() else None
    cookie = connection.cookies.get(COOKIE_NAME)
    return cookie or None


def match_token(presented: str | None, tokens: Iterable[TokenConfig]) -> Principal | None:
    """Return the principal of the configured token equal to ``presented``, or ``None``."""
    if not presented or len(presented) > MAX_TOKEN_LENGTH:
        return None
    # Digests of equal length are compared, so not even a token's length shows in the timing.
    candidate = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
    found: Principal | None = None
    for token in tokens:
        # Every token is compared, even after a match: the time taken does not depend on which.
        expected = hashlib.sha256(token.value.reveal().encode("utf-8")).digest()
        if hmac.compare_digest(candidate, expected) and found is None:
            found = Principal(token.name, token.role)
    return found


def principal_for_token(request: HTTPConnection, token: str) -> Principal | None:
    """Return whose ``token`` is (the dashboard's login checks a typed token with it), or ``None``."""
    return match_token(token, request.app.state.fleet.config.tokens)


def authenticate(request: HTTPConnection) -> Principal | None:
    """Return who the request is from, or ``None`` without a token or with an unknown one."""
    return match_token(presented_token(request), request.app.state.fleet.config.tokens)


# The dependencies are coroutines though they never wait: FastAPI runs a plain function in its
# thread pool, a hop per request that cost more than the check itself (benchmark S1).
async def reader(
    request: HTTPConnection, _documented: Annotated[object, Depends(_BEARER)] = None
) -> Principal:
    """FastAPI dependency: any valid token (reader or operator); else 401 with a Bearer challenge."""
    return _reader(request)


def _reader(request: HTTPConnection) -> Principal:
    principal = authenticate(request)
    if principal is None:
        reason = "no token" if presented_token(request) is None else "an unknown token"
        raise ApiError(
            401,
            f"{reason}: send Authorization: Bearer <token> with a configured token",
            headers=_CHALLENGE,
        )
    return principal


async def operator(
    request: HTTPConnection, _documented: Annotated[object, Depends(_BEARER)] = None
) -> Principal:
    """FastAPI dependency: an operator's token; a reader's gets 403, none or an unknown one 401."""
    principal = _reader(request)
    if not principal.may_change:
        raise ApiError(403, f"token {principal.name!r} is a reader's: changing something needs an operator's")
    # A browser sends the cookie with any site's form; only the dashboard's own script sets the header.
    if "authorization" not in request.headers and request.headers.get(DASHBOARD_HEADER) != "1":
        raise ApiError(
            403,
            f"a request authenticated by the dashboard's cookie must carry the {DASHBOARD_HEADER} header",
            code="csrf",
        )
    return principal
