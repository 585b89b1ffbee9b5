"""Fixtures for the procs driver's tests: a directory of instances, a driver, and a clean-up that kills."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from powerdrivers_procs import ProcessDriver, define
from procs_support import INSTANCES, EventLog, kill_everything, uri_of

import powerdrivers


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A procs directory defining the four test instances; afterwards no process of it may remain."""
    for name, command in INSTANCES.items():
        define(tmp_path, name, command)
    yield tmp_path
    assert kill_everything(tmp_path) == [], "processes were left behind"


@pytest.fixture
def driver(home: Path) -> Iterator[ProcessDriver]:
    """The procs driver loaded by name, polling quickly."""
    loaded = powerdrivers.load_driver("procs", uri_of(home), poll_interval="0.05", timeout="5")
    assert isinstance(loaded, ProcessDriver)
    with loaded:
        yield loaded


@pytest.fixture
def event_log() -> EventLog:
    """A recording listener."""
    return EventLog()
