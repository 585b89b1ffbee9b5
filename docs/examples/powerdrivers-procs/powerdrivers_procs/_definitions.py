"""``instances.json``: the instances a procs directory defines, written by the user.

The file maps each instance name to its definition::

    {
      "web": {"command": ["python3", "-m", "http.server", "8080"]},
      "worker": {"command": ["./worker", "--queue", "jobs"], "stop_signal": "SIGINT"}
    }

``command`` is the argv to execute (no shell; write ``["sh", "-c", "..."]``
for one), run in the directory itself. ``stop_signal`` (default
``SIGTERM``) is what a graceful shutdown sends.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from powerdrivers_procs._proc import parse_signal

FILE_NAME = "instances.json"
DEFAULT_STOP_SIGNAL = signal.SIGTERM
_KEYS = frozenset({"command", "stop_signal"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@+-]{0,127}$")

#: Signals a graceful shutdown may not use: SIGKILL is power_off's; the job-control
#: signals are pause's and would not end the process; a fault signal would be
#: indistinguishable from a crash (see the native-state table).
FAULT_SIGNALS = frozenset(
    {
        signal.SIGSEGV,
        signal.SIGBUS,
        signal.SIGILL,
        signal.SIGFPE,
        signal.SIGABRT,
        signal.SIGSYS,
        signal.SIGTRAP,
        signal.SIGXCPU,
        signal.SIGXFSZ,
    }
)
_NOT_STOP_SIGNALS = FAULT_SIGNALS | {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGCONT,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
}


class DefinitionError(ValueError):
    """A definition given by a caller (``define``) is invalid."""


class BadFileError(ValueError):
    """A file of the directory (``instances.json``, the driver's state) cannot be used.

    ``code`` names the problem for :class:`powerdrivers.HypervisorError`.
    """

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


def instance_id(name: str) -> str:
    """Return the stable id of the instance called ``name`` (a UUID5 of the name)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"powerdrivers-procs:{name}"))


@dataclass(frozen=True, slots=True)
class Definition:
    """One instance: its name, the argv it runs and the signal that asks it to stop."""

    name: str
    command: tuple[str, ...]
    stop_signal: signal.Signals = DEFAULT_STOP_SIGNAL

    @property
    def id(self) -> str:
        """The instance's stable id."""
        return instance_id(self.name)

    def to_json(self) -> dict[str, Any]:
        """Return the definition as it is written in ``instances.json``."""
        entry: dict[str, Any] = {"command": list(self.command)}
        if self.stop_signal is not DEFAULT_STOP_SIGNAL:
            entry["stop_signal"] = self.stop_signal.name
        return entry


def make_definition(name: object, command: object, stop_signal: object = None) -> Definition:
    """Validate a definition; raise :class:`DefinitionError` saying what is wrong."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise DefinitionError(
            f"instance name {name!r} must be 1-128 letters, digits or '_.@+-', "
            "starting with a letter or digit"
        )
    if (
        isinstance(command, (str, bytes))
        or not isinstance(command, Sequence)
        or not command
        or not all(isinstance(arg, str) and arg and "\0" not in arg for arg in command)
    ):
        raise DefinitionError(
            f"{name}: command must be a non-empty list of non-empty strings (an argv), not {command!r}"
        )
    signum = DEFAULT_STOP_SIGNAL
    if stop_signal is not None:
        if not isinstance(stop_signal, (str, int)) or isinstance(stop_signal, bool):
            raise DefinitionError(f"{name}: stop_signal must be a signal name such as 'SIGINT'")
        try:
            signum = parse_signal(stop_signal)
        except ValueError as error:
            raise DefinitionError(f"{name}: stop_signal: {error}") from None
        if signum in _NOT_STOP_SIGNALS:
            raise DefinitionError(
                f"{name}: {signum.name} cannot be a stop signal (it would not ask the process to end, "
                "or its end would read as a crash)"
            )
    return Definition(name, tuple(command), signum)


def load(directory: Path) -> dict[str, Definition]:
    """Read ``instances.json`` (none yet: no instances), in file order."""
    path = directory / FILE_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise BadFileError(f"{path} is not valid JSON: {error}", "invalid-definitions") from None
    if not isinstance(document, dict):
        raise BadFileError(f"{path} must hold an object mapping names to definitions", "invalid-definitions")
    definitions = {}
    for name, entry in document.items():
        try:
            if not isinstance(entry, dict):
                raise DefinitionError(f"{name}: a definition is an object with a 'command'")
            unknown = sorted(set(entry) - _KEYS)
            if unknown:
                raise DefinitionError(
                    f"{name}: unknown key {', '.join(unknown)}; accepted: command, stop_signal"
                )
            definitions[name] = make_definition(name, entry.get("command"), entry.get("stop_signal"))
        except DefinitionError as error:
            raise BadFileError(f"{path}: {error}", "invalid-definitions") from None
    return definitions


def save(directory: Path, definitions: Mapping[str, Definition]) -> None:
    """Write ``instances.json`` atomically (a reader never sees half a file)."""
    write_json(directory / FILE_NAME, {name: d.to_json() for name, d in definitions.items()})


def write_json(path: Path, document: object) -> None:
    """Write ``document`` to ``path`` through a temporary file renamed over it."""
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as output:
            json.dump(document, output, indent=2)
            output.write("\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
