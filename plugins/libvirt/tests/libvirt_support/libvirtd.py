"""Libvirt daemons for integration tests: the system's, and private ones of the tests' own.

:class:`LibvirtdHarness` makes sure a libvirtd answers on ``qemu:///system``.
If ``virsh -c qemu:///system version`` already works, the running daemon is
used as is and nothing on the host is touched.  Otherwise (root only) the
harness prepares the minimum a bare Debian container lacks -- the
``libvirt-qemu`` user/group, the ``kvm`` and ``libvirt`` groups and the
``/var/{run,log,lib,cache}/libvirt`` directories -- then starts
``virtlogd`` and ``libvirtd`` itself and waits until the socket answers.

:class:`PrivateLibvirtd` always starts a ``virtlogd`` and a ``libvirtd`` of
its own, which no other client shares: each runs in a mount namespace of
its own in which ``/etc/libvirt``, ``/run/libvirt``, ``/var/lib/libvirt``,
``/var/cache/libvirt`` and ``/var/log/libvirt`` are private directories
under one temporary root, and libvirtd listens in a socket directory of its
own (``unix_sock_dir``).  Clients reach it as
``qemu+unix:///system?socket=<root>/sock/libvirt-sock``.  It is a
privileged daemon like the system's (QEMU runs as ``libvirt-qemu``), with
its own configuration, domains, capabilities cache and pid files, so tests
may kill and restart it whether or not the system runs a libvirtd.

Either way, only daemons started by the harness are ever signalled: a
harness holds the process it spawned, never a pid it looked up.

Example::

    with PrivateLibvirtd() as private:
        private.virsh("list", "--all")
        private.restart_libvirtd()  # "libvirtd went away" scenario
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

__all__ = [
    "DEFAULT_SOCKET",
    "DEFAULT_URI",
    "QEMU_GROUP",
    "QEMU_USER",
    "LibvirtdError",
    "LibvirtdHarness",
    "PrivateLibvirtd",
    "ensure_host_prerequisites",
    "socket_server_pid",
    "virsh_reachable",
]

DEFAULT_URI = "qemu:///system"
"""Connection URI the harness manages."""

QEMU_USER = "libvirt-qemu"
"""User Debian's libvirt runs QEMU as (compiled-in default without qemu.conf)."""

QEMU_GROUP = "libvirt-qemu"
"""Primary group of :data:`QEMU_USER`."""

_RUN_DIR = Path("/var/run/libvirt")
_VIRTLOGD_SOCKET = _RUN_DIR / "virtlogd-sock"

DEFAULT_SOCKET = _RUN_DIR / "libvirt-sock"
"""The read-write socket of the system's libvirtd (``qemu:///system``)."""

#: The host directories a privileged libvirtd/virtlogd uses, by the name of their private stand-in.
_PRIVATE_DIRS = {
    "etc": Path("/etc/libvirt"),
    "run": Path("/run/libvirt"),
    "lib": Path("/var/lib/libvirt"),
    "cache": Path("/var/cache/libvirt"),
    "log": Path("/var/log/libvirt"),
}
#: Run by ``sh`` in a new mount namespace: bind each SOURCE over TARGET, then exec the daemon.
_BIND_AND_EXEC = """set -e
mount=$1; shift
while [ "$1" != -- ]; do "$mount" --bind "$1" "$2"; shift 2; done
shift
exec "$@"
"""
_SBIN_PATH = "/usr/sbin:/sbin:/usr/bin:/bin"
_STOP_TIMEOUT = 15.0


class LibvirtdError(RuntimeError):
    """Raised when a reachable libvirtd cannot be provided."""


def _which(name: str) -> str:
    """Locate a daemon/tool, also searching the sbin directories."""
    search = os.pathsep.join(filter(None, (os.environ.get("PATH"), _SBIN_PATH)))
    found = shutil.which(name, path=search)
    if found is None:
        raise LibvirtdError(f"required program not found: {name}")
    return found


def virsh_reachable(uri: str = DEFAULT_URI, timeout: float = 10.0) -> bool:
    """Return True if ``virsh -c URI version`` succeeds within ``timeout`` seconds."""
    try:
        proc = subprocess.run(
            [_which("virsh"), "-c", uri, "version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0


def socket_server_pid(path: Path) -> int | None:
    """The pid of the process serving the UNIX stream socket at ``path`` (``SO_PEERCRED``), else None.

    For a daemon that created its listening socket itself, that is the daemon.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return None
        credentials = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, _uid, _gid = struct.unpack("3i", credentials)
    return pid if pid > 0 else None


def _socket_answers(path: Path) -> bool:
    """Return True if a UNIX stream socket at ``path`` accepts connections."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def _run_admin(argv: Sequence[str]) -> None:
    """Run a user/group administration command, raising on failure."""
    proc = subprocess.run([_which(argv[0]), *argv[1:]], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = proc.stderr.strip().splitlines()[-1:] or ["failed"]
        raise LibvirtdError(f"{' '.join(argv)}: {message[0]}")


def _group_exists(name: str) -> bool:
    try:
        grp.getgrnam(name)
    except KeyError:
        return False
    return True


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _in_group(user: str, group: str) -> bool:
    entry = grp.getgrnam(group)
    return user in entry.gr_mem or pwd.getpwnam(user).pw_gid == entry.gr_gid


def ensure_host_prerequisites() -> list[str]:
    """Create missing users, groups and directories libvirtd needs; return what was done.

    Creates (only if absent) the ``kvm``, ``libvirt`` and ``libvirt-qemu``
    system groups, the ``libvirt-qemu`` system user, and the libvirt
    run/log/lib/cache directories; makes the user a member of ``kvm`` and
    gives group ``kvm`` read/write access to ``/dev/kvm`` if present (what
    ``.ci/system-deps.sh`` does before any daemon starts).  Requires root.
    """
    if os.geteuid() != 0:
        raise LibvirtdError("preparing the host for libvirtd needs root")
    actions: list[str] = []
    for group in ("kvm", "libvirt", QEMU_GROUP):
        if not _group_exists(group):
            _run_admin(["groupadd", "--system", group])
            actions.append(f"groupadd {group}")
    if not _user_exists(QEMU_USER):
        _run_admin([
            "useradd", "--system", "--gid", QEMU_GROUP, "--groups", "kvm",
            "--home-dir", "/var/lib/libvirt", "--no-create-home",
            "--shell", "/usr/sbin/nologin", "--comment", "Libvirt Qemu", QEMU_USER,
        ])  # fmt: skip
        actions.append(f"useradd {QEMU_USER}")
    elif not _in_group(QEMU_USER, "kvm"):
        # QEMU runs as libvirt-qemu; outside group kvm, libvirt finds KVM unusable.
        _run_admin(["usermod", "--append", "--groups", "kvm", QEMU_USER])
        actions.append(f"usermod -aG kvm {QEMU_USER}")
    kvm = Path("/dev/kvm")
    if kvm.exists():
        info = kvm.stat()
        kvm_gid = grp.getgrnam("kvm").gr_gid
        if info.st_gid != kvm_gid or info.st_mode & 0o060 != 0o060:
            # What Debian's udev rule does.  Without it libvirt sees KVM as
            # unusable for libvirt-qemu and re-probes QEMU on every API call.
            os.chown(kvm, -1, kvm_gid)
            kvm.chmod(0o660)
            actions.append("chgrp kvm /dev/kvm; chmod 0660 /dev/kvm")
    for directory, mode in (
        (_RUN_DIR, 0o755),
        (Path("/var/log/libvirt"), 0o700),
        (Path("/var/log/libvirt/qemu"), 0o700),
        (Path("/var/lib/libvirt"), 0o755),
        (Path("/var/lib/libvirt/qemu"), 0o751),
        (Path("/var/cache/libvirt"), 0o755),
    ):
        if not directory.is_dir():
            directory.mkdir(mode=mode, parents=True)
            actions.append(f"mkdir {directory}")
    return actions


class LibvirtdHarness:
    """Provide a reachable libvirtd, starting (and later stopping) one only if needed.

    ``start()`` (or entering the context manager) reuses an already reachable
    daemon untouched; otherwise it prepares the host and runs ``virtlogd``
    and ``libvirtd`` in the foreground of their own sessions (equivalent to
    ``-d`` but with known PIDs), logging to files under ``log_dir``.
    """

    def __init__(
        self,
        uri: str = DEFAULT_URI,
        *,
        log_dir: Path | None = None,
        start_timeout: float = 60.0,
    ) -> None:
        """Configure the harness; nothing is started until :meth:`start`."""
        self.uri = uri
        """Connection URI checked with ``virsh -c``."""
        self.start_timeout = start_timeout
        """Seconds to wait for a freshly started libvirtd to answer."""
        self._log_dir = log_dir
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self.host_actions: list[str] = []
        """Host changes made by :func:`ensure_host_prerequisites` (empty if none)."""

    # -- introspection -----------------------------------------------------

    @property
    def started_daemons(self) -> tuple[str, ...]:
        """Names of daemons started by this harness that are still running."""
        return tuple(name for name, proc in self._procs.items() if proc.poll() is None)

    @property
    def owns_libvirtd(self) -> bool:
        """True if libvirtd was started by this harness (so it may be restarted)."""
        return "libvirtd" in self._procs

    def pid(self, name: str) -> int | None:
        """PID of a daemon started by this harness (``libvirtd``/``virtlogd``), else None."""
        proc = self._procs.get(name)
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def log_dir(self) -> Path:
        """Directory receiving the daemons' stdout/stderr (created on demand)."""
        if self._log_dir is None:
            self._log_dir = Path(tempfile.mkdtemp(prefix="powerdrivers-libvirtd-"))
        self._log_dir.mkdir(parents=True, exist_ok=True)
        return self._log_dir

    def is_reachable(self, timeout: float = 10.0) -> bool:
        """Return True if ``virsh -c <uri> version`` currently succeeds."""
        return virsh_reachable(self.uri, timeout)

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> LibvirtdHarness:
        """Ensure libvirtd answers on :attr:`uri`; start daemons only if it does not."""
        if self.is_reachable():
            return self
        if not self.uri.startswith("qemu:///system"):
            raise LibvirtdError(f"{self.uri} is not reachable and only qemu:///system can be started")
        if os.geteuid() != 0:
            raise LibvirtdError(f"{self.uri} is not reachable and starting libvirtd needs root")
        self.host_actions += ensure_host_prerequisites()
        try:
            if not _socket_answers(_VIRTLOGD_SOCKET):
                self._spawn("virtlogd")
                self._wait(lambda: _socket_answers(_VIRTLOGD_SOCKET), "virtlogd", 10.0)
            self.start_libvirtd()
        except BaseException:
            self.stop()
            raise
        return self

    def start_libvirtd(self) -> None:
        """Start libvirtd (if none answers) and wait until it is reachable."""
        if self.is_reachable():
            return
        self._spawn("libvirtd")
        # The first API call after start-up probes QEMU capabilities (seconds).
        deadline = time.monotonic() + self.start_timeout
        self._wait(
            lambda: self.is_reachable(timeout=max(5.0, deadline - time.monotonic())),
            "libvirtd",
            self.start_timeout,
        )

    def kill_libvirtd(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Terminate the harness-started libvirtd (domains' QEMU processes survive)."""
        if not self.owns_libvirtd:
            raise LibvirtdError("libvirtd was not started by this harness; refusing to kill it")
        self._terminate("libvirtd", sig)

    def restart_libvirtd(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Kill the harness-started libvirtd with ``sig`` and start it again."""
        self.kill_libvirtd(sig)
        self.start_libvirtd()

    def stop(self) -> None:
        """Stop only the daemons this harness started (libvirtd first); idempotent."""
        for name in ("libvirtd", "virtlogd"):
            if name in self._procs:
                self._terminate(name, signal.SIGTERM)

    def __enter__(self) -> Self:
        """Start (or reuse) libvirtd for the duration of a ``with`` block."""
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop whatever the harness started."""
        self.stop()

    # -- virsh -------------------------------------------------------------

    def virsh(
        self, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run ``virsh -c <uri> ARGS``; raise LibvirtdError on failure if ``check``."""
        argv = [_which("virsh"), "-c", self.uri, *args]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise LibvirtdError(f"virsh {' '.join(args)} timed out after {timeout:g}s") from exc
        if check and proc.returncode != 0:
            detail = (proc.stderr.strip() or proc.stdout.strip()).splitlines()[:1] or ["failed"]
            raise LibvirtdError(f"virsh {' '.join(args)}: {detail[0]}")
        return proc

    # -- internals ---------------------------------------------------------

    def _daemon_argv(self, name: str) -> list[str]:
        """The command line that runs daemon ``name`` in the foreground."""
        return [_which(name)]

    def _spawn(self, name: str) -> None:
        """Start a daemon in the foreground of a new session, output to ``<log_dir>/<name>.log``."""
        argv = self._daemon_argv(name)
        with open(self.log_dir / f"{name}.log", "ab") as log:
            self._procs[name] = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait(self, ready: Callable[[], bool], name: str, timeout: float) -> None:
        """Poll ``ready`` until true; fail early if the daemon exited."""
        deadline = time.monotonic() + timeout
        proc = self._procs[name]
        while time.monotonic() < deadline:
            if ready():
                return
            if proc.poll() is not None:
                raise LibvirtdError(f"{name} exited with {proc.returncode}: {self._log_tail(name)}")
            time.sleep(0.2)
        raise LibvirtdError(f"{name} did not answer within {timeout:g}s: {self._log_tail(name)}")

    def _log_tail(self, name: str) -> str:
        """Last non-empty line of a daemon's log (for one-line error messages)."""
        try:
            lines = (self.log_dir / f"{name}.log").read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        lines = [line for line in lines if line.strip()]
        return lines[-1].strip() if lines else "empty log"

    def _terminate(self, name: str, sig: signal.Signals) -> None:
        """Send ``sig`` to a harness-started daemon and reap it (SIGKILL if it lingers)."""
        proc = self._procs.pop(name)
        if proc.poll() is not None:
            return
        proc.send_signal(sig)
        try:
            proc.wait(timeout=_STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT)


class PrivateLibvirtd(LibvirtdHarness):
    """A ``virtlogd`` and a ``libvirtd`` of the tests' own, sharing nothing with the system's.

    Both run in mount namespaces of their own, in which the libvirt
    directories of the host (``/etc/libvirt``, ``/run/libvirt``,
    ``/var/lib/libvirt``, ``/var/cache/libvirt``, ``/var/log/libvirt``) are
    bind mounts of directories under :attr:`root`; pid files are under
    ``<root>/run`` and the sockets under ``<root>/sock``.  A libvirtd
    started again later gets the same directories, so it finds the domains
    its predecessor left running.  :meth:`stop` removes every domain of the
    private daemon, stops both daemons, keeps QEMU's logs in :attr:`log_dir`
    and deletes :attr:`root`.

    Needs root: the daemon is privileged, as the system's is.
    """

    def __init__(
        self, *, root: Path | None = None, log_dir: Path | None = None, start_timeout: float = 120.0
    ) -> None:
        """Configure the daemon under ``root`` (default: a new temporary directory); start nothing yet."""
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="pd-libvirtd-"))
        """Directory holding the private daemon's configuration, state, sockets and pid files."""
        self.socket = self.root / "sock" / "libvirt-sock"
        """The private libvirtd's read-write socket."""
        super().__init__(
            f"qemu+unix:///system?socket={self.socket}",
            log_dir=log_dir if log_dir is not None else self.root / "daemon-logs",
            start_timeout=start_timeout,
        )

    def start(self) -> PrivateLibvirtd:
        """Start the private virtlogd and libvirtd and wait until libvirtd answers."""
        if os.geteuid() != 0:
            raise LibvirtdError("a private libvirtd needs root (mount namespaces, QEMU as libvirt-qemu)")
        self.host_actions += ensure_host_prerequisites()
        try:
            self.root.chmod(0o755)
            for name, target in _PRIVATE_DIRS.items():
                target.mkdir(parents=True, exist_ok=True)  # the mount point
                (self.root / name).mkdir(mode=0o700 if name == "log" else 0o755, exist_ok=True)
            (self.root / "sock").mkdir(mode=0o755, exist_ok=True)
            config = (
                f'# A private libvirtd of the powerdrivers tests.\nunix_sock_dir = "{self.root / "sock"}"\n'
            )
            (self.root / "etc" / "libvirtd.conf").write_text(config)
            virtlogd_socket = self.root / "run" / "virtlogd-sock"
            self._spawn("virtlogd")
            self._wait(lambda: _socket_answers(virtlogd_socket), "virtlogd", 10.0)
            self.start_libvirtd()
        except BaseException:
            self.stop()
            raise
        return self

    def start_libvirtd(self) -> None:
        """Start the private libvirtd (unless it runs) and wait until it answers."""
        if self.pid("libvirtd") is not None and self.is_reachable():
            return
        super().start_libvirtd()

    def stop(self) -> None:
        """Remove the private daemon's domains, stop its daemons and delete its root; idempotent."""
        if self.pid("libvirtd") is not None:
            for name in self._domains():
                self.virsh("destroy", name, check=False)
                self.virsh("undefine", "--managed-save", "--snapshots-metadata", name, check=False)
        super().stop()
        self._kill_orphaned_qemu()
        qemu_logs = self.root / "log" / "qemu"
        if qemu_logs.is_dir():  # keep what QEMU said beside the daemons' logs
            shutil.copytree(qemu_logs, self.log_dir / "qemu", dirs_exist_ok=True)
        shutil.rmtree(self.root, ignore_errors=True)

    def qemu_log(self, domain: str) -> Path:
        """The log libvirt keeps of a domain's QEMU process (its command line, and its errors).

        :meth:`stop` copies these logs to ``<log_dir>/qemu``.
        """
        return self.root / "log" / "qemu" / f"{domain}.log"

    def _daemon_argv(self, name: str) -> list[str]:
        run = self.root / "run"
        binds = [str(path) for key, target in _PRIVATE_DIRS.items() for path in (self.root / key, target)]
        daemon = [_which(name), "--pid-file", str(run / f"{name}.pid")]
        if name == "libvirtd":
            daemon += ["--config", str(self.root / "etc" / "libvirtd.conf")]
        return [
            _which("unshare"), "--mount", "--propagation", "private", "--",
            _which("sh"), "-c", _BIND_AND_EXEC, "sh", _which("mount"), *binds, "--", *daemon,
        ]  # fmt: skip

    def _domains(self) -> list[str]:
        listing = self.virsh("list", "--all", "--name", check=False)
        return [line.strip() for line in listing.stdout.splitlines() if line.strip()]

    def _kill_orphaned_qemu(self) -> None:
        """Kill QEMU processes of the private daemon's domains that outlived it (a test died mid-way)."""
        for pidfile in (self.root / "run" / "qemu").glob("*.pid"):
            try:
                pid = int(pidfile.read_text().strip())
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except (OSError, ValueError):
                continue
            # The domain's QEMU names its guest; a recycled pid does not.
            if f"guest={pidfile.stem},".encode() in b",".join(cmdline) + b",":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
