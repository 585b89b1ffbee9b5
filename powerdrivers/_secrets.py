"""Keeping credentials out of logs, reprs, exceptions and argv."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_MASK = "********"

#: Option and query-parameter names that carry secrets.
SECRET_NAMES = frozenset({"password", "passwd", "pass", "secret", "token"})

# A pattern, not a compiled one: re compiles it on first use (and caches it), which keeps
# compiling out of every import of the package.
_SECRET_QUERY = rf"(?i)((?:^|[?&;])(?:{'|'.join(sorted(SECRET_NAMES))})=)[^&;]*"


class Secret:
    """A string that does not show itself.

    ``repr``, ``str`` and formatting print a mask; :meth:`reveal` returns
    the value for the one place that must send it.
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """Return the secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({_MASK!r})"

    def __str__(self) -> str:
        return _MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)


def redact_uri(uri: str) -> str:
    """Return ``uri`` with any password in its user-info or query masked.

    Everything else is left exactly as written. The user-info is found
    without trusting URL parsing: a password may hold ``#``, ``?``, ``/``
    or ``@`` unencoded, which a parser reads as the start of a fragment,
    query or path. So everything from ``scheme://`` to the last ``@`` that
    holds a ``:`` is a user and a password, and the password is masked;
    where that guess takes in more than a password, more is masked, never
    less.
    """
    try:
        urlsplit(uri)
    except ValueError:
        return _MASK
    redacted = uri
    scheme, separator, rest = uri.partition("://")
    if separator and "@" in rest:
        userinfo, _, after = rest.rpartition("@")
        user, has_password, _ = userinfo.partition(":")
        if has_password:
            redacted = f"{scheme}://{user}:{_MASK}@{after}"
    head, question, tail = redacted.partition("?")
    if question:
        redacted = head + question + re.sub(_SECRET_QUERY, lambda m: m.group(1) + _MASK, tail)
    return redacted
