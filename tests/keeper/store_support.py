"""Running a keeper test on each database the store supports."""

from __future__ import annotations

from typing import Final

import pytest

#: The databases of the ``store_url`` fixture.
DATABASES: Final = ("sqlite", "postgresql")

#: Runs the marked test (or module, as ``pytestmark``) once on SQLite and once on PostgreSQL.
both_databases = pytest.mark.parametrize("store_url", DATABASES, indirect=True)


def is_postgresql(url: str) -> bool:
    """Return whether a store URL is a PostgreSQL one."""
    return url.startswith("postgresql")
