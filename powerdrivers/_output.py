"""Rendering CLI results as aligned tables or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, TextIO


def print_json(value: Any, stream: TextIO) -> None:
    """Print ``value`` as indented JSON."""
    # allow_nan=False: JSON has no Infinity or NaN, and a reader would choke on them.
    stream.write(json.dumps(value, indent=2, allow_nan=False) + "\n")


def print_json_line(value: Any, stream: TextIO) -> None:
    """Print ``value`` as one line of JSON and flush, for streams read line by line."""
    stream.write(json.dumps(value, separators=(",", ":"), allow_nan=False) + "\n")
    stream.flush()


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], stream: TextIO) -> None:
    """Print ``rows`` under ``headers``, columns aligned; ``None`` shows as ``-``."""
    cells = [[_cell(value) for value in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    for row in [list(headers), *cells]:
        stream.write(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n"
        )


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, (list, tuple)):
        return ",".join(str(item) for item in value) or "-"
    return str(value)
