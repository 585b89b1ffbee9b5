"""The store's Alembic migrations: head builds the tables the code queries; upgrades run on open."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, text
from store_support import both_databases

from powerdrivers.keeper import StoreError
from powerdrivers.keeper._schema import SCHEMA_REVISION, metadata
from powerdrivers.keeper._store import SqlStore
from powerdrivers.keeper._store_migrate import MIGRATIONS


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    return config


def differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, metadata))


def test_the_code_s_revision_is_the_migrations_head(store_url: str) -> None:
    assert ScriptDirectory.from_config(alembic_config(store_url)).get_current_head() == SCHEMA_REVISION


@both_databases
def test_an_empty_database_upgraded_to_head_matches_the_tables_the_code_uses(store_url: str) -> None:
    SqlStore(store_url).close()
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
        assert differences(connection) == []
        # The comparison does see a difference when there is one.
        connection.execute(text("DROP INDEX ix_history_instance_id_id"))
        assert differences(connection) != []
    engine.dispose()


def test_the_partial_unique_index_is_partial(store_url: str) -> None:
    SqlStore(store_url).close()
    engine = create_engine(store_url)
    with engine.connect() as connection:
        sql = connection.execute(
            text("SELECT sql FROM sqlite_master WHERE name = 'ux_actions_one_open'")
        ).scalar()
    engine.dispose()
    assert sql is not None and "UNIQUE" in sql and "WHERE status IN ('pending', 'running')" in sql


@both_databases
def test_a_database_at_an_older_revision_is_upgraded_when_the_store_opens_it(store_url: str) -> None:
    config = alembic_config(store_url)
    SqlStore(store_url).close()
    command.downgrade(config, "base")
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 0
    store = SqlStore(store_url)
    assert store.hosts() == []
    store.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
        assert differences(connection) == []
    engine.dispose()


def test_an_operator_s_own_alembic_run_upgrades_the_same_way(store_url: str) -> None:
    command.upgrade(alembic_config(store_url), "head")
    engine = create_engine(store_url)
    with engine.connect() as connection:  # the store's own engine made the file: WAL
        assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert differences(connection) == []
    engine.dispose()
    store = SqlStore(store_url)
    assert store.hosts() == []
    store.close()


def test_migrations_do_not_run_offline(store_url: str) -> None:
    with pytest.raises(CommandError, match="online only"):
        command.upgrade(alembic_config(store_url), "head", sql=True)


@both_databases
def test_a_database_from_a_newer_version_is_refused_not_guessed_at(store_url: str) -> None:
    SqlStore(store_url).close()
    engine = create_engine(store_url)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    with pytest.raises(StoreError, match=r"cannot upgrade the schema: .*9999") as caught:
        SqlStore(store_url)
    assert "\n" not in str(caught.value)
