"""Where the keeper's store lives when nobody says: ``POWERDRIVERS_STORE``, else the state directory."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

#: The environment variable naming the store's URL (the CLI's ``--store`` overrides it).
STORE_VARIABLE = "POWERDRIVERS_STORE"


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """Return the default SQLite file: ``$XDG_STATE_HOME/powerdrivers/keeper.db``.

    ``XDG_STATE_HOME`` counts only when absolute (as the XDG spec says); otherwise
    ``~/.local/state`` is used.
    """
    environ = os.environ if environ is None else environ
    state = environ.get("XDG_STATE_HOME", "")
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "powerdrivers" / "keeper.db"


def default_store_url(environ: Mapping[str, str] | None = None) -> str:
    """Return the store URL to use: ``POWERDRIVERS_STORE`` if set, else the default SQLite file's URL."""
    environ = os.environ if environ is None else environ
    configured = environ.get(STORE_VARIABLE, "").strip()
    if configured:
        return configured
    return f"sqlite:///{default_store_path(environ)}"
