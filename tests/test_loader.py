"""The loader against real, pip-installed plugin distributions."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

import powerdrivers
from powerdrivers import (
    DriverConflict,
    DriverLoadError,
    DriverNotFound,
    IncompatibleDriver,
    InvalidOption,
    Outcome,
    PowerState,
    UnsupportedOperation,
)

pytestmark = pytest.mark.usefixtures("test_plugins")


def _infos() -> dict[tuple[str, str | None], powerdrivers.DriverInfo]:
    return {(info.name, info.distribution): info for info in powerdrivers.available_drivers()}


def test_working_drivers_are_listed_with_their_distribution_version_and_capabilities() -> None:
    infos = _infos()
    fake = infos[("fake", "powerdrivers-fake")]
    assert fake.status == "ok" and fake.error is None
    assert fake.interface_version == "1.1"
    assert "native_events" in fake.capabilities
    third = infos[("thirdparty", "powerdrivers-test-thirdparty")]
    assert (third.status, third.version, third.capabilities) == (
        "ok",
        "0.0.1",
        ("power_off", "shutdown", "start"),
    )


@pytest.mark.parametrize(
    ("name", "distribution", "expected"),
    [
        ("broken", "powerdrivers-test-broken", "ImportError: libhypothetical.so.3"),
        ("notadriver", "powerdrivers-test-malformed", "pd_malformed.not_a_driver, which is not a subclass"),
        (
            "halfdriver",
            "powerdrivers-test-malformed",
            "declares capability pause but does not implement _pause",
        ),
        ("abstractdriver", "powerdrivers-test-malformed", "does not implement _power_off, _read_all, _start"),
        ("noversion", "powerdrivers-test-malformed", "does not declare interface_version"),
        ("future", "powerdrivers-test-future", "implements driver interface 2.0"),
        ("twin", "powerdrivers-test-twin-a", "also registered by powerdrivers-test-twin-b"),
        ("twin", "powerdrivers-test-twin-b", "also registered by powerdrivers-test-twin-a"),
    ],
)
def test_a_broken_plugin_is_reported_with_its_cause(name: str, distribution: str, expected: str) -> None:
    info = _infos()[(name, distribution)]
    assert info.status == "error"
    assert info.error is not None and expected in info.error
    assert info.capabilities == ()


def test_every_other_driver_still_loads_beside_broken_ones() -> None:
    with powerdrivers.load_driver("fake") as fake, powerdrivers.load_driver("thirdparty") as third:
        assert {r.name for r in fake.list_instances()} >= {"web-1", "legacy-db"}
        assert {r.name for r in third.list_instances()} == {"alpha", "beta"}


def test_unknown_driver_lists_the_installed_ones() -> None:
    with pytest.raises(DriverNotFound) as caught:
        powerdrivers.load_driver("hyperv")
    assert caught.value.name == "hyperv"
    assert {"fake", "thirdparty", "broken"} <= set(caught.value.available)
    assert "installed drivers: " in str(caught.value)


def test_import_failure_names_plugin_distribution_and_cause() -> None:
    with pytest.raises(DriverLoadError) as caught:
        powerdrivers.load_driver("broken")
    error = caught.value
    assert (error.name, error.distribution) == ("broken", "powerdrivers-test-broken")
    assert "ImportError" in error.cause and "libhypothetical" in error.cause


def test_two_distributions_with_one_name_is_an_error_naming_both() -> None:
    with pytest.raises(DriverConflict) as caught:
        powerdrivers.load_driver("twin")
    assert caught.value.distributions == ("powerdrivers-test-twin-a", "powerdrivers-test-twin-b")


def test_incompatible_interface_version_names_plugin_version_and_supported_range() -> None:
    with pytest.raises(IncompatibleDriver) as caught:
        powerdrivers.load_driver("future")
    error = caught.value
    assert (error.name, error.declared, error.supported) == (
        "future",
        "2.0",
        powerdrivers.SUPPORTED_INTERFACE_RANGE,
    )
    assert "2.0" in str(error) and powerdrivers.SUPPORTED_INTERFACE_RANGE in str(error)


@pytest.mark.parametrize("name", ["notadriver", "halfdriver", "abstractdriver", "noversion"])
def test_malformed_plugins_are_refused_before_use(name: str) -> None:
    with pytest.raises(DriverLoadError) as caught:
        powerdrivers.load_driver_class(name)
    assert caught.value.distribution == "powerdrivers-test-malformed"


def test_an_untyped_error_from_a_driver_constructor_becomes_a_load_error() -> None:
    with pytest.raises(DriverLoadError, match="RuntimeError: socket exploded"):
        powerdrivers.load_driver("explodes")


def test_options_are_validated_by_the_driver() -> None:
    with pytest.raises(InvalidOption, match="no option colour"):
        powerdrivers.load_driver("thirdparty", colour="blue")


def test_polling_driver_gets_events_and_event_driven_shutdown_from_the_core() -> None:
    with powerdrivers.load_driver("thirdparty", guest_delay="0.2", poll_interval="0.02") as driver:
        events: list[powerdrivers.Event] = []
        with driver.subscribe(events.append):
            result = driver.shutdown("alpha", timeout=5, retry_interval=2)
            deadline = time.monotonic() + 2
            while (
                not any(e.kind is powerdrivers.EventKind.STOPPED for e in events)
                and time.monotonic() < deadline
            ):
                time.sleep(0.01)
        assert result.outcome is Outcome.GRACEFUL
        # Completion came from the polled event, long before the 2 s retry interval.
        assert result.elapsed_s < 1.0
        assert result.reading.power_state is PowerState.SHUTOFF
        kinds = [(e.kind, e.caused_by_operation) for e in events if e.instance_id == "id-alpha"]
        assert (powerdrivers.EventKind.STOPPED, powerdrivers.Operation.SHUTDOWN) in kinds


def test_undeclared_capability_raises_unsupported_not_not_implemented() -> None:
    with powerdrivers.load_driver("thirdparty") as driver:
        for call in (
            lambda: driver.pause("alpha"),
            lambda: driver.suspend("alpha"),
            lambda: driver.reboot("alpha", hard=True),
            lambda: driver.vcpu_stats("alpha"),
            lambda: driver.delete("alpha"),
        ):
            with pytest.raises(UnsupportedOperation, match="the thirdparty driver does not support"):
                call()


def test_cli_drivers_reports_broken_plugins_and_exits_zero(
    plugin_env: dict[str, str], tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "drivers", "-f", "json"],
        capture_output=True,
        text=True,
        env=plugin_env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    import json

    rows = {(row["name"], row["distribution"]): row for row in json.loads(done.stdout)}
    assert rows[("broken", "powerdrivers-test-broken")]["status"] == "error"
    assert rows[("fake", "powerdrivers-fake")]["status"] == "ok"
    assert set(rows[("fake", "powerdrivers-fake")]) == {
        "name", "distribution", "version", "interface_version", "capabilities", "status", "error",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("driver", "fragment"),
    [
        ("broken", "ImportError"),
        ("twin", "more than one distribution"),
        ("future", "interface 2.0"),
        ("nosuch", "installed drivers"),
    ],
)
def test_cli_plugin_errors_exit_2_with_one_line(
    plugin_env: dict[str, str], driver: str, fragment: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", driver, "list"],
        capture_output=True,
        text=True,
        env=plugin_env,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "Traceback" not in done.stderr


def test_installed_names_are_listed_without_importing_any_plugin() -> None:
    from powerdrivers._loader import installed_driver_names

    names = installed_driver_names()
    assert {"fake", "broken", "twin", "thirdparty", "future"} <= set(names)
    assert names == sorted(set(names))
    # The broken plugin's import would fail; none of the test plugins was imported at all.
    assert not [module for module in sys.modules if module.startswith("pd_")]


def test_the_cli_names_the_installed_drivers_without_importing_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from powerdrivers._cli import EXIT_USAGE, main

    monkeypatch.delenv("POWERDRIVERS_DRIVER", raising=False)
    assert main(["list"]) == EXIT_USAGE
    message = capsys.readouterr().err
    assert "installed drivers: " in message and "broken" in message and "twin" in message
    assert not [module for module in sys.modules if module.startswith("pd_")]
