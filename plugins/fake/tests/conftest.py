"""Fixtures for the fake driver's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_helpers import DriverFactory, EventLog, load_fake
from powerdrivers_fake import FakeDriver

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """An exception in one of the fake's timer or watcher threads fails the test it happens in."""
    for item in items:
        if _HERE in item.path.resolve().parents:
            item.add_marker(pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning"))


@pytest.fixture
def make_driver() -> Iterator[DriverFactory]:
    """Load fake drivers through ``powerdrivers.load_driver``; every one is closed after the test."""
    drivers: list[FakeDriver] = []

    def make(uri: str | None = None, **options: Any) -> FakeDriver:
        driver = load_fake(uri, **options)
        drivers.append(driver)
        return driver

    yield make
    for driver in drivers:
        driver.close()


@pytest.fixture
def empty_driver(make_driver: DriverFactory) -> FakeDriver:
    """A memory-backed fake with no instances and quick guests."""
    return make_driver("fake:///", seed="empty", guest_delay=0.02)


@pytest.fixture
def demo_driver(make_driver: DriverFactory) -> FakeDriver:
    """A memory-backed fake with the demo instances and quick guests."""
    return make_driver(guest_delay=0.02)


@pytest.fixture
def state_uri(tmp_path: Path) -> str:
    """A file-store URI in a fresh directory."""
    return f"fake://{tmp_path / 'state.json'}"


@pytest.fixture
def event_log() -> EventLog:
    """A recording listener."""
    return EventLog()
