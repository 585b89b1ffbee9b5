"""Opening a store that cannot be: one-line ``StoreError``s, never the URL's password."""

from __future__ import annotations

import logging
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import exc

from powerdrivers import ConfigurationError, InstanceReading, PowerState
from powerdrivers.keeper import Cause, InvalidStoreURL, StoreError, StoreUnavailable
from powerdrivers.keeper import _store_db as store_db
from powerdrivers.keeper._store import SqlStore, open_store
from powerdrivers.keeper._store_db import StoreLocation

SECRET = "s3cr3t-Pa55"


def opening_fails(url: str, kind: type[StoreError] = StoreError) -> str:
    with pytest.raises(kind) as caught:
        SqlStore(url)
    message = str(caught.value)
    assert "\n" not in message and "Traceback" not in message
    assert SECRET not in message and SECRET not in repr(caught.value)
    return message


@pytest.mark.parametrize("url", ["", "   ", "not a url", "://nothing"])
def test_a_url_that_is_no_database_url_is_refused(url: str) -> None:
    opening_fails(url, InvalidStoreURL)
    assert issubclass(InvalidStoreURL, ConfigurationError)  # the caller's input: exit 2 in the CLI


def test_an_unknown_database_kind_is_refused_without_its_password() -> None:
    message = opening_fails(f"nosuchdb://admin:{SECRET}@db.example/keeper", InvalidStoreURL)
    assert "nosuchdb://admin:" in message


def test_a_database_driver_sqlalchemy_does_not_know_is_refused_without_the_password() -> None:
    message = opening_fails(f"mssql+nosuchdriver://admin:{SECRET}@db.example/keeper", InvalidStoreURL)
    assert "not a database this store knows" in message


def test_an_in_memory_sqlite_database_is_refused() -> None:
    assert "in-memory" in opening_fails("sqlite://", InvalidStoreURL)
    assert "in-memory" in opening_fails("sqlite:///:memory:", InvalidStoreURL)


def test_a_folder_that_cannot_be_made_leaves_the_store_unavailable(tmp_path: Path) -> None:
    (tmp_path / "plain-file").write_text("")
    message = opening_fails(f"sqlite:///{tmp_path / 'plain-file' / 'keeper.db'}", StoreUnavailable)
    assert "make the database's folder" in message


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "keeper.db").write_bytes(b"this is not SQLite" * 100)
    assert "not a database" in opening_fails(f"sqlite:///{tmp_path / 'keeper.db'}")


def test_a_database_that_goes_away_makes_calls_fail_with_a_store_error(
    store_url: str, tmp_path: Path
) -> None:
    store = SqlStore(store_url)
    store.close()
    for path in tmp_path.glob("keeper.db*"):
        path.unlink()
    (tmp_path / "keeper.db").mkdir()  # now a folder: SQLite cannot open it
    with pytest.raises(StoreUnavailable, match="cannot read the hosts") as caught:
        store.hosts()
    assert "\n" not in str(caught.value)


def test_the_password_is_never_in_the_repr_nor_in_a_driver_s_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    location = StoreLocation(f"postgresql+psycopg://keeper:{SECRET}@db.example:5432/keeper")
    assert SECRET not in location.redacted and "keeper@db.example" not in location.redacted
    problem = exc.OperationalError(
        "connect", {}, Exception(f"could not connect with password={SECRET}\nsecond line")
    )
    error = location.error("connect", problem)
    assert isinstance(error, StoreUnavailable)
    assert SECRET not in str(error) and "\n" not in str(error)
    assert "could not connect with password=***" in str(error)
    with pytest.raises(StoreError) as caught:
        open_store(f"postgresql+nosuchdriver://keeper:{SECRET}@db.example/keeper")
    assert SECRET not in str(caught.value)
    assert SECRET not in caplog.text


def test_the_store_s_repr_shows_the_url_redacted(tmp_path: Path) -> None:
    store = SqlStore(f"sqlite:///{tmp_path / 'k.db'}", retention=7)
    assert repr(store) == f"SqlStore('sqlite:///{tmp_path / 'k.db'}', retention=7)"
    assert store.redacted_url == f"sqlite:///{tmp_path / 'k.db'}" and store.retention == 7
    store.close()


def test_a_store_locked_by_another_writer_is_unavailable_and_records_no_intent(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_S", 0.2)
    store = SqlStore(store_url)
    store.register_host("h1", "fake", None)
    store.record_observation(
        "h1",
        InstanceReading("i-1", "one", PowerState.RUNNING, None, "running", None, datetime.now(UTC)),
        previous=None,
        cause=Cause.APPEARED,
    )
    other = sqlite3.connect(tmp_path / "keeper.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
    try:
        with pytest.raises(
            StoreUnavailable, match="cannot record an intent to start 'i-1': database is locked"
        ):
            store.open_action("i-1", "start", {}, "keeper")
        assert store.open_actions() == []  # reads go on meanwhile (WAL)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.open_action("i-1", "start", {}, "keeper").status.value == "pending"
    store.close()


def test_a_reachability_that_did_not_change_needs_no_write_lock(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_db, "BUSY_TIMEOUT_S", 0.2)
    store = SqlStore(store_url)
    store.register_host("h1", "fake", None)
    other = sqlite3.connect(tmp_path / "keeper.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert store.set_host_reachable("h1", True, datetime.now(UTC)) is False  # what every resync says
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.set_host_reachable("h1", False, datetime.now(UTC), "gone")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.hosts()[0].reachable
    store.close()
