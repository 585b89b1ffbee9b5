"""The Xen driver's options and URI: every value checked, every secret kept out of every message."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from urllib.parse import quote

import pytest
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator

import powerdrivers
from powerdrivers import Driver, InvalidOption, InvalidURI, Operation, Outcome, Secret


def connect(sim: XapiSimulator, **options: object) -> Driver:
    settings: dict[str, object] = {"username": DEFAULT_USERNAME, "password": Secret(DEFAULT_PASSWORD)}
    settings.update(options)
    return powerdrivers.load_driver("xen", sim.url, **settings)


def cli(*argv: str, password: str = DEFAULT_PASSWORD) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, POWERDRIVERS_PASSWORD=password)
    command = [sys.executable, "-m", "powerdrivers", "-d", "xen", *argv]
    return subprocess.run(command, capture_output=True, text=True, env=env, check=False)


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("timeout", "99999999999"),
        ("timeout", "1e400"),
        ("timeout", "abc"),
        ("timeout", "0"),
        ("timeout", "-1"),
        ("timeout", "nan"),
        ("timeout", True),
        ("event_timeout", "99999999999"),
        ("event_timeout", "61"),
        ("event_timeout", "0"),
        ("poll_interval", "abc"),
        ("poll_interval", "0"),
        ("poll_interval", "-0.5"),
        ("poll_interval", "3601"),
        ("verify_tls", "maybe"),
        ("verify_tls", "2"),
    ],
)
def test_every_option_is_checked_and_the_error_names_it(
    sim: XapiSimulator, option: str, value: object
) -> None:
    with pytest.raises(InvalidOption) as caught:
        connect(sim, **{option: value})
    assert str(caught.value).startswith(f"{option} must be")
    assert sim.session_count == 0  # refused before anything was sent


def test_options_at_their_bounds_are_accepted(sim: XapiSimulator) -> None:
    with connect(sim, timeout="3600", event_timeout=60, poll_interval=" 60 ", verify_tls="no") as driver:
        assert len(driver.list_instances()) == 6


def test_an_out_of_range_option_is_a_usage_error_not_a_broken_plugin() -> None:
    result = cli("-c", "http://127.0.0.1:1", "-o", "timeout=99999999999", "list")
    assert result.returncode == 2, result.stderr
    assert "timeout must be from" in result.stderr
    assert "cannot be loaded" not in result.stderr and "Overflow" not in result.stderr


def test_poll_interval_paces_the_reboot_watcher(sim: XapiSimulator) -> None:
    sim.set_guest_delay(1.0)
    with connect(sim, poll_interval="0.3") as driver:
        before = sim.call_count("task.get_status")
        result = driver.reboot("web-01", timeout=10)
        polls = sim.call_count("task.get_status") - before
    assert result.outcome is Outcome.GRACEFUL and result.operation is Operation.REBOOT
    assert 2 <= polls <= 5  # about a second at 0.3 s; the default would have asked some twenty times


#: Passwords holding every character that ends a URI's authority early, and encoded forms.
PASSWORDS = [
    f"Zq7sEcr3t{piece}Wv9kLp2" for piece in ("#", "?", "/", "@", ":", "#z", "%23", "%40", "%2F", "%3F", "%3A")
]


def pieces_of(password: str) -> list[str]:
    return [password[:9], password[-7:], password, quote(password, safe="")]


@pytest.mark.parametrize("password", PASSWORDS)
@pytest.mark.parametrize("scheme", ["http", "https", "ftp", "xen"])
def test_a_password_in_the_uri_is_refused_and_never_repeated(
    password: str, scheme: str, caplog: pytest.LogCaptureFixture
) -> None:
    uri = f"{scheme}://root:{password}@127.0.0.1:1"
    with caplog.at_level(logging.DEBUG), pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("xen", uri, password=Secret("x"))
    message = str(caught.value)
    assert "POWERDRIVERS_PASSWORD" in message and "password_file" in message
    texts = [message, repr(caught.value), *map(str, caught.value.args), caplog.text]
    for text in texts:
        for piece in pieces_of(password):
            assert piece not in text


@pytest.mark.parametrize("password", [PASSWORDS[0], PASSWORDS[2], PASSWORDS[6]])
def test_the_cli_never_prints_a_password_given_in_the_uri(password: str) -> None:
    for debug in ((), ("--debug",)):
        result = cli(*debug, "-c", f"http://user:{password}@127.0.0.1:1", "list")
        assert result.returncode == 2, result.stderr
        assert "POWERDRIVERS_PASSWORD" in result.stderr
        for piece in pieces_of(password):
            assert piece not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "uri",
    [
        "http://127.0.0.1:1/?token=Zq7sEcr3tWv9kLp2",
        "http://127.0.0.1:1/#Zq7sEcr3tWv9kLp2",
        "http://127.0.0.1:1/Zq7sEcr3tWv9kLp2",
        "xen://host/?password=Zq7sEcr3tWv9kLp2",
        "xen://host/?apikey=Zq7sEcr3tWv9kLp2",
        "https://host:Zq7sEcr3tWv9kLp2",
    ],
)
def test_what_follows_the_host_is_not_repeated(uri: str) -> None:
    with pytest.raises(InvalidURI) as caught:
        powerdrivers.load_driver("xen", uri, password=Secret("x"))
    assert "Zq7sEcr3t" not in str(caught.value)
