"""The store's Alembic migrations: head builds the tables the code queries; upgrades run on open."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, inspect, text
from store_support import both_databases, is_postgresql

from powerdrivers import InstanceReading, InstanceVcpuStats, PowerState, VcpuStats
from powerdrivers.keeper import Cause, Policy, StoreError
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


@both_databases
def test_a_database_at_0004_gains_the_vcpu_samples_and_keeps_its_history(store_url: str) -> None:
    store = SqlStore(store_url)
    store.register_host("h1", "fake", None)
    at = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
    reading = InstanceReading("i-1", "web-1", PowerState.RUNNING, None, "running", None, at)
    store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
    store.close()
    command.downgrade(alembic_config(store_url), "0004")
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert not inspect(connection).has_table("vcpu_samples")
    upgraded = SqlStore(store_url)
    try:
        assert [record.to_state for record in upgraded.history("i-1")] == [PowerState.RUNNING]
        stats = InstanceVcpuStats("i-1", "web-1", 5.0, (VcpuStats(0, 0.5, 0.25, 0.25, 5.0),))
        assert upgraded.record_vcpu_samples("h1", at, [stats]) == 1
        assert [sample.running for sample in upgraded.vcpu_samples("i-1", at - timedelta(seconds=1))] == [0.5]
    finally:
        upgraded.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
        assert differences(connection) == []
    engine.dispose()


def _pages_agree(store: SqlStore) -> list[dict[str, object]]:
    """Every instance through the JSON the database keeps, checked against the views' own dicts."""
    views, _ = store.instances_page(limit=1000)
    kept, _ = store.instances_page_json(limit=1000)
    assert json.loads(kept) == [view.to_dict() for view in views]
    written: list[dict[str, object]] = json.loads(kept)
    return written


@both_databases
def test_a_database_at_0005_gains_the_kept_json_of_the_instances_it_has(store_url: str) -> None:
    store = SqlStore(store_url)
    store.register_host("h1", "fake", None)
    at = datetime(2026, 12, 3, 4, 0, 0, 250000, tzinfo=UTC)
    for number in range(3):
        reading = InstanceReading(
            f"i-{number}", f"web-{number}", PowerState.RUNNING, None, "running", None, at
        )
        store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
    store.set_backoff("i-1", 2, at + timedelta(minutes=1))
    store.close()
    command.downgrade(alembic_config(store_url), "0005")
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert not inspect(connection).has_table("instance_json")
    upgraded = SqlStore(store_url)
    try:
        written = _pages_agree(upgraded)
        assert [item["id"] for item in written] == ["i-0", "i-1", "i-2"]
        assert written[1]["backoff_until"] == "2026-12-03T04:01:00.250000+00:00"
        # The triggers came with the table: a change after the upgrade is kept too.
        upgraded.set_policy("i-2", Policy.ALWAYS, "ops")
        assert _pages_agree(upgraded)[2]["policy"] == "always"
    finally:
        upgraded.close()
    with engine.connect() as connection:
        assert differences(connection) == []
    engine.dispose()


@both_databases
def test_the_kept_json_follows_every_writer_of_the_instances_own_sql_included(store_url: str) -> None:
    store = SqlStore(store_url)
    try:
        store.register_host("h1", "fake", None)
        store.register_host("h2", "fake", None)
        at = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
        for number in range(2):
            reading = InstanceReading(
                f"i-{number}", f"db-{number}", PowerState.PAUSED, None, "paused", "user", at
            )
            store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
        engine = create_engine(store_url)
        with engine.begin() as connection:
            # An operator's own SQL: a rename, a move to another host, and a row gone.
            connection.execute(text("UPDATE instances SET name = 'renamed' WHERE id = 'i-0'"))
            connection.execute(text("UPDATE instances SET host = 'h2' WHERE id = 'i-0'"))
            connection.execute(text("DELETE FROM instances WHERE id = 'i-1'"))
        with engine.connect() as connection:
            kept = connection.execute(text("SELECT host, id FROM instance_json")).all()
        engine.dispose()
        assert [tuple(row) for row in kept] == [("h2", "i-0")]
        [item] = _pages_agree(store)
        assert (item["name"], item["host"]) == ("renamed", "h2")
    finally:
        store.close()


@both_databases
def test_a_downgrade_to_0005_takes_the_kept_json_and_its_triggers_away(store_url: str) -> None:
    store = SqlStore(store_url)
    store.register_host("h1", "fake", None)
    store.close()
    command.downgrade(alembic_config(store_url), "0005")
    engine = create_engine(store_url)
    try:
        with engine.begin() as connection:
            assert not inspect(connection).has_table("instance_json")
            # No trigger is left to write into the table that is gone.
            connection.execute(
                text(
                    "INSERT INTO instances (id, host, name, power_state, native_state, observed_at, policy, "
                    "stale, quarantined, failures, action_failures, records, change_seq) VALUES "
                    "('i-9', 'h1', 'n', 'running', 'running', '2026-12-03 04:00:00.000000', 'manual', "
                    "false, false, 0, 0, 0, 0)"
                )
            )
    finally:
        engine.dispose()


@both_databases
def test_a_left_over_object_never_stops_the_store_recording_its_instance(store_url: str) -> None:
    store = SqlStore(store_url)
    engine = create_engine(store_url)
    try:
        store.register_host("h1", "fake", None)
        with engine.begin() as connection:
            # As a writer the triggers did not see would leave it (a data-only restore, say).
            connection.execute(
                text(
                    "INSERT INTO instance_json (host, id, power_state, policy, document) "
                    "VALUES ('h1', 'i-7', 'crashed', 'always', '{\"id\":\"i-7\"}')"
                )
            )
        at = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
        reading = InstanceReading("i-7", "back", PowerState.RUNNING, None, "running", None, at)
        store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
        [item] = _pages_agree(store)
        assert (item["name"], item["policy"]) == ("back", "manual")
    finally:
        engine.dispose()
        store.close()


@both_databases
def test_emptying_the_instances_table_at_once_empties_the_kept_json(store_url: str) -> None:
    store = SqlStore(store_url)
    engine = create_engine(store_url)
    try:
        store.register_host("h1", "fake", None)
        at = datetime(2026, 12, 3, 4, 0, tzinfo=UTC)
        for number in range(3):
            reading = InstanceReading(f"i-{number}", "vm", PowerState.RUNNING, None, "running", None, at)
            store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
        # PostgreSQL's TRUNCATE fires no row trigger; SQLite has none (DELETE fires them).
        emptying = "TRUNCATE instances" if is_postgresql(store_url) else "DELETE FROM instances"
        with engine.begin() as connection:
            connection.execute(text(emptying))
        assert store.instances_page_json(limit=1000) == ("[]", None)
        store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
        assert [item["id"] for item in _pages_agree(store)] == ["i-2"]
    finally:
        engine.dispose()
        store.close()
