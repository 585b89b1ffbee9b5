"""Host ownership: at most one live keeper keeps a host of a store, released when its owner dies.

The operating system or the database holds the claim, never a lease the keeper renews: an SQLite
store's claim is an exclusive ``flock`` on a lock file beside the database, one per host; a
PostgreSQL store's is a session advisory lock, all of one store's on one connection of their own
(``ClaimSession``). Either is released the moment its process ends, however it ends; a
PostgreSQL claim also ends when its connection is lost, which ``alive`` tells.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Engine, select, update

from powerdrivers.keeper._errors import HostAlreadyKept, StoreError, StoreUnavailable
from powerdrivers.keeper._schema import hosts
from powerdrivers.keeper._store_db import DEFAULT_RETENTION, StoreConnection, StoreLocation, translated
from powerdrivers.keeper._store_pg import connect, translated_psycopg

#: Clears a host's recorded owner if it is still this one: ``clear(host, owner)``.
Clear = Callable[[str, str], None]


def owner_text() -> str:
    """Who this process is, as recorded in ``hosts.owner`` while it keeps a host."""
    return f"pid {os.getpid()} on {socket.gethostname()}"[:255]


def _digest(host: str) -> bytes:
    return hashlib.sha256(host.encode()).digest()


def lock_file_path(database: str, host: str) -> Path:
    """Return the lock file of ``host`` beside the SQLite database file ``database``.

    Host names may hold slashes and be long (``HOSTNAME/URI``): the file is named by a digest.
    """
    path = Path(database.removeprefix("file:").split("?", 1)[0]).expanduser()
    return path.with_name(f"{path.name}.host-{_digest(host).hex()[:32]}.lock")


class FileClaim:
    """An exclusive ``flock`` on a host's lock file, held until :meth:`release` or the process ends."""

    def __init__(self, path: Path, location: StoreLocation) -> None:
        with translated(location, f"open the lock file {path.name}"):
            self._fd: int | None = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._close()
            self.held = False
        except OSError as problem:
            self._close()
            raise location.error(f"lock {path.name}", problem) from None
        else:
            self.held = True

    def alive(self) -> bool:
        """Return whether the lock is held (the file stays locked while open: until released)."""
        return self._fd is not None

    def release(self) -> None:
        """Let the claim go (closing the file drops the lock); a second call does nothing."""
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class ClaimSession:
    """The one connection of a store that holds all its PostgreSQL advisory-lock claims.

    One session, not one per host: a hundred hosts must not need a hundred connections. When the
    connection is lost the server has released every lock it held: the session is dead for good
    and each of its claims says so (``alive`` is false); the store's next claim opens a new one.
    """

    def __init__(self, engine: Engine, location: StoreLocation) -> None:
        self._location = location
        self._connection = connect(engine, location, "open the host claims' connection", "claims")
        self._lock = threading.Lock()
        self._dead = False
        self.keys: set[int] = set()
        """The lock keys held now."""

    def try_lock(self, key: int, host: str) -> bool:
        """Take the key's lock without waiting; false when held elsewhere, or here already.

        Raises ``StoreUnavailable`` (the session is then dead) when the server does not answer.
        """
        with self._lock:
            if key in self.keys:
                return False  # a session's advisory locks stack: never let one host be claimed twice here
            row = self._run(f"claim host {host!r}", "SELECT pg_try_advisory_lock(%s)", key)
            if row and row[0]:
                self.keys.add(key)
                return True
            return False

    def unlock(self, key: int) -> None:
        """Let the key's lock go (nothing to do on a dead session: the server let it go)."""
        with self._lock:
            if key not in self.keys:
                return
            self.keys.discard(key)
            if not self._dead:
                self._run("release a host claim", "SELECT pg_advisory_unlock(%s)", key)

    def alive(self) -> bool:
        """Return whether the connection answers now, so that its locks are certainly still held."""
        with self._lock:
            if self._dead:
                return False
            try:
                self._run("check the host claims' connection", "SELECT 1")
            except StoreError:
                return False
            return True

    @property
    def dead(self) -> bool:
        """Whether the connection was lost (its locks with it)."""
        return self._dead

    def close(self) -> None:
        """Close the connection, letting every lock go."""
        with self._lock:
            self._dead = True
            self.keys.clear()
            self._connection.close()

    def _run(self, what: str, sql: str, *params: int) -> tuple[object, ...] | None:
        if self._dead:
            raise StoreUnavailable(f"keeper store {self._location.redacted}: cannot {what}: connection lost")
        try:
            with translated_psycopg(self._location, what):
                row: tuple[object, ...] | None = self._connection.execute(sql, params or None).fetchone()
                return row
        except StoreUnavailable:
            self._dead = True
            self._connection.close()
            raise


class AdvisoryLockClaim:
    """A PostgreSQL session advisory lock on the store's claims connection (``ClaimSession``)."""

    def __init__(self, session: ClaimSession, host: str, released: Callable[[ClaimSession], None]) -> None:
        self._key = int.from_bytes(_digest(host)[:8], "big", signed=True)
        self._session: ClaimSession | None = session
        self._released = released
        held = False
        try:
            held = session.try_lock(self._key, host)
        finally:
            self.held = held
            if not held:
                # Refused or failed: a session left holding nothing is closed.
                self._session = None
                released(session)

    def alive(self) -> bool:
        """Return whether the lock is certainly still held (its connection answers)."""
        session = self._session
        return session is not None and session.alive()

    def release(self) -> None:
        """Unlock; a second call does nothing. Raises ``StoreUnavailable`` when the unlock cannot be sent.

        The lock goes all the same then: a session whose server does not answer is closed, and
        the server releases a closed session's locks.
        """
        session, self._session = self._session, None
        if session is not None:
            try:
                session.unlock(self._key)
            finally:
                self._released(session)


class StoreHostClaim:
    """A held claim on a host (``KeeperStore.claim_host``): the lock, and the owner it recorded."""

    def __init__(self, host: str, owner: str, lock: FileClaim | AdvisoryLockClaim, clear: Clear) -> None:
        self.host = host
        self.owner = owner
        self._lock = lock
        self._clear: Clear | None = clear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, owner={self.owner!r})"

    def alive(self) -> bool:
        """Return whether the claim is certainly still held (see ``HostClaim.alive``)."""
        return self._clear is not None and self._lock.alive()

    def release(self) -> None:
        """Let the host go, then clear its recorded owner; a second call does nothing.

        The lock is released even when the store cannot be written; then ``StoreError`` is
        raised (the owner column is overwritten by the next keeper to claim the host).
        """
        clear, self._clear = self._clear, None
        if clear is None:
            return
        self._lock.release()
        clear(self.host, self.owner)

    def __enter__(self) -> StoreHostClaim:
        return self

    def __exit__(self, *_: object) -> None:
        self.release()


class HostClaims(StoreConnection):
    """``KeeperStore.claim_host`` on a store's database; ``SqlStore`` builds on it.

    Raises what ``StoreConnection`` raises.
    """

    def __init__(self, url: str, *, retention: int = DEFAULT_RETENTION) -> None:
        super().__init__(url, retention=retention)
        self._owners: dict[str, str] = {}
        """The owner recorded for each host this store claimed (a host registered later gets it)."""
        self._claims_lock = threading.RLock()
        self._session: ClaimSession | None = None

    def claim_host(self, name: str) -> StoreHostClaim:
        """Make this process the host's one keeper, recording it as the owner (see ``KeeperStore``).

        Raises ``HostAlreadyKept`` (naming the owner recorded) when a live keeper holds it.
        """
        lock = self._take_lock(name)
        if not lock.held:
            with self._read(f"read host {name!r}") as connection:
                holder = connection.execute(select(hosts.c.owner).where(hosts.c.name == name)).scalar()
            raise HostAlreadyKept(name, holder)
        owner = owner_text()
        self._owners[name] = owner
        try:
            with self._write(f"record the owner of host {name!r}") as connection:
                connection.execute(update(hosts).where(hosts.c.name == name).values(owner=owner))
        except BaseException:
            self._owners.pop(name, None)
            lock.release()
            raise
        return StoreHostClaim(name, owner, lock, self._clear_owner)

    def _take_lock(self, host: str) -> FileClaim | AdvisoryLockClaim:
        """Try to take ``host``'s lock without waiting; see ``held``."""
        if self._engine.dialect.name == "sqlite":
            return FileClaim(lock_file_path(self._location.url.database or "", host), self._location)
        with self._claims_lock:
            for attempt in (1, 2):
                if self._session is None or self._session.dead:
                    self._session = ClaimSession(self._engine, self._location)
                try:
                    return AdvisoryLockClaim(self._session, host, self._session_released)
                except StoreUnavailable:
                    # The session had died unnoticed (its locks with it): one fresh connection may answer.
                    if attempt == 2:
                        raise
        raise AssertionError("unreachable")

    def _session_released(self, session: ClaimSession) -> None:
        """Close the claims' connection once it holds nothing (an idle store keeps no connection)."""
        with self._claims_lock:
            if not session.keys:
                session.close()
                if self._session is session:
                    self._session = None

    def _clear_owner(self, name: str, owner: str) -> None:
        self._owners.pop(name, None)
        with self._write(f"clear the owner of host {name!r}") as connection:
            connection.execute(
                update(hosts).where(hosts.c.name == name, hosts.c.owner == owner).values(owner=None)
            )
