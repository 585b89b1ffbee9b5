"""Where the store is by default, and that the core stays light without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from powerdrivers.keeper import SqlStore, StoreError, default_store_url, open_store
from powerdrivers.keeper._paths import default_store_path


def test_the_default_store_is_a_file_in_the_xdg_state_directory(tmp_path: Path) -> None:
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert default_store_url(environ) == f"sqlite:///{tmp_path / 'state' / 'powerdrivers' / 'keeper.db'}"


def test_without_xdg_state_home_the_default_is_under_the_home_directory(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    expected = Path("/home/someone/.local/state/powerdrivers/keeper.db")
    assert default_store_path({}) == expected
    assert default_store_path({"XDG_STATE_HOME": "relative/state"}) == expected  # the spec says ignore it
    assert default_store_url({"XDG_STATE_HOME": ""}) == f"sqlite:///{expected}"


def test_powerdrivers_store_overrides_the_default(tmp_path: Path) -> None:
    url = "postgresql+psycopg://keeper@db.example/keeper"
    assert default_store_url({"POWERDRIVERS_STORE": url, "XDG_STATE_HOME": str(tmp_path)}) == url
    assert default_store_url({"POWERDRIVERS_STORE": "  "}).startswith("sqlite:///")


def test_open_store_creates_the_default_file_and_its_folders(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("POWERDRIVERS_STORE", raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    store = open_store()
    try:
        assert store.hosts() == []
    finally:
        store.close()
    assert (tmp_path / "state" / "powerdrivers" / "keeper.db").is_file()
    monkeypatch.setenv("POWERDRIVERS_STORE", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    open_store().close()
    assert (tmp_path / "elsewhere.db").is_file()


def test_a_missing_database_driver_says_so(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="database driver is not installed"):
        SqlStore("postgresql+pg8000://keeper@db.example/keeper")  # pg8000 is not a dependency


def test_importing_powerdrivers_imports_no_database_library() -> None:
    probe = (
        "import sys, powerdrivers, powerdrivers.conformance\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic')"
        " or m.startswith('powerdrivers.keeper'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_sqlite_connections_use_wal_a_busy_timeout_and_foreign_keys(store: SqlStore) -> None:
    with store._engine.connect() as connection:
        settings = {
            name: connection.exec_driver_sql(f"PRAGMA {name}").scalar()
            for name in ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        }
    assert settings == {"journal_mode": "wal", "synchronous": 1, "foreign_keys": 1, "busy_timeout": 30000}


def test_opening_a_database_already_at_head_does_not_load_alembic(store_url: str) -> None:
    SqlStore(store_url).close()
    probe = (
        "import sys\n"
        "from powerdrivers.keeper import SqlStore\n"
        f"SqlStore({store_url!r}).close()\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
