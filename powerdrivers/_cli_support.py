"""What the command line's commands share: exit codes, argument types, output and connecting.

Used by the core's commands (``_cli.py``) and the keeper's (``powerdrivers.keeper._cli``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from powerdrivers._driver import Driver
from powerdrivers._exceptions import (
    ConfigurationError,
    HypervisorConnectionError,
    InstanceNotFound,
    InvalidOption,
    InvalidStateTransition,
    PluginError,
    PowerDriversError,
    UnsupportedOperation,
)
from powerdrivers._loader import installed_driver_names, load_driver
from powerdrivers._output import print_json, print_table
from powerdrivers._secrets import SECRET_NAMES, Secret
from powerdrivers._values import parse_count, parse_duration

_T = TypeVar("_T")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_INVALID = 4
EXIT_CONNECTION = 5
EXIT_INTERRUPTED = 130

EXIT_CODES: tuple[tuple[type[PowerDriversError], int], ...] = (
    (PluginError, EXIT_USAGE),
    (ConfigurationError, EXIT_USAGE),
    (InstanceNotFound, EXIT_NOT_FOUND),
    (InvalidStateTransition, EXIT_INVALID),
    (UnsupportedOperation, EXIT_INVALID),
    (HypervisorConnectionError, EXIT_CONNECTION),
)

ENV_DRIVER = "POWERDRIVERS_DRIVER"
ENV_URI = "POWERDRIVERS_URI"
ENV_PASSWORD = "POWERDRIVERS_PASSWORD"  # noqa: S105  (the variable's name, not a secret)


class UsageError(Exception):
    """The command line itself is wrong."""


def exit_code_for(error: PowerDriversError) -> int:
    """Return the documented exit code for ``error``."""
    for error_class, code in EXIT_CODES:
        if isinstance(error, error_class):
            return code
    return EXIT_FAILED


def seconds(text: str) -> float:
    return argument(parse_duration, text)


def positive_seconds(text: str) -> float:
    return argument(lambda label, value: parse_duration(label, value, positive=True), text)


def count(text: str) -> int:
    return argument(lambda label, value: parse_count(label, value, minimum=1), text)


def argument(parse: Callable[[str, str], _T], text: str) -> _T:
    """Run one of the core's validators as an argparse type: its message, argparse's usage error."""
    try:
        return parse("the value", text)
    except ConfigurationError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def output_format(options: argparse.Namespace) -> str:
    return str(getattr(options, "format", "table"))


#: A table to print: its column headers and its rows.
Table = tuple[Sequence[str], Sequence[Sequence[object]]]


def emit(
    options: argparse.Namespace,
    value: Any,
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    more: Sequence[Table] = (),
) -> None:
    """Print a command's result: ``value`` as JSON under ``-f json``, else ``rows`` as a table.

    ``more`` tables follow the first, each after a blank line, when there are rows to show.
    """
    if output_format(options) == "json":
        print_json(value, sys.stdout)
        return
    print_table(headers, rows, sys.stdout)
    for more_headers, more_rows in more:
        if more_rows:
            sys.stdout.write("\n")
            print_table(more_headers, more_rows, sys.stdout)


def driver_name(options: argparse.Namespace, required: bool = True) -> str | None:
    name = getattr(options, "driver", None) or os.environ.get(ENV_DRIVER)
    if not name and required:
        listed = ", ".join(installed_driver_names()) or "none"
        raise UsageError(f"no driver given: use -d DRIVER or set {ENV_DRIVER}; installed drivers: {listed}")
    return name


def driver_options(options: argparse.Namespace) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for item in getattr(options, "option", []):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UsageError(f"option {item!r} is not KEY=VALUE")
        if key.lower() in SECRET_NAMES:
            raise InvalidOption(f"a {key} is never a flag: set {ENV_PASSWORD} instead")
        parsed[key] = value
    password = os.environ.get(ENV_PASSWORD)
    if password:
        parsed["password"] = Secret(password)
    return parsed


def connect(options: argparse.Namespace) -> Driver:
    name = driver_name(options)
    assert name is not None
    uri = getattr(options, "connect", None) or os.environ.get(ENV_URI) or None
    return load_driver(name, uri, **driver_options(options))
