"""The keeper tests' store: a real SQL store, on a fresh SQLite file per test or a fresh PostgreSQL database.

A test runs on SQLite unless it (or its module) is marked with ``store_support.both_databases``:
then it runs once per database, the PostgreSQL run on a database of the session's throwaway
cluster (``postgres_url``, from the tests' top conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powerdrivers.keeper._store import SqlStore


@pytest.fixture
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a fresh, empty database (not migrated yet: opening the store migrates it).

    SQLite (a file not created yet) unless the test is parametrized with ``"postgresql"``.
    """
    if getattr(request, "param", "sqlite") == "postgresql":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return f"sqlite:///{tmp_path / 'keeper.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """An open, migrated, empty store on ``store_url``; closed after the test."""
    opened = SqlStore(store_url)
    try:
        yield opened
    finally:
        opened.close()
