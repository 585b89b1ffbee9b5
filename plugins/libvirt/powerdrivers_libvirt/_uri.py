"""Checking a libvirt URI before libvirt tries, so a typo is a clear error, not a socket error.

A URI is also where a secret could leak: it shows in process listings, and
libvirt echoes it (and a test-driver node file's first line) in its error
messages. So a password in the URI is refused, and what libvirt says is
scrubbed before it reaches an exception or a log.
"""

from __future__ import annotations

import os
import re
from urllib.parse import urlsplit

from powerdrivers import InvalidURI, redact_uri

#: libvirt's hypervisor drivers (the part of the scheme before any '+transport').
DRIVERS = frozenset(
    {
        "qemu", "kvm", "test", "xen", "libxl", "lxc", "ch", "vz", "parallels", "bhyve", "openvz",
        "vbox", "esx", "gsx", "vpx", "hyperv", "vmwareplayer", "vmwarews", "vmwarefusion", "uml", "phyp",
    }
)  # fmt: skip
TRANSPORTS = frozenset({"unix", "ssh", "tcp", "tls", "libssh", "libssh2", "ext"})
#: Drivers that libvirt runs inside the calling process rather than through its remote driver.
IN_PROCESS = frozenset(
    {"test", "esx", "gsx", "vpx", "hyperv", "vmwareplayer", "vmwarews", "vmwarefusion", "openvz"}
)
#: Query parameters that carry secrets (those the core masks too).
_HIDDEN_KEYS = "|".join(("password", "passwd", "pass", "secret", "token"))
#: The same inside any text, with their values.
_HIDDEN_PARAMETER = rf"([?&;](?:{_HIDDEN_KEYS})=)[^&;\s]*"
#: A URI's user and password inside any text, up to the last '@' of the word: a password may hold
#: characters (# ? / @) that end the authority of a well-formed URI.
_USERINFO = r"(?i)\b([a-z][a-z0-9+.-]*://)[^\s:@/]*:\S*@"
_NOT_IN_THE_URI = (
    "the libvirt driver takes no password in the URI, where process listings and logs would show it: "
    "set POWERDRIVERS_PASSWORD or the password option (libvirt asks for it through its "
    "authentication callback); the user name may stay in the URI or go in the username option"
)


def check_uri(uri: str) -> None:
    """Raise ``InvalidURI`` unless ``uri`` names a libvirt driver and transport, and holds no password."""
    if _has_password(uri):
        raise InvalidURI(_NOT_IN_THE_URI)
    try:
        scheme = urlsplit(uri).scheme
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    driver, _, transport = scheme.partition("+")
    if not scheme or "://" not in uri:
        raise InvalidURI(
            f"{redact_uri(uri)!r} is not a libvirt URI such as qemu:///system or test:///default"
        )
    if driver not in DRIVERS:
        raise InvalidURI(
            f"{redact_uri(uri)!r}: {driver!r} is not a libvirt driver (try qemu, test, xen, lxc, ...)"
        )
    if transport and transport not in TRANSPORTS:
        raise InvalidURI(
            f"{redact_uri(uri)!r}: {transport!r} is not a libvirt transport ({', '.join(sorted(TRANSPORTS))})"
        )


def _has_password(uri: str) -> bool:
    query = uri.partition("?")[2]
    for parameter in re.split(r"[&;]", query):
        if re.fullmatch(_HIDDEN_KEYS, parameter.partition("=")[0].strip(), flags=re.IGNORECASE):
            return True
    return _userinfo(uri) is not None


def _userinfo(uri: str) -> tuple[str, str] | None:
    """Return the user and password ``uri`` holds, or None; libvirt echoes them whatever the grammar says.

    A password may hold any character that ends a well-formed authority (``# ? / @ :``), and one
    starting with digits reads to libvirt as a port (``admin:12#34@host`` is host ``admin``, port
    ``12``). So the text between ``scheme://`` and the last ``@`` is a user and password whenever
    its first ``:`` comes before any ``/`` or ``@`` there (a host's port, or a path, comes after).
    """
    before_at, at, _ = uri.partition("://")[2].rpartition("@")
    user, colon, password = before_at.partition(":")
    if not at or not colon or "/" in user or "@" in user:
        return None
    return user, password


def scrub(message: str, uri: str | None = None) -> str:
    """Return libvirt's ``message`` with ``uri``, any URI's user and password, and secrets masked."""
    uri = uri or os.environ.get("LIBVIRT_DEFAULT_URI")
    if uri:
        message = message.replace(uri, shown_uri(uri))
        userinfo = _userinfo(uri)
        if userinfo is not None:
            message = _mask_password(message, userinfo[1])
    message = re.sub(_HIDDEN_PARAMETER, r"\1********", message, flags=re.IGNORECASE)
    return re.sub(_USERINFO, r"\1********@", message)


def _mask_password(message: str, password: str) -> str:
    """Mask ``password`` in ``message``, and what libvirt reads of it as a port or host.

    libvirt reads ``admin:12#34@host`` as host ``admin``, port ``12``, and says so ("server at
    'admin:12'", "service '12'"): every part of the password up to a character that ends an
    authority is masked wherever it stands alone.
    """
    pieces = {password, *(password[:index] for index, char in enumerate(password) if char in "#?/@:")}
    for piece in sorted(filter(None, pieces), key=len, reverse=True):
        message = re.sub(rf"(?<![^\s'\"`:(\[]){re.escape(piece)}(?![^\s'\"`:)\],.;])", "********", message)
    return message


def shown_uri(uri: str) -> str:
    """Return ``uri`` as messages may show it: any password, and the user with it, masked."""
    return re.sub(_USERINFO, r"\1********@", redact_uri(uri))


def node_file(uri: str | None) -> str | None:
    """Return the node XML file a test-driver URI (``test:///path/node.xml``) names, if it names one."""
    if not uri or not uri.startswith("test:///"):
        return None
    path = urlsplit(uri).path
    return None if path == "/default" else path


def in_process(uri: str) -> bool:
    """Whether libvirt serves ``uri`` inside this process (``test:///default``) rather than remotely."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    driver, _, transport = parts.scheme.partition("+")
    return driver in IN_PROCESS and not transport and (driver != "test" or not parts.hostname)
