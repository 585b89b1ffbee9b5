"""Helpers of the keeper engine's tests: fake hosts, a running keeper, waiting and reading history."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from powerdrivers_fake import FakeDriver
from powerdrivers_fake._native import FakeNativeState

import powerdrivers
from powerdrivers import Driver, EventKind
from powerdrivers.keeper import HistoryRecord, Keeper, KeeperSettings, KeeperStore, RecordKind

_T = TypeVar("_T")

#: Settings that make the keeper quick enough for tests; each test overrides what it checks.
QUICK = {"resync_interval": 30, "poll_interval": 0.05, "reboot_window": 0.5, "backoff_jitter": 0}


def fake_host(uri: str = "fake:///", **options: Any) -> FakeDriver:
    """A fake hypervisor with the demo instances, quick guests and quick polling."""
    options = {"guest_delay": 0.05, "poll_interval": 0.02, **options}
    driver = powerdrivers.load_driver("fake", uri, **options)
    assert isinstance(driver, FakeDriver)
    return driver


@contextmanager
def running_keeper(store: KeeperStore, hosts: dict[str, Driver], **settings: Any) -> Iterator[Keeper]:
    """A started keeper with ``QUICK`` settings (overridden by ``settings``); stopped afterwards."""
    keeper = Keeper(store, hosts, KeeperSettings.from_options(**{**QUICK, **settings}))
    with keeper:
        yield keeper


def wait_until(check: Callable[[], _T], timeout: float = 10.0, what: str = "the condition") -> _T:
    """Return ``check()``'s first truthy value, polling; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def records(keeper: Keeper, instance_id: str, kind: RecordKind | None = None) -> list[HistoryRecord]:
    """The instance's history, oldest first, of one kind if given."""
    found = reversed(keeper.history(instance_id, limit=1000))
    return [record for record in found if kind is None or record.kind is kind]


def behind_the_back(
    driver: FakeDriver, name: str, state: str, reason: str, kind: EventKind | None = None
) -> None:
    """Change an instance in the fake as someone outside powerdrivers would (virsh, the guest).

    The change goes through the fake's own engine, so its event is real, with no operation as
    its cause.
    """
    with driver._transaction() as document:
        record = driver._writable(document, driver._find(document, name))
        driver._set_state(document, record, FakeNativeState(state), reason, cause=None, kind=kind)
