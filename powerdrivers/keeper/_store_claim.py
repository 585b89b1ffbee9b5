"""Host ownership: at most one live keeper keeps a host of a store, released when its owner dies.

The operating system or the database holds the claim, never a lease the keeper renews: an SQLite
store's claim is an exclusive ``flock`` on a lock file beside the database, one per host; a
PostgreSQL store's is a session advisory lock on a connection held open for the claim. Either
is released the moment its process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import Connection, Engine, func, select, update

from powerdrivers.keeper._errors import HostAlreadyKept
from powerdrivers.keeper._schema import hosts
from powerdrivers.keeper._store_db import DEFAULT_RETENTION, StoreConnection, StoreLocation, translated

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

    def release(self) -> None:
        """Let the claim go (closing the file drops the lock); a second call does nothing."""
        self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class AdvisoryLockClaim:
    """A PostgreSQL session advisory lock, held on a connection kept open for the claim."""

    def __init__(self, engine: Engine, host: str, location: StoreLocation) -> None:
        self._key = int.from_bytes(_digest(host)[:8], "big", signed=True)
        self._location = location
        with translated(location, f"claim host {host!r}"):
            self._connection: Connection | None = engine.connect()
            try:
                self.held = bool(self._connection.scalar(select(func.pg_try_advisory_lock(self._key))))
                # The lock belongs to the session, not the transaction: committing keeps it.
                self._connection.commit()
            except BaseException:
                self._connection.close()
                self._connection = None
                raise
        if not self.held:
            self.release()

    def release(self) -> None:
        """Unlock and close the claim's connection; a second call does nothing."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            with translated(self._location, "release a host claim"):
                if self.held:
                    connection.scalar(select(func.pg_advisory_unlock(self._key)))
                    connection.commit()
        finally:
            # Closing ends the session's hold even when the unlock could not be sent.
            connection.invalidate()
            connection.close()


class StoreHostClaim:
    """A held claim on a host (``KeeperStore.claim_host``): the lock, and the owner it recorded."""

    def __init__(self, host: str, owner: str, lock: FileClaim | AdvisoryLockClaim, clear: Clear) -> None:
        self.host = host
        self.owner = owner
        self._lock = lock
        self._clear: Clear | None = clear

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.host!r}, owner={self.owner!r})"

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


def take_lock(engine: Engine, location: StoreLocation, host: str) -> FileClaim | AdvisoryLockClaim:
    """Try to take ``host``'s lock in the store at ``location``, without waiting; see ``held``."""
    if engine.dialect.name == "sqlite":
        return FileClaim(lock_file_path(location.url.database or "", host), location)
    return AdvisoryLockClaim(engine, host, location)


class HostClaims(StoreConnection):
    """``KeeperStore.claim_host`` on a store's database; ``SqlStore`` builds on it.

    Raises what ``StoreConnection`` raises.
    """

    def __init__(self, url: str, *, retention: int = DEFAULT_RETENTION) -> None:
        super().__init__(url, retention=retention)
        self._owners: dict[str, str] = {}
        """The owner recorded for each host this store claimed (a host registered later gets it)."""

    def claim_host(self, name: str) -> StoreHostClaim:
        """Make this process the host's one keeper, recording it as the owner (see ``KeeperStore``).

        Raises ``HostAlreadyKept`` (naming the owner recorded) when a live keeper holds it.
        """
        lock = take_lock(self._engine, self._location, name)
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

    def _clear_owner(self, name: str, owner: str) -> None:
        self._owners.pop(name, None)
        with self._write(f"clear the owner of host {name!r}") as connection:
            connection.execute(
                update(hosts).where(hosts.c.name == name, hosts.c.owner == owner).values(owner=None)
            )
