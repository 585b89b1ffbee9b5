"""powerdrivers.sphinxext's edges: tables refused when malformed, titled, and a mapping that is not there."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from docutils import nodes

from powerdrivers.sphinxext import build_table


def test_a_table_needs_one_width_per_header() -> None:
    with pytest.raises(ValueError, match="2 headers but 1 widths"):
        build_table(["State", "Meaning"], [], [1])


def test_every_row_needs_one_cell_per_header() -> None:
    with pytest.raises(ValueError, match="has 1 cells, not 2"):
        build_table(["State", "Meaning"], [["running"]], [1, 3])


def test_a_titled_table_carries_its_title_first() -> None:
    table = build_table(["State"], [["running"]], [1], title="Power states")
    assert isinstance(table[0], nodes.title) and table[0].astext() == "Power states"
    assert not isinstance(build_table(["State"], [["running"]], [1])[0], nodes.title)


def test_a_mapping_that_cannot_be_imported_is_a_build_warning_naming_it(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    (source / "conf.py").write_text('project = "thirdparty"\nextensions = ["powerdrivers.sphinxext"]\n')
    (source / "index.rst").write_text(
        "Mapping\n=======\n\n.. powerdrivers-mapping:: no_such_module_here:TABLE\n   :headers: A, B\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(source), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode != 0
    assert "powerdrivers-mapping" in result.stderr and "no_such_module_here" in result.stderr
    assert "Traceback" not in result.stderr
