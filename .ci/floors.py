"""Install the lowest declared version of every dependency and run the tests on them.

A floor in a pyproject (``stevedore>=5.6``) is a promise: that version
works. This keeps it true. Every ``>=`` floor of every distribution's
runtime dependencies and ``test`` and ``keeper`` extras is pinned to exactly that version
in a separate virtualenv, and the suite's fast part (the core, the fake,
Xen against its simulator, libvirt's test driver) runs there. Tools that
only check the code (mypy, ruff, Sphinx) are not part of it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-floors"
DISTRIBUTIONS = [ROOT, *sorted((ROOT / "plugins").iterdir()), ROOT / "docs/examples/powerdrivers-procs"]
#: Checkers, not test dependencies: their floors are kept by `make lint`, `typecheck` and `docs`.
NOT_RUN = {"mypy", "ruff", "sphinx", "types-docutils"}
#: The extras whose floors are kept here besides ``test``: their code runs in the fast tests.
EXTRAS = ["test", "keeper", "service", "postgresql"]
TESTS = [
    "tests",
    "plugins/fake/tests",
    "plugins/xen/tests",
    "plugins/libvirt/tests/test_libvirt_testdriver.py",
    "plugins/libvirt/tests/test_libvirt_mapping.py",
    "docs/examples/powerdrivers-procs/tests",
]
#: Tests that run one of the NOT_RUN checkers, which this virtualenv does not install.
IGNORED = [
    "--ignore=tests/test_out_of_tree_typing.py",
    "--ignore=tests/test_sphinxext.py",
    "--ignore=tests/test_sphinxext_edges.py",
]
_FLOOR = re.compile(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?\s*>=\s*([0-9][0-9A-Za-z.]*)")


def floors() -> dict[str, str]:
    """Return every third-party dependency's declared floor, by name."""
    found: dict[str, str] = {}
    for folder in DISTRIBUTIONS:
        project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
        extras = project.get("optional-dependencies", {})
        requirements = [
            *project.get("dependencies", []),
            *(r for extra in EXTRAS for r in extras.get(extra, [])),
        ]
        for requirement in requirements:
            match = _FLOOR.match(requirement)
            if match and match[1].lower() not in NOT_RUN and not match[1].startswith("powerdrivers"):
                name, version = match[1].lower(), match[2]
                if found.setdefault(name, version) != version:
                    sys.exit(f"floors: {name} has two floors: {found[name]} and {version}")
    return found


def _release(version: str) -> tuple[int, ...]:
    """Return a plain release number without trailing zeros: 5.6 and 5.6.0 are one version."""
    numbers = [int(part) for part in version.split(".") if part.isdigit()]
    while numbers and numbers[-1] == 0:
        numbers.pop()
    return tuple(numbers)


def main() -> int:
    """Build the floors virtualenv, install the pinned floors, run the tests; return pytest's code."""
    pins = floors()
    constraints = ROOT / ".cache" / "floors-constraints.txt"
    constraints.parent.mkdir(exist_ok=True)
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pins.items())))
    print("floors: " + ", ".join(f"{name}=={version}" for name, version in sorted(pins.items())), flush=True)
    if not (VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    python = str(VENV / "bin" / "python")
    subprocess.run(
        [
            python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-c", str(constraints),
            *sorted(pins), "-e", str(ROOT), "-e", str(ROOT / "plugins/fake"), "-e", str(ROOT / "plugins/xen"),
            "-e", str(ROOT / "plugins/libvirt"), "-e", str(ROOT / "docs/examples/powerdrivers-procs"),
        ],
        check=True,
    )  # fmt: skip
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.lower()
    versions = dict(line.replace("_", "-").split("==", 1) for line in installed.splitlines() if "==" in line)
    for name, version in pins.items():
        if _release(versions.get(name, "")) != _release(version):
            sys.exit(f"floors: {name}=={version} did not install (found {versions.get(name)})")
    return subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", *IGNORED, *TESTS], check=False, cwd=ROOT
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
