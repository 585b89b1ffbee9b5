"""Every driver distribution here depends on the core by the one documented versioning rule.

The rule (docs/writing-a-driver.rst, "Versioning"): depend on ``powerdrivers``
from the first release implementing the interface you declare up to, not
including, the next *breaking series*: the next major version, or below 1.0 the
next minor. The example plugin's README and the guide quote the requirement; they
must quote the one the example really declares.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

import powerdrivers

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "powerdrivers-procs"
DRIVER_DISTRIBUTIONS = [*sorted((ROOT / "plugins").glob("*/pyproject.toml")), EXAMPLE / "pyproject.toml"]
_REQUIREMENT = re.compile(r"powerdrivers>=(?P<lower>\d+(?:\.\d+){1,2}),<(?P<upper>\d+(?:\.\d+)?)")


def _release(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def next_breaking_series(version: tuple[int, ...]) -> tuple[int, ...]:
    """The first release that may change the interface incompatibly after ``version``."""
    major, minor = version[0], version[1]
    return (0, minor + 1) if major == 0 else (major + 1,)


def _core_requirement(pyproject: Path) -> str:
    dependencies = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    (requirement,) = [item for item in dependencies if re.match(r"powerdrivers\b(?!-)", item)]
    return str(requirement)


@pytest.mark.parametrize("pyproject", DRIVER_DISTRIBUTIONS, ids=lambda path: path.parent.name)
def test_a_driver_distribution_depends_on_the_core_by_the_rule(pyproject: Path) -> None:
    requirement = _core_requirement(pyproject)
    match = _REQUIREMENT.fullmatch(requirement)
    assert match, f"{requirement!r} is not powerdrivers>=LOWER,<UPPER"
    lower, upper = _release(match["lower"]), _release(match["upper"])
    assert upper == next_breaking_series(lower), (
        f"{requirement}: the upper bound is not the next breaking series"
    )
    core = _release(powerdrivers.__version__)
    assert lower <= core < upper, f"{requirement} excludes this core, {powerdrivers.__version__}"


def test_the_guide_and_the_example_readme_quote_the_example_requirement() -> None:
    requirement = _core_requirement(EXAMPLE / "pyproject.toml")
    guide = (ROOT / "docs" / "writing-a-driver.rst").read_text()
    readme = (EXAMPLE / "README.md").read_text()
    assert f'dependencies = ["{requirement}"' in guide
    assert f"``{requirement}`` today" in guide
    assert f'dependencies = ["{requirement}"]' in readme
    lower_upper = requirement.removeprefix("powerdrivers")
    assert f"`{lower_upper}` here" in readme
