"""Shared fixtures: real test plugin distributions, installed once per source version."""

from __future__ import annotations

import hashlib
import importlib
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from postgres_cluster import ClusterUnavailable, PostgresCluster
from stevedore.extension import ExtensionManager

ROOT = Path(__file__).resolve().parent.parent
DISTRIBUTIONS = Path(__file__).resolve().parent / "distributions"


def _sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(DISTRIBUTIONS.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
            digest.update(str(path.relative_to(DISTRIBUTIONS)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def test_plugins_dir() -> Path:
    """A directory where the test plugin distributions are pip-installed (with their metadata)."""
    target = ROOT / ".cache" / "test-plugins" / _sources_digest()
    if not (target / ".complete").exists():
        target.mkdir(parents=True, exist_ok=True)
        # Built from a copy so that setuptools leaves no build/ or egg-info in the tree.
        sources = target.with_name(target.name + "-src")
        shutil.rmtree(sources, ignore_errors=True)
        shutil.copytree(DISTRIBUTIONS, sources, ignore=shutil.ignore_patterns("__pycache__"))
        subprocess.run(
            [
                sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                "--no-deps", "--no-build-isolation", "--upgrade", "--target", str(target),
                *sorted(str(path) for path in sources.iterdir() if (path / "pyproject.toml").exists()),
            ],
            check=True,
        )  # fmt: skip
        shutil.rmtree(sources)
        (target / ".complete").touch()
    return target


@pytest.fixture
def test_plugins(test_plugins_dir: Path) -> Iterator[Path]:
    """Make the test plugins visible to this process's entry-point scan, and hide them afterwards."""
    sys.path.insert(0, str(test_plugins_dir))
    _forget_entry_points()
    try:
        yield test_plugins_dir
    finally:
        sys.path.remove(str(test_plugins_dir))
        for module in [name for name in sys.modules if name.startswith("pd_")]:
            del sys.modules[module]
        _forget_entry_points()


def _forget_entry_points() -> None:
    ExtensionManager.ENTRY_POINT_CACHE.clear()
    importlib.invalidate_caches()


@pytest.fixture
def plugin_env(test_plugins_dir: Path) -> dict[str, str]:
    """Environment for a subprocess that should see the test plugins."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(test_plugins_dir), env.get("PYTHONPATH")]))
    return env


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fake hypervisor in a state file, selected through the environment as users do."""
    path = tmp_path / "state.json"
    monkeypatch.setenv("POWERDRIVERS_DRIVER", "fake")
    monkeypatch.setenv("POWERDRIVERS_URI", f"fake://{path}")
    monkeypatch.delenv("POWERDRIVERS_PASSWORD", raising=False)
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster for the session (skipped when unavailable, a failure under CI=true)."""
    try:
        cluster = PostgresCluster()
    except ClusterUnavailable as missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {missing}")
        pytest.skip(f"PostgreSQL unavailable: {missing}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def postgres_url(postgres: PostgresCluster) -> Iterator[str]:
    """The URL (password included) of a fresh, empty database of the session's cluster.

    A test may stop the cluster; it is started again afterwards for the next test.
    """
    url = postgres.create_database()
    yield url
    if postgres.postmaster_pid() is None:
        postgres.start()
