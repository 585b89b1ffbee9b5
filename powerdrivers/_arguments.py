"""Checking what a caller passes to a driver's public methods, before anything is attempted.

Only :class:`powerdrivers.PowerDriversError` subclasses leave the API, so a
wrong type, a NUL byte or an unencodable name is refused here with a
:class:`ConfigurationError`, rather than surfacing later as a ``TypeError``
or ``UnicodeEncodeError`` from deep inside a hypervisor library.
"""

from __future__ import annotations

from typing import Final

from powerdrivers._exceptions import ConfigurationError
from powerdrivers._values import parse_duration

#: The longest instance id or name any call accepts; hypervisors' own limits are far lower.
MAX_REF_LENGTH: Final = 1024


def check_ref(ref: object) -> str:
    """Return ``ref`` if it can name an instance: a non-empty string of sendable characters."""
    if not isinstance(ref, str):
        raise ConfigurationError(
            f"an instance is named by its id or name, a string, not a {type(ref).__name__}"
        )
    if not ref or len(ref) > MAX_REF_LENGTH:
        raise ConfigurationError(f"an instance id or name is 1 to {MAX_REF_LENGTH} characters long")
    if "\x00" in ref:
        raise ConfigurationError("an instance id or name cannot contain a NUL character")
    try:
        ref.encode()
    except UnicodeEncodeError:
        raise ConfigurationError("an instance id or name must be valid UTF-8 text") from None
    return ref


def check_flag(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool; a truthy string such as ``"no"`` is a mistake, not a flag."""
    if not isinstance(value, bool):
        raise ConfigurationError(f"{name} must be True or False, not a {type(value).__name__}")
    return value


def check_duration(name: str, value: object, *, positive: bool = False) -> float:
    """Return ``value`` as seconds, bounded as :func:`powerdrivers.parse_duration` does, but numbers only."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigurationError(f"{name} must be a number of seconds, not a {type(value).__name__}")
    return parse_duration(name, value, positive=positive, error=ConfigurationError)
