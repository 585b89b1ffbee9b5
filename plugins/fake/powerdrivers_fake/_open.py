"""Opening the fake's store that a URI names: in memory, or a state file."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from powerdrivers import InvalidURI, redact_uri
from powerdrivers_fake._filestore import FileStore
from powerdrivers_fake._options import FakeOptions
from powerdrivers_fake._seed import seed_document
from powerdrivers_fake._store import Document, MemoryStore, Store


def open_store(uri: str | None, settings: FakeOptions) -> Store:
    """Return the store ``uri`` names, seeded as ``settings`` say if new.

    Raises :class:`~powerdrivers.InvalidURI` for a URI that is not the fake's
    (checked in full before a file is created), and what :class:`FileStore` raises.
    """

    def seed() -> Document:
        return seed_document(settings.seed, settings.instances)

    if uri is None:
        return MemoryStore(seed)
    try:
        parts = urlsplit(uri)
    except ValueError as error:
        raise InvalidURI(f"{redact_uri(uri)!r} is not a URI: {error}") from None
    if parts.scheme != "fake" or parts.netloc or parts.query or parts.fragment:
        raise InvalidURI(
            f"the fake driver takes fake:/// or fake:///path/to/state.json, not {redact_uri(uri)!r}"
        )
    if parts.path in ("", "/"):
        return MemoryStore(seed)
    # Everything is checked before the store creates a file (its lock) beside the path.
    text = unquote(parts.path)
    if "\0" in text:
        raise InvalidURI(f"fake state path {text!r} contains a NUL character")
    path = Path(text)
    try:
        directory = text.endswith("/") or path.is_dir()
    except OSError as error:
        raise InvalidURI(f"fake state path {text!r} cannot be used: {error.strerror}") from None
    if directory:
        raise InvalidURI(f"fake state path {text} is a directory; name a .json file in it")
    return FileStore(path, seed)
