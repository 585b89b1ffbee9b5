"""Fixtures for the xapi simulator tests: a fresh simulator per test and an SDK session on it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import XenAPI
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator


@pytest.fixture
def sim() -> Iterator[XapiSimulator]:
    """A started simulator with fast timings, stopped after the test."""
    simulator = XapiSimulator(guest_delay=0.15, op_delay=0.01, shutdown_timeout=1.0, stats_interval=0.1)
    with simulator:
        yield simulator


@pytest.fixture
def session(sim: XapiSimulator) -> Iterator[Any]:
    """An official ``XenAPI.Session`` logged in to the simulator."""
    client = XenAPI.Session(sim.url)
    client.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "1.0", "powerdrivers-tests")
    yield client
    with contextlib.suppress(Exception):
        client.xenapi.session.logout()
