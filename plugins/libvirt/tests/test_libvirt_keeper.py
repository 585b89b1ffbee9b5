"""The power keeper on a real libvirtd with real QEMU guests (TCG).

``virsh destroy`` behind the keeper's back under ``always`` is undone and recorded as out of
band; the real Linux guest rebooting itself is a guest reboot and no action; libvirtd killed
and started again makes the host unreachable for a while, then a clean resync, and no action
at all. Under CI=true none of this skips.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import test_libvirt_qemu
from libvirt_support.guest_image import READY_MARKER
from libvirt_support.libvirtd import LibvirtdHarness, PrivateLibvirtd
from libvirt_support.smoke_guest import wait_for_marker

from powerdrivers import Driver, InstanceSpec, PowerState
from powerdrivers.keeper import Cause, Keeper, KeeperSettings, Policy, RecordKind, SqlStore

BOOT_TIMEOUT = test_libvirt_qemu.BOOT_TIMEOUT
linux_guest = test_libvirt_qemu.linux_guest  # the real Linux guest, booted: one fixture for both modules

SETTINGS = {"resync_interval": 2, "poll_interval": 0.1, "reboot_window": 0.2}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqlStore]:
    """A fresh keeper store in an SQLite file."""
    opened = SqlStore(f"sqlite:///{tmp_path / 'keeper.db'}")
    try:
        yield opened
    finally:
        opened.close()


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.1)


def _actions(store: SqlStore, instance: str) -> list[str]:
    return [r.operation or "" for r in reversed(store.history(instance, 1000)) if r.kind is RecordKind.ACTION]


def test_virsh_destroy_under_always_is_undone_and_recorded_as_out_of_band(
    qemu: Driver, libvirtd: LibvirtdHarness, store: SqlStore
) -> None:
    name = f"pdtest-{uuid.uuid4().hex[:8]}"
    domain = qemu.spawn(InstanceSpec(name, memory_mib=64))
    with Keeper(store, {"qemu": qemu}, KeeperSettings.from_options(**SETTINGS)) as keeper:
        keeper.set_policy(domain.id, Policy.ALWAYS, "test")
        libvirtd.virsh("destroy", name)
        _wait(lambda: _actions(store, domain.id) == ["start"], 60, "the keeper's start")
        assert qemu.get_instance(name).power_state is PowerState.RUNNING
        stop = next(r for r in reversed(keeper.history(domain.id)) if r.to_state is PowerState.SHUTOFF)
        assert (stop.cause, stop.native_reason) == (Cause.OUT_OF_BAND, "destroyed")
        [action] = [r for r in keeper.history(domain.id) if r.kind is RecordKind.ACTION]
        assert (action.outcome, action.requested_by) == ("done", keeper.settings.who)


def test_the_linux_guest_rebooting_itself_is_a_guest_reboot_and_no_action(
    qemu: Driver, libvirtd: LibvirtdHarness, linux_guest: tuple[str, Path], store: SqlStore
) -> None:
    name, console = linux_guest
    domain = qemu.get_instance(name)
    offset = console.stat().st_size
    with Keeper(store, {"qemu": qemu}, KeeperSettings.from_options(**SETTINGS)) as keeper:
        keeper.set_policy(domain.id, Policy.ALWAYS, "test")
        # Another client asks the guest (ACPI); the guest's own acpid runs reboot inside it.
        libvirtd.virsh("reboot", name)
        wait_for_marker(console, READY_MARKER, offset, BOOT_TIMEOUT)
        _wait(
            lambda: any(r.cause is Cause.GUEST_REBOOT for r in keeper.history(domain.id)),
            30,
            "the guest reboot's record",
        )
        keeper.resync()
        assert _actions(store, domain.id) == []
        assert keeper.view(domain.id).failures == 0
        assert qemu.get_instance(name).power_state is PowerState.RUNNING


def test_libvirtd_killed_and_started_again_means_a_clean_resync_and_no_action(
    private_qemu: Driver, private_libvirtd: PrivateLibvirtd, store: SqlStore
) -> None:
    name = f"pdtest-{uuid.uuid4().hex[:8]}"
    domain = private_qemu.spawn(InstanceSpec(name, memory_mib=64))
    with Keeper(store, {"private": private_qemu}, KeeperSettings.from_options(**SETTINGS)) as keeper:
        keeper.set_policy(domain.id, Policy.ALWAYS, "test")
        private_libvirtd.kill_libvirtd()
        _wait(lambda: not store.hosts()[0].reachable, 30, "the host marked unreachable")
        assert keeper.view(domain.id).stale
        private_libvirtd.start_libvirtd()
        _wait(lambda: store.hosts()[0].reachable, 60, "the host answering again")
        keeper.resync()
        view = keeper.view(domain.id)
        assert (view.power_state, view.stale) == (PowerState.RUNNING, False)
        assert _actions(store, domain.id) == []
        assert store.open_actions() == []
