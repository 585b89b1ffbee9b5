"""A throwaway PostgreSQL cluster for the tests: its own directory, port and socket, nothing shared.

The cluster runs the distribution's PostgreSQL binaries in a temporary directory, listening on a
free port of 127.0.0.1 and keeping its socket in that directory, so it never meets a server it did
not start, and a watchdog process removes it when the test process ends, however it ends.
PostgreSQL refuses to run as root: under root the server runs as the ``postgres`` user
(``runuser``), and the directory belongs to that user. The test role logs in over TCP with a
password (SCRAM), so the URLs the tests use carry one, as a deployment's do.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    import psycopg

#: The superuser the cluster is created with; the tests connect as it.
USER: Final = "powerdrivers_test"
_SERVICE_USER: Final = "postgres"
_START_TIMEOUT_S: Final = 30


#: Waits for the test process to end, however it ends (its end of the pipe closes), then stops the
#: cluster and removes its folder: a run killed by a timeout leaves no server behind.
_WATCHDOG = """
import shutil, subprocess, sys
sys.stdin.read()
subprocess.run(sys.argv[2:], capture_output=True, check=False, timeout=60)
shutil.rmtree(sys.argv[1], ignore_errors=True)
"""


class ClusterUnavailable(Exception):
    """PostgreSQL's binaries are missing, or this process cannot run them; the message says which."""


def bin_dir() -> Path:
    """Return the newest installed PostgreSQL's binaries folder. Raises ``ClusterUnavailable``."""
    found = [Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin") if Path(path, "initdb").exists()]
    if not found:
        raise ClusterUnavailable(
            "no PostgreSQL binaries under /usr/lib/postgresql/*/bin (Debian's postgresql)"
        )

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in path.parent.name.split(".") if part.isdigit())

    return max(found, key=version)


def _runner() -> tuple[list[str], int | None, int | None]:
    """Return the command prefix running as the server's user, and that user's uid and gid (when root)."""
    if os.geteuid() != 0:
        return [], None, None
    try:
        user = pwd.getpwnam(_SERVICE_USER)
    except KeyError:
        raise ClusterUnavailable(
            "running as root and there is no 'postgres' user to run the server"
        ) from None
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ClusterUnavailable("running as root and runuser is missing (util-linux)")
    return [runuser, "-u", _SERVICE_USER, "--"], user.pw_uid, user.pw_gid


def free_port() -> int:
    """Return a TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresCluster:
    """A PostgreSQL cluster created in a temporary folder; :meth:`start` it, then :meth:`cleanup`.

    ``stop`` and ``start`` keep the folder and the port (the database going away and coming
    back); ``kill`` ends the postmaster with ``SIGKILL``. Raises ``ClusterUnavailable`` when it
    cannot be created, ``RuntimeError`` (with the server's log) when it does not start.
    """

    def __init__(self) -> None:
        try:
            import psycopg  # noqa: F401  (the tests' stores and this harness connect with it)
        except ImportError:
            raise ClusterUnavailable("psycopg is not installed (the postgresql extra)") from None
        self.bin = bin_dir()
        self._prefix, uid, gid = _runner()
        self.password = secrets.token_urlsafe(18)
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="pd-postgres-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if uid is not None and gid is not None:
            os.chown(self.root, uid, gid)
        os.chmod(self.root, 0o700)
        self._databases = 0
        stop = [*self._prefix, str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--mode", "immediate"]
        self._watchdog = subprocess.Popen(
            [sys.executable, "-c", _WATCHDOG, str(self.root), *stop, "--wait", "stop"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C to the test run's process group must not end it first
        )
        try:
            self._initdb()
        except BaseException:
            self.cleanup()
            raise

    def __repr__(self) -> str:
        return f"PostgresCluster(port={self.port}, root={str(self.root)!r})"

    def _run(self, *command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self._prefix, *command], capture_output=True, text=True, check=check, timeout=60, cwd=self.root
        )

    def _initdb(self) -> None:
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self._prefix:
            user = pwd.getpwnam(_SERVICE_USER)
            os.chown(password_file, user.pw_uid, user.pw_gid)
        password_file.chmod(0o600)
        try:
            self._run(
                str(self.bin / "initdb"), "--pgdata", str(self.data), "--username", USER,
                "--pwfile", str(password_file), "--auth-local", "trust", "--auth-host", "scram-sha-256",
                "--encoding", "UTF8", "--locale", "C", "--no-sync", "--no-instructions",
            )  # fmt: skip
        except subprocess.CalledProcessError as failure:
            raise ClusterUnavailable(f"initdb failed: {failure.stderr.strip()[-500:]}") from None
        finally:
            password_file.unlink(missing_ok=True)
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": "300",
            # A throwaway cluster: durability costs time and buys nothing here.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "logging_collector": "off",
        }
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def start(self) -> None:
        """Start the server (on the same port and data as before) and wait until it accepts logins."""
        result = self._run(
            str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--log", str(self.log),
            "--wait", "--timeout", str(_START_TIMEOUT_S), "start", check=False,
        )  # fmt: skip
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr.strip()}\n{log}")

    def stop(self) -> None:
        """Stop the server (fast shutdown: sessions are ended) and wait until it is gone."""
        self._run(str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--mode", "fast", "--wait", "stop")

    def kill(self) -> None:
        """End the postmaster with ``SIGKILL`` (its backends end when they notice), as a crash would."""
        pid = self.postmaster_pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.02)

    def postmaster_pid(self) -> int | None:
        """Return the running postmaster's process id, or ``None`` when it is not running."""
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if Path(f"/proc/{pid}").exists() else None

    def running(self) -> bool:
        """Return whether the server accepts connections now."""
        import psycopg

        try:
            with self.connect(connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def connect(self, dbname: str = "postgres", **options: Any) -> psycopg.Connection[tuple[Any, ...]]:
        """Return a new autocommit connection of the test role over TCP (with the password)."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user=USER,
            password=self.password,
            dbname=dbname,
            autocommit=True,
            **options,
        )

    def url(self, dbname: str) -> str:
        """Return the SQLAlchemy URL of the database ``dbname``, password included."""
        return f"postgresql+psycopg://{USER}:{self.password}@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (named ``name``, else a fresh name) and return its URL."""
        if name is None:
            self._databases += 1
            name = f"test_{os.getpid()}_{self._databases}"
        with self.connect() as connection:
            connection.execute(f'CREATE DATABASE "{name}"'.encode())
        return self.url(name)

    def cleanup(self) -> None:
        """Stop the server at once if it runs and remove its folder; safe to call more than once."""
        if self.data.exists() and self.postmaster_pid() is not None:
            self._run(
                str(self.bin / "pg_ctl"), "--pgdata", str(self.data), "--mode", "immediate", "--wait", "stop",
                check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
        if self._watchdog.stdin is not None and not self._watchdog.stdin.closed:
            self._watchdog.stdin.close()  # nothing left for it to do: it ends
            self._watchdog.wait(timeout=60)
