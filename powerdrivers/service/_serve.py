"""``powerdrivers serve --config FILE``: the fleet, its API and its dashboard on uvicorn.

Registered into the ``powerdrivers`` parser by :func:`register_service_commands`. Nothing
heavy is imported until the verb runs: ``powerdrivers --help`` works (and stays quick) without
the ``service`` extra, and ``serve`` without it says which extra to install (exit 2).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import secrets
import signal
import socket
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from powerdrivers import ConfigurationError, PowerDriversError
from powerdrivers._cli_support import EXIT_OK

if TYPE_CHECKING:
    import uvicorn

    from powerdrivers.service._config import ServiceConfig

#: Adds one subcommand to the ``powerdrivers`` parser: name, handler, help text.
CommandAdder = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]

_LOG_LEVELS = ("debug", "info", "warning", "error")
#: Seconds uvicorn waits for open requests after a stop signal, once streams are closed.
_GRACEFUL_S = 5
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_LOG = logging.getLogger("powerdrivers.service")
_EXTRA_MODULES = ("fastapi", "uvicorn", "jinja2", "prometheus_client", "sqlalchemy")


def register_service_commands(command: CommandAdder) -> None:
    """Add the ``serve`` verb through the core parser's ``command`` function."""
    serve = command("serve", _cmd_serve, "run the reference compute service: a fleet's API and dashboard")
    serve.add_argument("--config", required=True, metavar="FILE", help="the service's TOML config file")
    serve.add_argument(
        "--log-level", choices=_LOG_LEVELS, default="info", help="what the service logs; default info"
    )


class ServiceExtraMissing(ConfigurationError):
    """The ``service`` extra is not installed: ``serve`` cannot run."""


class ListenFailed(PowerDriversError):
    """The service could not listen on its address (taken, or not this machine's): exit 1."""


def _check_extra() -> None:
    missing = [name for name in _EXTRA_MODULES if not _importable(name)]
    if missing:
        raise ServiceExtraMissing(
            f"powerdrivers serve needs the service extra: pip install 'powerdrivers[service]' "
            f"({', '.join(missing)} not installed)"
        )


def _cmd_serve(options: argparse.Namespace) -> int:
    _check_extra()
    from powerdrivers.service._config import load_config

    config = load_config(options.config)
    _configure_logging(options.log_level)
    if config.store.startswith("postgresql") and not _importable("psycopg"):
        raise ServiceExtraMissing(
            "a PostgreSQL store needs the postgresql extra: pip install 'powerdrivers[postgresql]'"
        )
    run_service(config, options.log_level)
    return EXIT_OK


def _importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def _configure_logging(level: str) -> None:
    # The CLI's root handler ("powerdrivers: LEVEL: message") prints the service's and uvicorn's lines.
    logging.getLogger().setLevel(level.upper())
    for name in ("powerdrivers", "uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).setLevel(level.upper())
    # The store's migrations narrate every step at info: worth seeing only when debugging.
    logging.getLogger("alembic").setLevel(level.upper() if level == "debug" else "WARNING")


def run_service(config: ServiceConfig, log_level: str = "info") -> None:
    """Listen, start the fleet, serve its app until SIGTERM or SIGINT, then stop everything cleanly.

    The address is bound first, so a service that cannot listen never acts on a host. A stop
    signal while the fleet starts (its first resyncs can take a while) ends it there, cleanly.
    Raises ``ListenFailed`` when the address cannot be listened on and ``StoreError`` when the
    store cannot be opened (either way nothing is left running).
    """
    import uvicorn

    from powerdrivers.service._app import create_app
    from powerdrivers.service._fleet import Fleet

    previous = {sig: signal.signal(sig, _stop_requested) for sig in _STOP_SIGNALS}
    fleet = Fleet(config)
    listening: socket.socket | None = None
    try:
        try:
            # Built before the fleet starts, so that its metrics hear the first resyncs too.
            app = create_app(fleet)
            server_config = uvicorn.Config(
                app,
                host=config.listen_host,
                port=config.listen_port,
                log_config=None,
                log_level=log_level,
                timeout_graceful_shutdown=_GRACEFUL_S,
                server_header=False,
            )
            listening = _listen(server_config, config)
            fleet.start()
            # uvicorn re-raises the signal it stopped for once it is done: a no-op handler here
            # makes that the end of a clean stop (exit 0), not a death by the signal.
            for sig in _STOP_SIGNALS:
                signal.signal(sig, _ignore)
        except _StopRequested:
            _LOG.info("service: stopped while starting")
            return
        _make_server(server_config, config).run(sockets=[listening])
    finally:
        fleet.stop()
        if listening is not None:
            listening.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _StopRequested(Exception):
    """A stop signal arrived before the service began serving."""


def _stop_requested(*_: object) -> None:
    raise _StopRequested


def _ignore(*_: object) -> None:
    """Swallow the stop signal uvicorn raises again after its own clean stop."""


def _listen(server_config: uvicorn.Config, config: ServiceConfig) -> socket.socket:
    """Bind and listen on the service's address (uvicorn's own way), or raise ``ListenFailed``."""
    try:
        return server_config.bind_socket()
    except SystemExit:
        # uvicorn logged why (in use, no right to the port) and asked to exit.
        raise ListenFailed(
            f"cannot listen on {config.listen_host}:{config.listen_port} (see the error above)"
        ) from None


def _make_server(server_config: uvicorn.Config, config: ServiceConfig) -> uvicorn.Server:
    """Return uvicorn's server, announcing itself once listening and closing streams on a stop signal."""
    import uvicorn

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                host = config.listen_host
                shown = f"[{host}]" if ":" in host else host
                sys.stdout.write(
                    f"powerdrivers service on http://{shown}:{config.listen_port}/ "
                    f"({len(config.hosts)} hosts, store {config.redacted_store})\n"
                )
                sys.stdout.flush()

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # Event streams never end by themselves, and uvicorn waits for open responses.
            from powerdrivers.service._sse import close_streams

            close_streams(server_config.app)
            super().handle_exit(sig, frame)

    return Server(server_config)


# -- make serve -----------------------------------------------------------------------------------

_DEMO_HOSTS = ("lab-1", "lab-2", "lab-3")
_DEMO_INSTANCES = ("web-1", "web-2", "db-1", "cache-1", "batch-1", "batch-2")
#: VCPUs by the instance name's first two letters (one otherwise): the pages show several plots.
_DEMO_VCPUS = {"we": 2, "db": 4}


def prepare_demo(directory: str | os.PathLike[str]) -> Path:
    """Create (once) a demo in ``directory``: 3 fake hosts, an SQLite store, 2 token files; return its config.

    Used by ``make serve``. Each host's instances are spawned (ids of their own), some then
    paused or powered off so the dashboard shows every state; VCPUs are sampled every 2 s. The
    tokens are new random values in files of mode 0600; their paths are printed, never the tokens.
    """
    from powerdrivers import InstanceSpec, load_driver

    folder = Path(directory).resolve()
    config = folder / "service.toml"
    if not config.exists():
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f'store = "sqlite:///{folder / "state.db"}"', 'listen = "127.0.0.1:8080"', ""]
        # VCPUs sampled every 2 s (not the default 15), so the instance pages' plots fill at once.
        lines += ["[keeper]", "vcpu_sample_interval = 2", "vcpu_retention = 21600", ""]
        for host in _DEMO_HOSTS:
            state = folder / f"{host}.json"
            with load_driver("fake", f"fake://{state}", seed="empty") as driver:
                for number, name in enumerate(_DEMO_INSTANCES):
                    vcpus = _DEMO_VCPUS.get(name[:2], 1)
                    reading = driver.spawn(InstanceSpec(name=f"{host}-{name}", vcpus=vcpus))
                    if name.startswith("cache"):
                        driver.pause(reading.id)
                    elif number % 3 == 1:
                        driver.power_off(reading.id)
            lines += ["[[hosts]]", f'name = "{host}"', 'driver = "fake"', f'uri = "fake://{state}"', ""]
        for role in ("operator", "reader"):
            _write_private(folder / f"{role}.token", secrets.token_urlsafe(32))
            lines += [
                "[[tokens]]",
                f'name = "{role}"',
                f'role = "{role}"',
                f'value_file = "{role}.token"',
                "",
            ]
        # Written last: its presence means the demo is complete.
        config.write_text("\n".join(lines))
    sys.stdout.write(
        f"demo config: {config}\n"
        f"operator token: in {folder / 'operator.token'}; reader token: in {folder / 'reader.token'}\n"
        "log in at http://127.0.0.1:8080/login with one of them\n"
    )
    return config


def _write_private(path: Path, value: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as opened:
        opened.write(value + "\n")
