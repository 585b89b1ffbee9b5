"""The store's database plumbing: engines from URLs, SQLite's settings, errors in one clear line.

Nothing here knows the keeper's tables; ``_store.py`` does, on top of this.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import URL, make_url

from powerdrivers import parse_count, redact_uri
from powerdrivers.keeper._errors import InvalidStoreURL, StoreError, StoreUnavailable

#: How long a writer waits for another process's write lock before the store is "unavailable".
BUSY_TIMEOUT_S: Final = 30.0

#: An execution option marking a read-only transaction (SQLite: a plain, deferred BEGIN).
READ_ONLY: Final = "powerdrivers_keeper_read"

#: Seconds a PostgreSQL connection attempt waits for the server, unless the URL says otherwise.
PG_CONNECT_TIMEOUT_S: Final = 5

#: TCP keepalives of PostgreSQL connections: a silent server is given up after about 11 seconds.
PG_KEEPALIVES: Final = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
}

#: The same on the server's side of each session: a process whose machine vanished (power cut,
#: network gone; no FIN, no RST) has its session ended, so its advisory locks (host claims, the
#: write lock) go in seconds, not after the operating system's default of two hours and more.
#: Set per session, so no server configuration is needed; ignored on Unix sockets.
PG_SERVER_KEEPALIVES: Final = (
    "SET SESSION tcp_keepalives_idle = 5",
    "SET SESSION tcp_keepalives_interval = 2",
    "SET SESSION tcp_keepalives_count = 3",
)

#: The PostgreSQL channel every write transaction notifies (delivered to listeners at commit).
CHANNEL: Final = "powerdrivers_changes"

#: The PostgreSQL advisory lock every write transaction takes first ("pdwrites" in ASCII).
WRITE_LOCK: Final = 0x7064777269746573

#: History records kept per instance unless the store is opened with another ``retention``.
DEFAULT_RETENTION: Final = 1000


_PG_BEGIN_WRITE: Final = f"SELECT pg_advisory_xact_lock({WRITE_LOCK}), pg_notify('{CHANNEL}', '')"
_PG_BEGIN_QUIET_WRITE: Final = f"SELECT pg_advisory_xact_lock({WRITE_LOCK})"


class StoreLocation:
    """A parsed store URL and its redacted text, the only form of it ever shown."""

    __slots__ = ("redacted", "url")

    def __init__(self, url: str) -> None:
        if not isinstance(url, str) or not url.strip():
            raise InvalidStoreURL("the keeper's store URL is empty")
        self.redacted = redact_uri(url.strip())
        try:
            self.url: URL = make_url(url.strip())
        except (exc.ArgumentError, ValueError, TypeError):
            raise InvalidStoreURL(f"the keeper's store URL is not a database URL: {self.redacted}") from None
        if self.url.password is not None:
            self.redacted = self.url.render_as_string(hide_password=True)

    def clean(self, message: str) -> str:
        """Return ``message`` as one line, with the URL's password (if any) masked out of it."""
        line = " ".join(str(message).split("\n", 1)[0].split())
        password = self.url.password
        if password:
            line = line.replace(str(password), "***")
        return line or "no reason given"

    def error(self, what: str, problem: BaseException) -> StoreError:
        """Return the store error for ``problem`` met while doing ``what``: one line, redacted."""
        unavailable = isinstance(problem, (exc.OperationalError, exc.TimeoutError, OSError))
        reason = problem.orig if isinstance(problem, exc.DBAPIError) and problem.orig else problem
        kind = StoreUnavailable if unavailable else StoreError
        return kind(f"keeper store {self.redacted}: cannot {what}: {self.clean(str(reason))}")


def create_store_engine(location: StoreLocation) -> Engine:
    """Return an engine for the store at ``location``; SQLite files get WAL, a busy timeout, foreign keys.

    Raises ``StoreError`` for an unknown database kind or an in-memory SQLite database (each
    connection of one would be a database of its own), ``StoreUnavailable`` when an SQLite
    file's folder cannot be made.
    """
    url = location.url
    sqlite = url.get_backend_name() == "sqlite"
    options: dict[str, Any] = {}
    if sqlite:
        database = url.database or ""
        if database in ("", ":memory:") or url.query.get("mode") == "memory":
            raise InvalidStoreURL(
                f"keeper store {location.redacted}: an in-memory SQLite database cannot be shared; "
                "give a file (sqlite:///path/keeper.db)"
            )
        if not database.startswith("file:"):
            try:
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
            except OSError as problem:
                raise location.error("make the database's folder", problem) from None
        options["connect_args"] = {"timeout": BUSY_TIMEOUT_S}
    elif url.get_backend_name() == "postgresql":
        # A pooled connection may have died with a server that went away and came back: test it
        # when it is taken from the pool, so the first use after a restart works.
        options["pool_pre_ping"] = True
        # Threads of a fleet's keeper share the store; past the pool they wait (pool_timeout).
        options["max_overflow"] = 20
        # What the URL does not set: a bounded connect, and a peer that went silent noticed.
        defaults = {"connect_timeout": PG_CONNECT_TIMEOUT_S, **PG_KEEPALIVES}
        options["connect_args"] = {key: value for key, value in defaults.items() if key not in url.query}
    try:
        engine = create_engine(url, **options)
    except ImportError as problem:
        reason = location.clean(str(problem))
        raise StoreError(
            f"keeper store {location.redacted}: its database driver is not installed: {reason}"
        ) from None
    except exc.NoSuchModuleError:
        raise InvalidStoreURL(
            f"keeper store {location.redacted}: not a database this store knows (sqlite:///FILE or "
            "postgresql+psycopg://...)"
        ) from None
    except (exc.SQLAlchemyError, ValueError, TypeError) as problem:
        raise location.error("open the database", problem) from None
    if sqlite:
        _configure_sqlite(engine)
    elif url.get_backend_name() == "postgresql":
        _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    """Bound every lock wait as SQLite's busy timeout does: a writer stuck behind a frozen one gives up.

    Without it, a process stopped (not killed) inside a write transaction would hold the write
    lock, and every writer of every process would wait for it forever; this way they fail with
    ``StoreUnavailable`` after ``BUSY_TIMEOUT_S``.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET SESSION lock_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            for statement in PG_SERVER_KEEPALIVES:
                cursor.execute(statement)
        finally:
            cursor.close()
        dbapi_connection.commit()


def _configure_sqlite(engine: Engine) -> None:
    """Make SQLite transactional as the store needs it (the driver's own BEGIN handling is off).

    Writes begin with ``BEGIN IMMEDIATE``: the write lock is taken first, so a transaction that
    reads then writes waits (busy timeout) instead of failing when another process wrote in
    between. Migrations are transactional DDL under that lock too.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            # Durable against a crash of the process (the WAL is on disk); only a power loss can
            # lose the last commits. FULL would fsync on every commit, which alone can take more
            # than the 50 ms an event may take to reach the history on a busy disk.
            cursor.execute("PRAGMA synchronous = NORMAL")
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        read_only = connection.get_execution_options().get(READ_ONLY, False)
        connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


@contextmanager
def translated(location: StoreLocation, what: str) -> Iterator[None]:
    """Turn the database's errors inside the block into one-line, redacted ``StoreError`` exceptions."""
    try:
        yield
    except (exc.SQLAlchemyError, OSError) as problem:
        raise location.error(what, problem) from None


class StoreConnection:
    """A store's engine and its transactions; ``SqlStore`` adds the keeper's tables on top.

    Raises ``InvalidOption`` for a bad ``retention``, and ``StoreError`` or
    ``StoreUnavailable`` as ``create_store_engine`` does.
    """

    def __init__(self, url: str, *, retention: int = DEFAULT_RETENTION) -> None:
        from powerdrivers.keeper._store_changes import ChangeListeners

        self._retention = parse_count("retention", retention, minimum=1)
        self._location = StoreLocation(url)
        self._engine = create_store_engine(self._location)
        self._changes = ChangeListeners(self._engine, self._location)
        postgresql = self._engine.dialect.name == "postgresql"
        self._begin_write = _PG_BEGIN_WRITE if postgresql else None
        self._begin_quiet_write = _PG_BEGIN_QUIET_WRITE if postgresql else None
        # PostgreSQL reads run in autocommit: under READ COMMITTED (its default; the store asks
        # for no other) every statement takes its own snapshot inside a transaction too, so
        # BEGIN and COMMIT were two round trips that bought nothing (benchmark S1). SQLite's
        # BEGIN does hold one snapshot for a whole read.
        self._read_options: dict[str, Any] = {READ_ONLY: True}
        if postgresql:
            self._read_options["isolation_level"] = "AUTOCOMMIT"

    @property
    def redacted_url(self) -> str:
        """The store's URL with any password masked: the form to print or log."""
        return self._location.redacted

    @property
    def retention(self) -> int:
        """History records kept per instance."""
        return self._retention

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._location.redacted!r}, retention={self._retention})"

    def close(self) -> None:
        """Release the store's connections (the store can still be used: it reconnects).

        The listening thread stops too; change listeners stay registered, and are called again
        after this store's own writes (and, once one more listener is added, other processes').
        Host claims are not released: they are their holders' to release.
        """
        self._changes.close()
        self._engine.dispose()

    def add_change_listener(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call ``callback`` after every write; return the function that removes it.

        Called after each write transaction this store object commits (in the writer's thread),
        and on PostgreSQL whenever any process commits a write to the database (from this
        store's listening thread, started by the first listener: one connection per store
        object, reconnecting after a loss and then calling every listener once). A wake-up only:
        the callback must be quick, gets nothing, and re-reads the store for what changed; what
        it raises is logged, never raised into the store. Raises ``KeeperError`` for a callback
        that is not callable.
        """
        return self._changes.add(callback)

    def available(self) -> bool:
        """Return whether the database answers now (a cheap query; never raises ``StoreError``)."""
        try:
            with self._read("check that the database answers") as connection:
                connection.exec_driver_sql("SELECT 1")
        except StoreError:
            return False
        return True

    @contextmanager
    def _write(self, what: str, *, wake: bool = True) -> Iterator[Connection]:
        """One write transaction, holding the store's write lock from its start; listeners are told after.

        SQLite: ``BEGIN IMMEDIATE``. PostgreSQL: the transaction advisory lock ``WRITE_LOCK``, so
        writers never deadlock on each other's rows and commit in the order they take ids (a
        reader of history ``records_after`` an id never misses one committed late); in the same
        statement it notifies the change channel, which the server delivers to every listening
        store at commit and drops when the transaction rolls back. With ``wake`` false (a write
        no keeper acts on, such as VCPU samples every few seconds) nobody is notified.
        """
        begin = self._begin_write if wake else self._begin_quiet_write
        with translated(self._location, what), self._engine.begin() as connection:
            if begin is not None:
                connection.exec_driver_sql(begin)
            yield connection
        if wake:
            self._changes.notify()

    @contextmanager
    def _read(self, what: str) -> Iterator[Connection]:
        """One read-only transaction (SQLite: takes no write lock)."""
        with translated(self._location, what), self._engine.connect() as connection:
            connection.execution_options(**self._read_options)
            with connection.begin():
                yield connection
