"""Loading the fake through the public loader, and closing it."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from fake_helpers import DriverFactory, EventLog, load_fake, subscribe_settled
from powerdrivers_fake import FakeDriver

import powerdrivers
from powerdrivers import Capability, HypervisorConnectionError, InstanceSpec, PowerState

CALLS: dict[str, Callable[[FakeDriver], object]] = {
    "list_instances": lambda d: d.list_instances(),
    "get_instance": lambda d: d.get_instance("web-1"),
    "start": lambda d: d.start("batch-7"),
    "shutdown": lambda d: d.shutdown("web-1", timeout=0.1),
    "power_off": lambda d: d.power_off("web-1"),
    "reboot": lambda d: d.reboot("web-1", timeout=0.1),
    "hard_reboot": lambda d: d.reboot("web-1", hard=True),
    "pause": lambda d: d.pause("web-1"),
    "unpause": lambda d: d.unpause("cache-1"),
    "suspend": lambda d: d.suspend("web-1"),
    "resume": lambda d: d.resume("web-1"),
    "delete": lambda d: d.delete("web-1"),
    "spawn": lambda d: d.spawn(InstanceSpec("late")),
    "vcpu_stats": lambda d: d.vcpu_stats("web-1", window=0.01),
    "subscribe": lambda d: d.subscribe(EventLog()),
}


def test_the_loader_gives_a_fake_driver_with_every_capability() -> None:
    driver = powerdrivers.load_driver("fake")
    try:
        assert isinstance(driver, FakeDriver)
        assert driver.name == "fake"
        assert all(driver.supports(capability) for capability in Capability)
    finally:
        driver.close()
    info = {i.name: i for i in powerdrivers.available_drivers()}["fake"]
    assert (info.status, info.error, info.distribution) == ("ok", None, "powerdrivers-fake")
    assert set(info.capabilities) == {c.value for c in Capability}


@pytest.mark.parametrize("call", CALLS.values(), ids=CALLS.keys())
def test_every_call_after_close_is_a_connection_error(
    make_driver: DriverFactory, call: Callable[[FakeDriver], object]
) -> None:
    driver = make_driver(guest_delay=0.01)
    driver.close()
    with pytest.raises(HypervisorConnectionError, match="closed"):
        call(driver)


def test_close_is_idempotent(make_driver: DriverFactory) -> None:
    driver = make_driver()
    driver.close()
    driver.close()
    with pytest.raises(HypervisorConnectionError):
        driver.list_instances()


def test_the_context_manager_closes_even_on_error() -> None:
    with pytest.raises(RuntimeError), load_fake() as driver:
        assert driver.get_instance("web-1").power_state is PowerState.RUNNING
        raise RuntimeError("leaving the block")
    with pytest.raises(HypervisorConnectionError):
        driver.list_instances()


def _watchers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "powerdrivers-fake-watch" and t.is_alive()]


def test_close_stops_the_file_watcher(make_driver: DriverFactory, state_uri: str) -> None:
    before = set(_watchers())
    driver = make_driver(state_uri, poll_interval=0.01)
    subscribe_settled(driver, EventLog())
    started = set(_watchers()) - before
    assert len(started) == 1
    driver.close()
    assert not any(thread.is_alive() for thread in started)


def test_unsubscribing_the_last_listener_stops_the_file_watcher(
    make_driver: DriverFactory, state_uri: str
) -> None:
    before = set(_watchers())
    driver = make_driver(state_uri, poll_interval=0.01)
    first = driver.subscribe(EventLog())
    second = driver.subscribe(EventLog())
    started = set(_watchers()) - before
    assert len(started) == 1
    first.unsubscribe()
    assert all(thread.is_alive() for thread in started)
    second.unsubscribe()
    assert not any(thread.is_alive() for thread in started)
