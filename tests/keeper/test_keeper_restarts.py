"""What a keeper keeps across restarts: failed actions still count toward quarantine; old stores upgrade."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from engine_support import fake_host, running_keeper, wait_until
from powerdrivers_fake import instance_id
from sqlalchemy import create_engine, inspect, text

from powerdrivers import HypervisorError, Operation, PowerState
from powerdrivers.keeper import Policy, SqlStore
from powerdrivers.keeper._schema import SCHEMA_REVISION
from powerdrivers.keeper._store_migrate import MIGRATIONS

WEB1 = instance_id("web-1")


def test_failed_actions_count_toward_quarantine_across_keeper_restarts(store: SqlStore) -> None:
    settings = {"quarantine_after": 2, "backoff_base": 2}
    with fake_host() as driver:
        driver.inject_failure(HypervisorError("no disk"), Operation.START, once=False)
        with running_keeper(store, {"h1": driver}, **settings) as keeper:
            keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
            driver.crash("web-1")
            wait_until(lambda: keeper.view(WEB1).action_failures == 1, what="the first failed start")
        # Stopped while backing off before the second start; the next keeper makes that one.
        assert not store.instance(WEB1).quarantined
        with running_keeper(store, {"h1": driver}, **settings) as keeper:
            wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
            quarantined = keeper.view(WEB1)
        assert (quarantined.fault or "").startswith("2 consecutive actions failed; the last, start")
        assert quarantined.action_failures == 2
        assert driver.get_instance(WEB1).power_state is PowerState.CRASHED


def test_a_policy_change_or_a_release_starts_the_count_afresh(store: SqlStore) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}, backoff_base=60) as keeper:
        driver.inject_failure(HypervisorError("no disk"), Operation.START, once=False)
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.crash("web-1")
        wait_until(lambda: store.instance(WEB1).action_failures == 1, what="the failed start")
        keeper.set_policy(WEB1, Policy.MANUAL, "alice")
        wait_until(lambda: store.instance(WEB1).action_failures == 0, what="the count reset")


def test_a_store_at_the_first_revision_with_data_in_it_is_upgraded_keeping_the_data(
    store_url: str, store: SqlStore
) -> None:
    with fake_host() as driver, running_keeper(store, {"h1": driver}) as keeper:
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).power_state is PowerState.RUNNING, what="the restart")
    views, history, hosts = store.instances(), store.history(WEB1, 1000), store.hosts()
    store.close()
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", store_url)
    command.downgrade(config, "0001")
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0001"
        columns = {column["name"] for column in inspect(connection).get_columns("instances")}
        assert "action_failures" not in columns and "failures" in columns
    reopened = SqlStore(store_url)
    try:
        assert reopened.instances() == views
        assert reopened.history(WEB1, 1000) == history
        assert reopened.hosts() == hosts
        assert reopened.instance(WEB1).action_failures == 0
    finally:
        reopened.close()
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_REVISION
    engine.dispose()
