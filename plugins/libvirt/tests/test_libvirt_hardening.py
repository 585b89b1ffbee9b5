"""The libvirt driver at its edges: bounded options, racing callers, and secrets that never show."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from libvirt_support.nodes import settle_running
from powerdrivers_libvirt import LibvirtDriver

import powerdrivers
from powerdrivers import (
    Driver,
    HypervisorError,
    InvalidOption,
    InvalidStateTransition,
    InvalidURI,
    Operation,
    PowerDriversError,
    PowerState,
)

DEFAULT = "test:///default"


def _cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "libvirt", *argv],
        capture_output=True, text=True, check=False, env={**os.environ, **(env or {})},
    )  # fmt: skip


# -- options ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("reconnect_timeout", "nan"),
        ("reconnect_timeout", float("nan")),
        ("reconnect_timeout", "inf"),
        ("reconnect_timeout", "-1"),
        ("reconnect_timeout", "3601"),
        ("reconnect_timeout", "soon"),
        ("keepalive_interval", "inf"),
        ("keepalive_interval", float("inf")),
        ("keepalive_interval", "nan"),
        ("keepalive_interval", "0"),
        ("keepalive_interval", "-2"),
        ("keepalive_interval", "2.5"),
        ("keepalive_interval", "3601"),
        ("keepalive_interval", True),
        ("keepalive_count", str(2**40)),
        ("keepalive_count", 2**40),
        ("keepalive_count", "2**40"),
        ("keepalive_count", "0"),
        ("keepalive_count", "-1"),
        ("keepalive_count", "101"),
        ("keepalive_count", "1e3"),
    ],
)
def test_out_of_bounds_options_are_invalid_options_naming_them(option: str, value: object) -> None:
    with pytest.raises(InvalidOption, match=f"libvirt option {option} must be"):
        powerdrivers.load_driver("libvirt", DEFAULT, **{option: value})


@pytest.mark.parametrize(
    "options",
    [
        {"keepalive_interval": "-1"},
        {"keepalive_interval": -1, "keepalive_count": 1},
        {"keepalive_interval": "3600", "keepalive_count": "100"},
        {"keepalive_interval": " 10 ", "keepalive_count": 3},
        {"reconnect_timeout": "0"},
        {"reconnect_timeout": 0.5},
        {"reconnect_timeout": "3600"},
    ],
)
def test_options_within_bounds_are_taken(options: dict[str, object]) -> None:
    with powerdrivers.load_driver("libvirt", DEFAULT, **options) as driver:
        assert driver.get_instance("test").power_state is PowerState.RUNNING


def test_poll_interval_is_refused_saying_why() -> None:
    with pytest.raises(InvalidOption) as caught:
        powerdrivers.load_driver("libvirt", DEFAULT, poll_interval="1")
    assert str(caught.value) == (
        "the libvirt driver has no option poll_interval: it never polls, libvirt's lifecycle "
        "events report every change as it happens"
    )


def test_the_cli_reports_a_bad_option_as_a_usage_error_not_a_broken_plugin() -> None:
    done = _cli("-c", DEFAULT, "-o", "keepalive_interval=inf", "list")
    assert done.returncode == 2, done.stderr
    assert "keepalive_interval" in done.stderr and "cannot be loaded" not in done.stderr


# -- racing callers --------------------------------------------------------------------

#: Per operation: how to take the default node's running domain where the operation may
#: start, and the operation.
RACES: dict[str, tuple[Callable[[Driver], object], Callable[[Driver], object]]] = {
    "start": (lambda d: d.power_off("test"), lambda d: d.start("test")),
    "power_off": (lambda d: None, lambda d: d.power_off("test")),
    "pause": (lambda d: None, lambda d: d.pause("test")),
    "unpause": (lambda d: d.pause("test"), lambda d: d.unpause("test")),
    "suspend": (lambda d: None, lambda d: d.suspend("test")),
    "resume": (lambda d: d.suspend("test"), lambda d: d.resume("test")),
}


@pytest.fixture
def default_driver() -> Iterator[Driver]:
    """The libvirt driver on libvirt's built-in test node, its one domain, ``test``, running.

    The node lives as long as any connection to it in the process: the domain is put back
    running afterwards too, for the tests that follow.
    """
    with powerdrivers.load_driver("libvirt", DEFAULT) as loaded:
        settle_running(loaded)
        yield loaded
        settle_running(loaded)


def race(driver: Driver, act: Callable[[Driver], object]) -> list[BaseException | None]:
    """Run ``act`` on two threads at once; return how each ended (None: it succeeded)."""
    barrier = threading.Barrier(2)
    outcomes: list[BaseException | None] = []

    def racer() -> None:
        barrier.wait()
        try:
            act(driver)
        except BaseException as error:
            outcomes.append(error)
        else:
            outcomes.append(None)

    threads = [threading.Thread(target=racer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return outcomes


@pytest.mark.parametrize("operation", list(RACES))
def test_the_loser_of_a_race_gets_an_invalid_transition(default_driver: Driver, operation: str) -> None:
    prepare, act = RACES[operation]
    for _ in range(50):
        settle_running(default_driver)
        prepare(default_driver)
        outcomes = race(default_driver, act)
        assert len(outcomes) == 2
        assert outcomes.count(None) == 1, outcomes
        loser = next(outcome for outcome in outcomes if outcome is not None)
        assert isinstance(loser, InvalidStateTransition), repr(loser)
        assert (loser.instance, loser.operation) == ("test", operation)


def test_a_failure_the_state_does_not_explain_is_kept(default_driver: Driver) -> None:
    # libvirt's test driver has no virDomainPMWakeup: the domain stays off, where it may
    # start, so the error is no lost race and keeps its own type.
    assert isinstance(default_driver, LibvirtDriver)
    off = default_driver.power_off("test")
    with pytest.raises(powerdrivers.UnsupportedOperation, match="virDomainPMWakeup"):
        default_driver._on_domain(off, "start", lambda domain: domain.pMWakeup(0))


def test_a_shutdowns_forced_power_off_finding_the_guest_off_succeeds(default_driver: Driver) -> None:
    # The guest went off between the shutdown's last look and its forced power-off: the
    # shutdown's goal holds, so the power-off libvirt refuses is no failure.
    assert isinstance(default_driver, LibvirtDriver)
    running = default_driver.get_instance("test")
    default_driver.power_off("test")
    with default_driver._track(running, Operation.SHUTDOWN):
        default_driver._power_off(running)
    with pytest.raises(InvalidStateTransition, match="cannot power_off instance 'test': it is shutoff"):
        default_driver._power_off(running)


# -- secrets ---------------------------------------------------------------------------

SECRET = "hunter"
#: Passwords holding the characters that end a URI's authority or user-info, raw and encoded.
PASSWORDS = [
    f"{SECRET}#z",
    f"{SECRET}?z",
    f"{SECRET}/z",
    f"{SECRET}@z",
    f"{SECRET}:z",
    f"{SECRET}#?/@:z",
    f"{SECRET}%23%3F%2F%40%3Az",
    f"{SECRET}z",
    # Starting with digits: libvirt reads them as a port of host 'admin' (and says so).
    f"12#{SECRET}",
    f"8080/x{SECRET}",
]
#: URIs whose password is all or mostly digits, read by libvirt as user 'admin''s port.
DIGIT_PASSWORD_URIS = [
    "qemu+tcp://admin:12#34@host/system",
    "qemu+tcp://admin:8080/x@host/system",
    "qemu+tcp://user:8080@host",
    "qemu+tcp://user:1@host",
]
URI_SHAPES = [
    "test://admin:{}@127.0.0.1:1",
    "test://admin:{}@127.0.0.1:1/default",
    "test://admin:{}@/default",
    "qemu+tcp://admin:{}@127.0.0.1:1/system",
    "qemu+ssh://admin:{}@example.invalid/system?keyfile=/k",
    "xen+tls://admin:{}@[::1]:1/system",
]
NO_PASSWORD_IN_URI = (
    "the libvirt driver takes no password in the URI, where process listings and logs would show it: "
    "set POWERDRIVERS_PASSWORD or the password option (libvirt asks for it through its "
    "authentication callback); the user name may stay in the URI or go in the username option"
)


def everything_shown(error: BaseException, caplog: pytest.LogCaptureFixture) -> str:
    """The error as a traceback shows it (causes included), its repr, and every log record."""
    shown = [*traceback.format_exception(error), repr(error), *map(repr, error.args)]
    for record in caplog.records:
        shown.append(record.getMessage())
        if record.exc_info and record.exc_info[1] is not None:
            shown.extend(traceback.format_exception(record.exc_info[1]))
    return "\n".join(shown)


@pytest.mark.parametrize("shape", URI_SHAPES)
@pytest.mark.parametrize("password", PASSWORDS)
def test_a_password_in_the_uri_is_refused_without_showing_it(
    shape: str, password: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("libvirt", shape.format(password))
    assert str(caught.value) == NO_PASSWORD_IN_URI
    assert SECRET not in everything_shown(caught.value, caplog)


@pytest.mark.parametrize("uri", DIGIT_PASSWORD_URIS)
def test_a_password_of_digits_in_the_uri_is_refused(uri: str) -> None:
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("libvirt", uri)
    assert str(caught.value) == NO_PASSWORD_IN_URI


@pytest.mark.parametrize("password", [f"{SECRET}#?/@:z", f"{SECRET}%23z"])
def test_the_cli_refuses_a_password_in_the_uri_without_showing_it(password: str) -> None:
    done = _cli("-c", f"test://admin:{password}@127.0.0.1:1/default", "list")
    assert done.returncode == 2
    assert "POWERDRIVERS_PASSWORD" in done.stderr
    assert SECRET not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "uri",
    [
        "test://admin@/default",
        "qemu+ssh://admin@host:22/system?keyfile=/a@b",
        "qemu:///system?socket=/a:b@c",
        "qemu+ssh://admin@host/system",
        "qemu+tcp://host:16509/system",
    ],
)
def test_a_user_without_a_password_stays_welcome(uri: str) -> None:
    from powerdrivers_libvirt._uri import check_uri

    check_uri(uri)


@pytest.mark.parametrize("password", PASSWORDS)
def test_libvirt_messages_echoing_a_uri_are_scrubbed(
    password: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The default URI comes from the environment, unchecked by the driver; libvirt quotes it.
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", f"test://admin:{password}@127.0.0.1:1")
    with pytest.raises(PowerDriversError) as caught:
        powerdrivers.load_driver("libvirt")
    assert SECRET not in everything_shown(caught.value, caplog)


@pytest.mark.parametrize("password", ["48213#z", "48213/x", "48213"])
def test_libvirt_naming_a_password_as_a_port_is_scrubbed(
    password: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # libvirt reads host 'admin', port 48213, and says "... service '48213'": the port is the password.
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", f"qemu+tcp://admin:{password}@127.0.0.1/system")
    with pytest.raises(PowerDriversError) as caught:
        powerdrivers.load_driver("libvirt", reconnect_timeout=0)
    assert "48213" not in everything_shown(caught.value, caplog)


def test_libvirt_saying_unable_to_parse_keeps_the_rest_of_its_message(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LIBVIRT_DEFAULT_URI", f"test://admin:{SECRET}#z@127.0.0.1:1")
    with pytest.raises(HypervisorError) as caught:
        powerdrivers.load_driver("libvirt")
    assert str(caught.value) == (
        "libvirt error VIR_ERR_INTERNAL_ERROR: internal error: Unable to parse URI "
        "test://********@127.0.0.1:1 (connecting to the default URI)"
    )


def test_a_file_that_is_no_node_xml_is_named_never_quoted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    path = tmp_path / "passwd"
    path.write_text(f"root:{SECRET}:0:0:root:/root:/bin/sh\n")
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("libvirt", f"test://{path}")
    assert str(caught.value) == f"{path} is not a libvirt test-driver node XML file"
    assert SECRET not in everything_shown(caught.value, caplog)
    done = _cli("-c", f"test://{path}", "list")
    assert done.returncode == 2 and str(path) in done.stderr and SECRET not in done.stderr


def test_a_node_file_that_does_not_exist_is_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("libvirt", f"test://{tmp_path}/absent.xml")
    assert str(caught.value) == f"{tmp_path}/absent.xml does not exist"


def test_the_password_option_reaches_libvirt_only_through_the_auth_callback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    with powerdrivers.load_driver(
        "libvirt", DEFAULT, username="admin", password=powerdrivers.Secret(f"{SECRET}#z")
    ) as driver:
        driver.list_instances()
        assert SECRET not in repr(driver)
    assert all(SECRET not in record.getMessage() for record in caplog.records)
