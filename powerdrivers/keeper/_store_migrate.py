"""Bringing a database to the store's schema: Alembic's ``upgrade head``, run by the store on open.

A database already at head costs a look at its revision (Alembic is not even imported).
Otherwise the whole upgrade runs in one transaction under a lock (SQLite: ``BEGIN IMMEDIATE``;
PostgreSQL: an advisory lock), so processes opening one new database at once migrate it once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from sqlalchemy import Engine, inspect, text

from powerdrivers.keeper._errors import StoreError
from powerdrivers.keeper._schema import SCHEMA_REVISION
from powerdrivers.keeper._store_db import StoreLocation, translated

#: The Alembic scripts, shipped inside the package.
MIGRATIONS: Final = Path(__file__).resolve().parent / "migrations"


def current_revision(engine: Engine) -> str | None:
    """Return the database's Alembic revision, or ``None`` for a database the store never opened."""
    with engine.connect() as connection:
        if not inspect(connection).has_table("alembic_version"):
            return None
        return connection.execute(text("SELECT version_num FROM alembic_version")).scalar()


def upgrade(engine: Engine, location: StoreLocation) -> None:
    """Bring the database to ``SCHEMA_REVISION``. Raises ``StoreError``/``StoreUnavailable``."""
    with translated(location, "read the schema revision"):
        if current_revision(engine) == SCHEMA_REVISION:
            return
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    try:
        # The transaction is begun here, so Alembic runs every step in it: on SQLite (no
        # transactional DDL to Alembic) it would otherwise commit after each step, letting another
        # process take the lock between two steps and run the next one too.
        with translated(location, "upgrade the schema"), engine.connect() as connection, connection.begin():
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except CommandError as problem:
        # Typically a database written by a newer powerdrivers: never guess at its schema.
        raise StoreError(f"keeper store {location.redacted}: cannot upgrade the schema: {problem}") from None
