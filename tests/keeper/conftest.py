"""The keeper tests' store: a real SQL store on a fresh SQLite file per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from powerdrivers.keeper._store import SqlStore


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    """The URL of a fresh SQLite file (not created yet: opening the store creates and migrates it)."""
    return f"sqlite:///{tmp_path / 'keeper.db'}"


@pytest.fixture
def store(store_url: str) -> Iterator[SqlStore]:
    """An open, migrated, empty store on ``store_url``; closed after the test."""
    opened = SqlStore(store_url)
    try:
        yield opened
    finally:
        opened.close()
