"""Alembic's environment for the keeper's store: migrates the connection the store hands it.

The store runs ``upgrade head`` itself when it opens a database (``_store_migrate.py``), passing
its connection in ``config.attributes["connection"]``; given only ``sqlalchemy.url`` (an
operator's own Alembic run), a connection is made from that URL. Either way the whole upgrade is
one transaction under a lock, so processes opening one new database at once migrate it once.
"""

from __future__ import annotations

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, text

from powerdrivers.keeper._schema import metadata
from powerdrivers.keeper._store_db import StoreLocation, create_store_engine

#: The PostgreSQL advisory lock key serialising migrations ("pdkeeper" in ASCII).
_PG_MIGRATION_LOCK = 0x70646B6565706572


def _migrate(connection: Connection) -> None:
    """Run the pending migrations on ``connection`` in one locked transaction."""
    context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        context.run_migrations()


def _run() -> None:
    """Migrate the store's connection, or one made from the configured URL."""
    given = context.config.attributes.get("connection")
    if given is not None:
        _migrate(given)
        return
    # The store's own engine: on SQLite, the same WAL, timeout and write lock as the store takes.
    engine = create_store_engine(StoreLocation(context.config.get_main_option("sqlalchemy.url") or ""))
    try:
        with engine.connect() as connection:
            _migrate(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise CommandError("the keeper's store migrations run online only (the store upgrades itself on open)")
_run()
