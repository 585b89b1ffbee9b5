"""Running the CLI in-process the way the CLI tests do: its exit code and what it printed."""

from __future__ import annotations

import json
from typing import Any

import pytest

from powerdrivers._cli import main


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``powerdrivers ARGV``; return its exit code, standard output and standard error."""
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    """Run ``powerdrivers -f json ARGV``, which must succeed; return its parsed output."""
    code, out, err = run(capsys, "-f", "json", *argv)
    assert code == 0, err
    return json.loads(out)
