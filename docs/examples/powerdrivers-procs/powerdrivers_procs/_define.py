"""Defining instances from code, without a driver."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from powerdrivers_procs._errors import translated
from powerdrivers_procs._state import Home


def define(
    directory: str | os.PathLike[str],
    name: str,
    command: Sequence[str],
    *,
    stop_signal: str | int | None = None,
) -> str:
    """Define (or redefine) instance ``name`` in ``directory`` and return its id.

    Creates the directory if needed and writes ``instances.json`` under the
    directory's lock, so it is safe while drivers use it. ``command`` is the
    argv to run; ``stop_signal`` (a name such as ``"SIGINT"``, default
    ``SIGTERM``) is what a graceful shutdown sends. A redefinition takes
    effect at the next start. Raises :class:`powerdrivers.InvalidSpec` for an
    invalid definition and :class:`powerdrivers.HypervisorError` if the
    directory cannot be written.
    """
    with translated(f"defining instance {name!r}"):
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        with Home(path).transaction() as snapshot:
            return snapshot.define(name, command, stop_signal).id
