"""PostgreSQL's own connections of a store: for LISTEN and for host claims, outside SQLAlchemy's pool.

A pooled connection is handed to whoever asks next and replaced when it breaks; a session whose
advisory locks or LISTEN registration matter must be neither. These connections are made from
the store's URL with the same driver (psycopg 3), in autocommit, with TCP keepalives on both
ends: a server that vanished without closing the socket is noticed within seconds, and so is
a client by the server (which then releases the session's advisory locks).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from powerdrivers.keeper._store_db import (
    PG_CONNECT_TIMEOUT_S,
    PG_KEEPALIVES,
    PG_SERVER_KEEPALIVES,
    StoreLocation,
)

if TYPE_CHECKING:
    import psycopg


def is_postgresql(engine: Engine) -> bool:
    """Return whether the store's database is PostgreSQL."""
    return engine.dialect.name == "postgresql"


def connect(engine: Engine, location: StoreLocation, what: str, role: str) -> psycopg.Connection[Any]:
    """Return a new autocommit psycopg connection to the store's database, of its own.

    ``role`` names the connection's use in its ``application_name`` (``powerdrivers-ROLE``), so
    an operator reading ``pg_stat_activity`` sees what each session is. Raises
    ``StoreUnavailable`` (or ``StoreError``) naming ``what``: one line, no password.
    """
    import psycopg

    _, params = engine.dialect.create_connect_args(engine.url)
    params.pop("context", None)  # SQLAlchemy's adapters: this connection runs plain SQL only
    params = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_KEEPALIVES, **params}
    params["application_name"] = f"powerdrivers-{role}"
    with translated_psycopg(location, what):
        connection = psycopg.connect(**params, autocommit=True)
        try:
            for statement in PG_SERVER_KEEPALIVES:
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        return connection


@contextmanager
def translated_psycopg(location: StoreLocation, what: str) -> Iterator[None]:
    """Turn psycopg's errors inside the block into the store's one-line, redacted errors.

    A lost or refused connection is ``StoreUnavailable``; any other database error ``StoreError``.
    """
    import psycopg

    try:
        yield
    except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as problem:
        raise location.error(what, ConnectionError(str(problem))) from None
    except psycopg.Error as problem:
        raise location.error(what, _Failed(str(problem))) from None


class _Failed(Exception):
    """A database error that is not a lost connection (``StoreLocation.error`` makes it ``StoreError``)."""
