"""The service tests' shared parts: a config on fake hosts with two tokens, and a started Fleet on SQLite.

Every test gets its own folder: fake hypervisors in state files, an SQLite store, token files
of mode 0600. Nothing is mocked: the fleet loads the real fake driver and runs the real keeper.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_support import bearer
from fastapi import FastAPI
from sqlalchemy.engine import make_url
from starlette.testclient import TestClient

from powerdrivers import InstanceSpec, load_driver
from powerdrivers.service._app import create_app
from powerdrivers.service._config import ServiceConfig, load_config
from powerdrivers.service._fleet import Fleet

#: Instances each fake host starts with (half running, half shut off).
FAKE_INSTANCES = 4

#: Builds a config: ``make(hosts=2, store=None, instances=FAKE_INSTANCES, extra="")``.
ConfigFactory = Callable[..., ServiceConfig]


@pytest.fixture
def service_tokens() -> dict[str, str]:
    """The two API tokens' values by role: ``reader`` (named reader) and ``operator`` (named operator)."""
    return {"reader": secrets.token_urlsafe(24), "operator": secrets.token_urlsafe(24)}


def make_fake_host(path: Path, prefix: str, instances: int) -> None:
    """Create a fake hypervisor in the state file ``path``: ``instances`` instances, every other one shut off.

    Spawned rather than seeded, so each gets an id of its own (seeded ids repeat across hosts).
    """
    with load_driver("fake", f"fake://{path}", seed="empty") as driver:
        for number in range(instances):
            reading = driver.spawn(InstanceSpec(name=f"{prefix}-vm-{number}"))
            if number % 2:
                driver.power_off(reading.id)


def _secret_file(path: Path, value: str) -> Path:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as opened:
        opened.write(value + "\n")
    return path


@pytest.fixture
def service_config_factory(tmp_path: Path, service_tokens: dict[str, str]) -> ConfigFactory:
    """Return a function writing a config file in ``tmp_path`` and loading it.

    ``hosts`` fake hosts named ``host-1``... each in a state file with ``instances`` instances;
    ``store`` a store URL (default an SQLite file in ``tmp_path``; a password in it goes to a
    ``store_password_file``); ``extra`` TOML for the top level (before the tables); ``name`` the
    file's name; ``listen`` where ``powerdrivers serve`` listens; ``host_options`` more of each
    host's fake driver options, as inline-table TOML (``'latency = 0.5'``); ``guest_delay`` the seconds
    each host's guests take to shut down or reboot.
    """
    for role, value in service_tokens.items():
        _secret_file(tmp_path / f"{role}.token", value)

    def make(
        hosts: int = 2,
        store: str | None = None,
        instances: int = FAKE_INSTANCES,
        extra: str = "",
        name: str = "service.toml",
        listen: str = "127.0.0.1:8080",
        host_options: str = "",
        guest_delay: float = 0.05,
    ) -> ServiceConfig:
        url = store or f"sqlite:///{tmp_path / 'service.db'}"
        lines = [f'listen = "{listen}"']
        parsed = make_url(url)
        if parsed.password is not None:
            # The config takes no password inline: the fixture's URL's goes into a file.
            _secret_file(tmp_path / f"{name}.store-password", str(parsed.password))
            lines.append(f'store_password_file = "{name}.store-password"')
            url = parsed._replace(password=None).render_as_string(hide_password=False)
        lines.insert(0, f'store = "{url}"')
        lines.append(extra)  # last of the top level: it may open a table ([keeper])
        for number in range(1, hosts + 1):
            state = tmp_path / f"host-{number}.json"
            if not state.exists():
                make_fake_host(state, f"h{number}", instances)
            lines += [
                "[[hosts]]",
                f'name = "host-{number}"',
                'driver = "fake"',
                f'uri = "fake://{state}"',
                f"options = {{ {', '.join(filter(None, [f'guest_delay = {guest_delay}', host_options]))} }}",
            ]
        for role in ("reader", "operator"):
            lines += ["[[tokens]]", f'name = "{role}"', f'role = "{role}"', f'value_file = "{role}.token"']
        path = tmp_path / name
        path.write_text("\n".join(lines) + "\n")
        return load_config(path)

    return make


@pytest.fixture
def service_config(service_config_factory: ConfigFactory) -> ServiceConfig:
    """A config of 2 fake hosts (``host-1``, ``host-2``) on an SQLite file, with a reader and an operator."""
    return service_config_factory()


@pytest.fixture
def fleet(service_config: ServiceConfig) -> Iterator[Fleet]:
    """A started Fleet over ``service_config`` (it owns both hosts); stopped after the test."""
    started = Fleet(service_config)
    started.start()
    try:
        yield started
    finally:
        started.stop()


@pytest.fixture
def app(fleet: Fleet) -> FastAPI:
    """The service's app over the started ``fleet``."""
    return create_app(fleet)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    """A client of ``app`` (started, so its lifespan ran) that answers server errors as responses."""
    with TestClient(app, raise_server_exceptions=False) as opened:
        yield opened


@pytest.fixture
def operator(service_tokens: dict[str, str]) -> dict[str, str]:
    """The operator token's Authorization header."""
    return bearer(service_tokens["operator"])


@pytest.fixture
def reader(service_tokens: dict[str, str]) -> dict[str, str]:
    """The reader token's Authorization header."""
    return bearer(service_tokens["reader"])
