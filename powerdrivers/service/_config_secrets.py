"""Reading the service's secrets from where its config points: an environment variable or a file.

A secret is never written in the config itself. A file holding one must be readable by its owner
only (mode 0600 or 0400): a file others can read is refused, so a copy left open is found at
start-up rather than after a leak.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Final

from powerdrivers import ConfigurationError, Secret

#: The largest secret file read: a token or a password, never a document.
MAX_SECRET_BYTES: Final = 4096


class SecretReferenceError(ConfigurationError):
    """A referenced secret cannot be used; the message says why (never the secret)."""


def secret_from_env(variable: str) -> Secret:
    """Return the secret in environment variable ``variable``.

    Raises ``SecretReferenceError`` when it is unset or empty.
    """
    value = os.environ.get(variable, "")
    if not value.strip():
        raise SecretReferenceError(f"environment variable {variable} is not set or empty")
    return Secret(value.strip())


def secret_from_file(path: Path) -> Secret:
    """Return the secret in the file at ``path`` (one line; surrounding white space dropped).

    Raises ``SecretReferenceError`` when the file is missing, unreadable, not a regular file,
    open to its group or others, larger than ``MAX_SECRET_BYTES`` or empty.
    """
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SecretReferenceError(f"secret file {path} does not exist") from None
    except OSError as error:
        raise SecretReferenceError(f"secret file {path} cannot be opened: {error.strerror}") from None
    try:
        # Checked on the open file, so the file read is the file checked.
        status = os.fstat(descriptor)
        if not stat.S_ISREG(status.st_mode):
            raise SecretReferenceError(f"secret file {path} is not a regular file")
        mode = stat.S_IMODE(status.st_mode)
        if mode & 0o077:
            raise SecretReferenceError(
                f"secret file {path} is readable by group or others (mode {mode:04o}); "
                "make it readable by its owner only (chmod 600)"
            )
        content = os.read(descriptor, MAX_SECRET_BYTES + 1)
    except OSError as error:
        raise SecretReferenceError(f"secret file {path} cannot be read: {error.strerror}") from None
    finally:
        os.close(descriptor)
    if len(content) > MAX_SECRET_BYTES:
        raise SecretReferenceError(f"secret file {path} is larger than {MAX_SECRET_BYTES} bytes")
    try:
        text = content.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise SecretReferenceError(f"secret file {path} is not UTF-8 text") from None
    if not text:
        raise SecretReferenceError(f"secret file {path} is empty")
    if "\n" in text or not text.isprintable():
        raise SecretReferenceError(f"secret file {path} must hold one line of printable text")
    return Secret(text)
