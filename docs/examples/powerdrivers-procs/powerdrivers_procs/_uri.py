"""Checking a ``procs:///path/to/dir`` URI and turning it into a directory."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from powerdrivers import InvalidURI, redact_uri

SCHEME = "procs"
_EXAMPLE = "procs:///path/to/dir"


def directory_of(uri: str | None) -> Path:
    """Return the existing directory ``uri`` names; raise ``InvalidURI`` for anything else.

    Accepted: ``procs:///absolute/path`` (percent-encoding allowed), or the
    same with ``localhost`` as host. The directory must already exist, so
    that a typo in a path is an error rather than an empty set of instances
    (:func:`powerdrivers_procs.define` creates it).
    """
    if not uri:
        raise InvalidURI(f"the procs driver needs a URI naming its directory, such as {_EXAMPLE}")
    try:
        parts = urlsplit(uri)
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    if parts.scheme != SCHEME or not uri.startswith(f"{SCHEME}://"):
        raise InvalidURI(f"{redact_uri(uri)!r} is not a procs URI such as {_EXAMPLE}")
    if parts.netloc not in ("", "localhost"):
        raise InvalidURI(
            f"{redact_uri(uri)!r}: the procs driver runs local processes only; write {_EXAMPLE} (no host)"
        )
    if parts.query or parts.fragment:
        raise InvalidURI(f"{redact_uri(uri)!r}: a procs URI takes no query or fragment; use options")
    path = Path(unquote(parts.path))
    if not path.is_absolute() or path == Path("/"):
        raise InvalidURI(f"{redact_uri(uri)!r} does not name a directory, as in {_EXAMPLE}")
    try:
        exists, is_dir = path.exists(), path.is_dir()
    except OSError as error:
        raise InvalidURI(f"{redact_uri(uri)!r}: cannot look at {path}: {error.strerror}") from None
    if not exists:
        raise InvalidURI(f"{redact_uri(uri)!r}: directory {path} does not exist")
    if not is_dir:
        raise InvalidURI(f"{redact_uri(uri)!r}: {path} is not a directory")
    return path
