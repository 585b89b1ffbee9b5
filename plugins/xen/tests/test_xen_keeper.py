"""The power keeper on the Xen driver, against the xapi simulator: a crash and an out-of-band stop."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import XenAPI
from powerdrivers_xen.testing import DEFAULT_PASSWORD, DEFAULT_USERNAME, XapiSimulator, stable_uuid

import powerdrivers
from powerdrivers import Driver, PowerState, Secret
from powerdrivers.keeper import Cause, Keeper, KeeperSettings, Policy, RecordKind, SqlStore

SETTINGS = {"resync_interval": 5, "poll_interval": 0.1, "reboot_window": 0.2}


@pytest.fixture
def xen(sim: XapiSimulator) -> Iterator[Driver]:
    with powerdrivers.load_driver(
        "xen", sim.url, username=DEFAULT_USERNAME, password=Secret(DEFAULT_PASSWORD)
    ) as driver:
        yield driver


@pytest.fixture
def keeper(xen: Driver, tmp_path: Path) -> Iterator[Keeper]:
    store = SqlStore(f"sqlite:///{tmp_path / 'keeper.db'}")
    try:
        with Keeper(store, {"pool": xen}, KeeperSettings.from_options(**SETTINGS)) as running:
            yield running
    finally:
        store.close()


def _wait(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def _started(keeper: Keeper, instance: str) -> bool:
    return any(r.kind is RecordKind.ACTION and r.operation == "start" for r in keeper.history(instance))


def test_a_hard_shutdown_by_another_client_under_always_is_undone_and_recorded_out_of_band(
    keeper: Keeper, xen: Driver, sim: XapiSimulator
) -> None:
    web = stable_uuid("web-01")
    keeper.set_policy(web, Policy.ALWAYS, "test")
    other = XenAPI.Session(sim.url)
    other.xenapi.login_with_password(DEFAULT_USERNAME, DEFAULT_PASSWORD, "2.0", "another-client")
    try:
        other.xenapi.VM.hard_shutdown(other.xenapi.VM.get_by_uuid(web))
    finally:
        other.xenapi.session.logout()
    _wait(lambda: _started(keeper, web), "the keeper's start")
    assert xen.get_instance(web).power_state is PowerState.RUNNING
    stop = next(r for r in reversed(keeper.history(web)) if r.to_state is PowerState.SHUTOFF)
    assert stop.cause is Cause.OUT_OF_BAND and stop.operation is None


def test_a_crash_is_recorded_as_one_and_a_restart_xapi_refuses_ends_in_quarantine_until_it_runs(
    xen: Driver, sim: XapiSimulator, tmp_path: Path
) -> None:
    # The simulator keeps a crashed VM as older xapi did (actions_after_crash=preserve), and
    # refuses to start it: the keeper's restarts fail, and it quarantines the VM, as Ironic would.
    db = stable_uuid("db-01")
    store = SqlStore(f"sqlite:///{tmp_path / 'keeper.db'}")
    settings = KeeperSettings.from_options(**SETTINGS, backoff_base=0.05, quarantine_after=2)
    try:
        with Keeper(store, {"pool": xen}, settings) as keeper:
            keeper.set_policy(db, Policy.ON_FAILURE, "test")
            sim.set_power_state("db-01", "Crashed")
            _wait(lambda: keeper.view(db).quarantined, "the quarantine")
            crash = next(r for r in reversed(keeper.history(db)) if r.to_state is PowerState.CRASHED)
            assert crash.cause is Cause.CRASH and crash.native_state == "Crashed"
            assert "cannot start" in (keeper.view(db).fault or "")
            sim.set_power_state("db-01", "Running")  # someone mended it out of band
            _wait(lambda: not keeper.view(db).quarantined, "the automatic release")
    finally:
        store.close()
