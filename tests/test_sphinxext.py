"""powerdrivers.sphinxext in a third party's Sphinx project, and import powerdrivers staying light."""

from __future__ import annotations

import html
import subprocess
import sys
from pathlib import Path

import powerdrivers

PAGE = """\
My driver
=========

.. powerdrivers-native-states:: {driver}

.. powerdrivers-power-states::

.. powerdrivers-transitions::

.. powerdrivers-operation-table::

.. powerdrivers-event-kinds::

.. powerdrivers-capabilities::

.. powerdrivers-mapping:: powerdrivers._states:_STATE_DESCRIPTIONS
   :headers: State, Meaning
"""


def _build(tmp_path: Path, driver: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    source = tmp_path / "src"
    source.mkdir()
    # Smart quotes off: the page then quotes each why exactly as the code does.
    (source / "conf.py").write_text(
        'project = "thirdparty"\nextensions = ["powerdrivers.sphinxext"]\nsmartquotes = False\n'
    )
    (source / "index.rst").write_text(PAGE.format(driver=driver))
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", str(source), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    return result, out / "index.html"


def test_a_third_party_project_renders_a_drivers_table_with_its_why(tmp_path: Path) -> None:
    result, page = _build(tmp_path, "fake")
    assert result.returncode == 0, result.stderr
    text = html.unescape(page.read_text())
    for row in powerdrivers.load_driver_class("fake").native_states:
        assert row.why in text
    assert "(any)" in text and "destroyed" in text
    for operation in powerdrivers.Operation:
        assert operation.value in text


def test_a_driver_that_cannot_be_loaded_is_a_build_warning(tmp_path: Path) -> None:
    result, _ = _build(tmp_path, "nosuch")
    assert result.returncode != 0
    assert "powerdrivers-native-states: cannot load driver 'nosuch'" in result.stderr


def test_importing_powerdrivers_imports_neither_sphinx_nor_docutils() -> None:
    script = (
        "import sys, powerdrivers\n"
        "print(sorted({name.split('.')[0] for name in sys.modules} & {'sphinx', 'docutils'}))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
