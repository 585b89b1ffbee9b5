"""Shared parts of the service benchmarks (issue 13): configs, a loopback server, serve processes.

Holds no benchmark itself. Configs are written as an operator writes them (TOML, the reader's
token in a file of mode 0600) and loaded by the service's own loader; ``powerdrivers serve``
processes are real subprocesses, stopped (or killed) by the benchmark that started them.
"""

from __future__ import annotations

import os
import secrets
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from sqlalchemy.engine import make_url

from powerdrivers import InstanceSpec, load_driver
from powerdrivers.service._config import ServiceConfig, load_config
from powerdrivers.service._sse import close_streams

#: Seconds a benchmark waits for something the service does in the background before failing.
WAIT_S = 30.0


def free_port() -> int:
    """Return a loopback port free now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _private(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as opened:
        opened.write(value + "\n")


def fake_host(path: Path, prefix: str, instances: int, *, running_every: int = 2) -> None:
    """Create a fake hypervisor in the state file ``path`` (once): ``instances`` spawned instances.

    Spawned rather than seeded, so every host's ids are its own; one in ``running_every`` is
    left running, the others are powered off.
    """
    if path.exists():
        return
    with load_driver("fake", f"fake://{path}", seed="empty") as driver:
        for number in range(instances):
            reading = driver.spawn(InstanceSpec(name=f"{prefix}-vm-{number}"))
            if number % running_every:
                driver.power_off(reading.id)


def write_config(
    folder: Path,
    name: str,
    store: str,
    hosts: list[str],
    *,
    token: str,
    role: str = "reader",
    listen: str = "127.0.0.1:8080",
    extra: str = "",
) -> ServiceConfig:
    """Write ``folder/name`` over the fake hosts ``hosts`` (state files ``folder/<host>.json``) and load it.

    The store's password, if its URL has one, goes to a file beside (the config takes none
    inline); ``token`` is the value of the one token, named ``bench``, of ``role``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    _private(folder / "bench.token", token)
    url = make_url(store)
    lines = [f'listen = "{listen}"', extra]
    if url.password is not None:
        _private(folder / f"{name}.store-password", str(url.password))
        lines.append(f'store_password_file = "{name}.store-password"')
        store = url._replace(password=None).render_as_string(hide_password=False)
    lines.insert(0, f'store = "{store}"')
    for host in hosts:
        lines += [
            "[[hosts]]",
            f'name = "{host}"',
            'driver = "fake"',
            f'uri = "fake://{folder / host}.json"',
        ]
    lines += ["[[tokens]]", 'name = "bench"', f'role = "{role}"', 'value_file = "bench.token"']
    path = folder / name
    path.write_text("\n".join(lines) + "\n")
    return load_config(path)


def new_token() -> str:
    """A fresh token value."""
    return secrets.token_urlsafe(24)


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` on uvicorn on a free loopback port in a thread; yield its base URL; stop it."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="bench-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AssertionError("uvicorn did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        close_streams(app)
        server.should_exit = True
        thread.join(WAIT_S)


class ServeProcess:
    """A ``powerdrivers serve --config`` subprocess, ready once it announced its URL."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.url = f"http://{config.listen_host}:{config.listen_port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "powerdrivers", "serve", f"--config={config.path}", "--log-level=warning"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.process.stdout is not None
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline() if ready else ""
        if not line.startswith("powerdrivers service on "):
            self.kill()
            raise AssertionError(f"powerdrivers serve did not start (said {line.strip()!r})")

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def kill(self) -> None:
        """SIGKILL the process (if it still runs) and reap it."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(timeout=WAIT_S)
        if self.process.stdout is not None:
            self.process.stdout.close()

    def stop(self) -> None:
        """Stop the process as an operator does (SIGTERM), killing it if it does not end in time."""
        if self.process.poll() is None:
            self.process.terminate()
            with suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=WAIT_S)
        self.kill()
