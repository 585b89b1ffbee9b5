"""A driver outside this repository type-checks against an editable core with no MYPYPATH.

A third party installs the core with a plain ``pip install -e`` and runs mypy in
their own project. mypy follows only paths, never import hooks, so this holds only
while the core's editable install is a static path (``[tool.setuptools]`` in
pyproject.toml). The checked package is written to a temporary directory, outside
this repository and its mypy configuration, and mypy runs in the environment that
runs these tests, with ``MYPYPATH`` removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import powerdrivers

_PYPROJECT = """\
[tool.mypy]
strict = true
"""

_DRIVER = '''\
"""An out-of-tree driver, as a third party writes one."""

from __future__ import annotations

from typing import ClassVar

from powerdrivers import Capability, Driver, InstanceReading, NativeMapping, NativeStateTable, PowerState

STATES = NativeStateTable("oot", [NativeMapping("on", None, PowerState.RUNNING, None, "It runs.")])


class OutOfTreeDriver(Driver):
    """Drives nothing."""

    name: ClassVar[str] = "oot"
    interface_version: ClassVar[str] = "1.0"
    capabilities: ClassVar[frozenset[Capability]] = frozenset({Capability.START, Capability.POWER_OFF})
    native_states = STATES

    def _read_all(self) -> list[InstanceReading]:
        return []

    def _read_one(self, ref: str) -> InstanceReading:
        return self.native_states.reading(ref, ref, "on", None)

    def _start(self, instance: InstanceReading) -> None:
        pass

    def _power_off(self, instance: InstanceReading) -> None:
        pass
'''

# The same driver with a primitive whose return type breaks the core's signature:
# mypy can only report it when it reads the core's own annotations.
_BROKEN_DRIVER = _DRIVER.replace(
    "def _power_off(self, instance: InstanceReading) -> None:\n        pass",
    "def _power_off(self, instance: InstanceReading) -> int:\n        return 0",
)


def _mypy(project: Path, *modules: str) -> subprocess.CompletedProcess[str]:
    environment = {key: value for key, value in os.environ.items() if key != "MYPYPATH"}
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(project / ".mypy_cache"), *modules],
        cwd=project,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )


def test_the_core_under_test_is_this_checkout() -> None:
    # Otherwise the test below would type-check against some other installed copy.
    repository = Path(__file__).resolve().parent.parent
    assert Path(powerdrivers.__file__).resolve().is_relative_to(repository / "powerdrivers")


def test_an_out_of_tree_driver_type_checks_against_the_editable_core(tmp_path: Path) -> None:
    package = tmp_path / "powerdrivers_oot"
    package.mkdir()
    (tmp_path / "pyproject.toml").write_text(_PYPROJECT)
    (package / "__init__.py").write_text('"""An out-of-tree driver package."""\n')
    (package / "py.typed").write_text("")
    (package / "good.py").write_text(_DRIVER)
    (package / "broken.py").write_text(_BROKEN_DRIVER)

    result = _mypy(tmp_path, "powerdrivers_oot")

    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, result.stdout + result.stderr
    assert errors[0].startswith(str(Path("powerdrivers_oot", "broken.py")))
    assert 'Return type "int" of "_power_off" incompatible' in errors[0]
