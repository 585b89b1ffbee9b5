"""The Xen driver's URI and options, checked once, before anything is sent anywhere."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Final, NamedTuple
from urllib.parse import urlsplit

from powerdrivers import InvalidOption, InvalidURI, Secret, parse_boolean, parse_duration

_LOG = logging.getLogger("powerdrivers.xen")

#: Every option the driver accepts.
OPTIONS: Final = frozenset(
    {"username", "password", "password_file", "verify_tls", "timeout", "event_timeout", "poll_interval"}
)
#: The longest a single call to xapi may take: longer is a typing mistake, not a slow host.
MAX_TIMEOUT_S: Final = 3600.0
#: The longest long-poll of the event thread; stopping events waits for the poll in progress.
MAX_EVENT_TIMEOUT_S: Final = 60.0
#: The longest pause between two looks at a task in progress.
MAX_POLL_INTERVAL_S: Final = 60.0

_WHERE_THE_PASSWORD_GOES: Final = "set POWERDRIVERS_PASSWORD or -o password_file=PATH"  # noqa: S105 - advice


class Settings(NamedTuple):
    """The checked connection settings of one driver."""

    #: The normalised ``scheme://host[:port]/`` URL: it never holds credentials.
    url: str
    username: str
    password: Secret
    verify_tls: bool
    timeout_s: float
    event_timeout_s: float
    poll_interval_s: float


def parse_settings(uri: str | None, options: Mapping[str, object]) -> Settings:
    """Check ``uri`` and ``options`` (already known to be accepted names) and return the settings."""
    verify = parse_boolean("verify_tls", options.get("verify_tls", True))
    timeout_s = parse_duration("timeout", options.get("timeout", 30.0), positive=True, maximum=MAX_TIMEOUT_S)
    event_timeout_s = parse_duration(
        "event_timeout", options.get("event_timeout", 2.0), positive=True, maximum=MAX_EVENT_TIMEOUT_S
    )
    poll_interval_s = parse_duration(
        "poll_interval", options.get("poll_interval", 0.05), positive=True, maximum=MAX_POLL_INTERVAL_S
    )
    url = check_uri(uri)
    username = str(options.get("username", "root"))
    return Settings(url, username, _password(options), verify, timeout_s, event_timeout_s, poll_interval_s)


def check_uri(uri: str | None) -> str:
    """Return ``uri`` as ``scheme://host[:port]/``; raise ``InvalidURI`` naming what is wrong.

    No message repeats more of the URI than its scheme and host: a password may hold ``#``,
    ``?`` or ``/``, which end the authority early, so no parser can be trusted to find it, and
    a path or query may hold a token.
    """
    if not uri:
        raise InvalidURI("the xen driver needs the pool master's URI, e.g. https://xenserver.example")
    if "@" in uri:
        raise InvalidURI(
            "the xen driver takes no user or password in the URI (not repeated here): give the user "
            f"as -o username= and the password elsewhere: {_WHERE_THE_PASSWORD_GOES}"
        )
    try:
        parts = urlsplit(uri)
        port = parts.port
    except ValueError:
        raise InvalidURI("the xen driver takes https://host[:port]; this URI does not parse as one") from None
    if parts.scheme not in ("https", "http"):
        raise InvalidURI(
            f"the xen driver takes https://host[:port], not a {parts.scheme or 'scheme-less'} URI"
        )
    if not parts.hostname:
        raise InvalidURI("the xen driver takes https://host[:port]; this URI names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise InvalidURI(
            f"the xen driver takes https://host[:port] with no path, query or fragment "
            f"(given one for host {parts.hostname!r})"
        )
    if parts.scheme == "http":
        _LOG.warning("connecting to xapi over plain http: the password crosses the network unencrypted")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    netloc = host if port is None else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}/"


def _password(options: Mapping[str, object]) -> Secret:
    value = options.get("password")
    if isinstance(value, Secret):
        return value
    if value is not None:
        return Secret(str(value))
    if "password_file" in options:
        return Secret(_read_password_file(str(options["password_file"])))
    raise InvalidOption(f"the xen driver needs a password: {_WHERE_THE_PASSWORD_GOES}")


def _read_password_file(name: str) -> str:
    """Return the password in file ``name``; raise ``InvalidOption`` quoting nothing of its content."""
    path = Path(name)
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as error:
        raise InvalidOption(f"cannot read password_file {path}: {error.strerror}") from None
    except UnicodeDecodeError:
        # Not the error's text: it quotes bytes of the file, which may be the password.
        raise InvalidOption(f"cannot read password_file {path}: it is not UTF-8 text") from None
    except ValueError:
        # A path holding a NUL; it is not repeated, since no terminal shows it faithfully.
        raise InvalidOption("cannot read password_file: the path holds a NUL character") from None
