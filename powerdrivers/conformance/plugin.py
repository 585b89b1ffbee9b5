"""The pytest plugin behind ``pytest --powerdrivers-driver NAME``.

Registered through the ``pytest11`` entry point; it does nothing unless
``--powerdrivers-driver`` is given.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from powerdrivers._capabilities import REQUIRED_CAPABILITIES, Capability
from powerdrivers._driver import Driver
from powerdrivers._exceptions import ConfigurationError, InvalidSpec
from powerdrivers._operations import Operation
from powerdrivers._values import parse_duration
from powerdrivers.conformance._harness import reachable_states
from powerdrivers.conformance._session import KitSession, Restored
from powerdrivers.conformance._settings import KitSettings

_KIT = Path(__file__).with_name("kit_tests.py")
_SETTINGS = pytest.StashKey[KitSettings]()
_SESSION = pytest.StashKey[KitSession]()
_RESTORED = pytest.StashKey[list[Restored]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add the kit's options."""
    group = parser.getgroup("powerdrivers", "powerdrivers conformance kit")
    group.addoption("--powerdrivers-driver", metavar="NAME", help="driver name, or package.module:Class")
    group.addoption("--powerdrivers-uri", metavar="URI", help="URI to connect the driver to")
    group.addoption(
        "--powerdrivers-option", metavar="KEY=VALUE", action="append", default=[], help="driver option"
    )
    group.addoption(
        "--powerdrivers-instance",
        metavar="ID",
        action="append",
        default=[],
        help="an existing instance the kit may power on and off (repeatable)",
    )
    group.addoption(
        "--powerdrivers-spawn", action="store_true", help="let the kit spawn and delete its own instances"
    )
    group.addoption(
        "--powerdrivers-spec", metavar="KEY=VALUE", action="append", default=[], help="spawn spec field"
    )
    group.addoption(
        "--powerdrivers-timeout", metavar="SECONDS", default="30", help="bound on graceful operations"
    )
    group.addoption(
        "--powerdrivers-event-timeout", metavar="SECONDS", default="10", help="bound on the wait for an event"
    )


def _pairs(items: list[str], flag: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise pytest.UsageError(f"{flag} {item!r} is not KEY=VALUE")
        pairs[key] = value
    return pairs


def _seconds(config: pytest.Config, flag: str) -> float:
    value = config.getoption(flag.removeprefix("--").replace("-", "_"))
    try:
        return parse_duration(flag, value, positive=True)
    except ConfigurationError as error:
        raise pytest.UsageError(str(error)) from None


def pytest_configure(config: pytest.Config) -> None:
    """When asked for, record the settings and collect the kit (alone, unless paths were given)."""
    driver = config.getoption("powerdrivers_driver")
    if not driver:
        return
    settings = KitSettings(
        driver=driver,
        uri=config.getoption("powerdrivers_uri"),
        options=_pairs(config.getoption("powerdrivers_option"), "--powerdrivers-option"),
        instances=tuple(config.getoption("powerdrivers_instance")),
        spawn=config.getoption("powerdrivers_spawn"),
        spec=_pairs(config.getoption("powerdrivers_spec"), "--powerdrivers-spec"),
        timeout_s=_seconds(config, "--powerdrivers-timeout"),
        event_timeout_s=_seconds(config, "--powerdrivers-event-timeout"),
    )
    if not config.pluginmanager.has_plugin("logging"):
        # The kit reads the core's contract log through caplog, which the logging plugin provides.
        raise pytest.UsageError("the conformance kit needs pytest's logging plugin: drop -p no:logging")
    if not settings.spawn and not settings.instances:
        raise pytest.UsageError(
            "the conformance kit needs --powerdrivers-instance ID or --powerdrivers-spawn"
        )
    if settings.spawn:
        try:
            settings.instance_spec("pdkit-check")
        except InvalidSpec as error:
            raise pytest.UsageError(f"--powerdrivers-spec: {error}") from None
    config.stash[_SETTINGS] = settings
    if config.args_source is not pytest.Config.ArgsSource.ARGS:
        config.args[:] = [str(_KIT)]
    else:
        config.args.append(str(_KIT))


def pytest_sessionstart(session: pytest.Session) -> None:
    """Load and connect the driver and find the given instances once, before any test runs."""
    if _SETTINGS in session.config.stash:
        session.config.stash[_SESSION] = KitSession.open(session.config.stash[_SETTINGS])


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session) -> None:
    """Put the given instances back in the power states they had before the run, and disconnect."""
    kit = session.config.stash.get(_SESSION, None)
    if kit is None:
        return
    del session.config.stash[_SESSION]
    restored = kit.restore()
    closing = kit.close()
    session.config.stash[_RESTORED] = [*restored, *([closing] if closing else [])]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Say what became of each given instance; a failure to restore one is shown in red."""
    restored = config.stash.get(_RESTORED, [])
    if not restored:
        return
    terminalreporter.write_sep("-", "powerdrivers conformance kit: after the run")
    for entry in restored:
        terminalreporter.write_line(entry.message, red=not entry.ok, bold=not entry.ok)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Generate only the cases that apply to what the driver declares."""
    if _SETTINGS not in metafunc.config.stash:
        return
    settings = metafunc.config.stash[_SETTINGS]
    capabilities = settings.driver_class().capabilities
    # Instances the kit was given are the author's: it never deletes them.
    never = {Operation.SPAWN} if settings.spawn else {Operation.SPAWN, Operation.DELETE}
    declared = [
        operation
        for operation in Operation
        if operation not in never and Capability.for_operation(operation) in capabilities
    ]
    undeclared = sorted(set(Capability) - capabilities - REQUIRED_CAPABILITIES - {Capability.NATIVE_EVENTS})
    if "declared_operation" in metafunc.fixturenames:
        metafunc.parametrize("declared_operation", declared, ids=str)
    if "undeclared_capability" in metafunc.fixturenames:
        metafunc.parametrize("undeclared_capability", undeclared, ids=str)
    if "start_state" in metafunc.fixturenames:
        metafunc.parametrize("start_state", reachable_states(capabilities), ids=str)
    if "any_operation" in metafunc.fixturenames:
        operations = [operation for operation in Operation if operation is not Operation.SPAWN]
        metafunc.parametrize("any_operation", operations, ids=str)


@pytest.fixture(scope="session")
def kit_settings(request: pytest.FixtureRequest) -> KitSettings:
    """Return the settings the kit was started with."""
    return request.config.stash[_SETTINGS]


@pytest.fixture(scope="session")
def kit_driver(request: pytest.FixtureRequest) -> Driver:
    """Return the driver under test, connected once for the whole run."""
    return request.config.stash[_SESSION].driver
