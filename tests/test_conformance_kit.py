"""The conformance kit passes our drivers and fails broken ones, saying why."""

from __future__ import annotations

import textwrap

import pytest

import powerdrivers

BROKEN = textwrap.dedent(
    '''
    """Deliberately broken drivers, each wrong in one way."""

    from typing import ClassVar

    from powerdrivers import Capability, InstanceNotFound, InstanceReading
    from powerdrivers_fake import FakeDriver


    class WrongState(FakeDriver):
        """Pause reports success but leaves the instance running."""

        def _pause(self, instance: InstanceReading) -> None:
            pass


    class Unmapped(FakeDriver):
        """Reports a native state its table does not map."""

        def _reading(self, record):
            return self.native_states.reading(record["id"], record["name"], "mystery", record["reason"])


    class NotImplementedSuspend(FakeDriver):
        """Does not declare suspend, and raises NotImplementedError for it."""

        capabilities: ClassVar[frozenset[Capability]] = frozenset(Capability) - {Capability.SUSPEND}

        def suspend(self, ref):
            raise NotImplementedError("suspend")

        def resume(self, ref):
            raise NotImplementedError("resume")


    class StaleStart(FakeDriver):
        """Starts the instance but returns the reading it was given: shut off."""

        def _start(self, instance: InstanceReading) -> InstanceReading:
            super()._start(instance)
            return instance


    class StalePause(FakeDriver):
        """Pauses the instance but returns the reading it was given: running."""

        def _pause(self, instance: InstanceReading) -> InstanceReading:
            super()._pause(instance)
            return instance


    class NoDelete(FakeDriver):
        """Reports a delete done and deletes nothing."""

        def _delete(self, instance: InstanceReading) -> None:
            pass


    class LeakyDelete(FakeDriver):
        """Forgets a deleted instance in its own connection only: on the hypervisor it still runs."""

        def __init__(self, uri=None, **options):
            super().__init__(uri, **options)
            self._forgotten = set()

        def _delete(self, instance: InstanceReading) -> None:
            self._forgotten.add(instance.id)

        def _read_all(self):
            return [reading for reading in super()._read_all() if reading.id not in self._forgotten]

        def _read_one(self, ref):
            reading = super()._read_one(ref)
            if reading.id in self._forgotten:
                raise InstanceNotFound(ref)
            return reading


    class RawError(FakeDriver):
        """Lets a library exception escape from power-off."""

        def _power_off(self, instance: InstanceReading) -> None:
            raise OSError("socket closed")
    '''
)

KIT = ["-p", "no:cacheprovider", "--powerdrivers-spawn", "--powerdrivers-timeout", "2"]
FAST_GUESTS = ["--powerdrivers-option", "guest_delay=0.02"]


@pytest.fixture
def broken(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makepyfile(broken_drivers=BROKEN)
    return pytester


def run_kit(pytester: pytest.Pytester, driver: str, *extra: str) -> pytest.RunResult:
    fake_options = FAST_GUESTS if driver != "libvirt" else []
    return pytester.runpytest_subprocess("--powerdrivers-driver", driver, *KIT, *fake_options, *extra)


def test_the_kit_passes_the_fake_driver(pytester: pytest.Pytester) -> None:
    result = run_kit(pytester, "fake")
    outcomes = result.parseoutcomes()
    assert result.ret == 0, result.stdout.str()
    assert outcomes["passed"] >= 50


def test_the_kit_passes_libvirt_on_its_test_driver(pytester: pytest.Pytester) -> None:
    result = run_kit(pytester, "libvirt", "--powerdrivers-uri", "test:///default")
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 50


@pytest.mark.parametrize(
    ("driver", "expected"),
    [
        (
            "WrongState",
            ["*pause from running should end paused, but the instance is running*",
             "*FAILED*test_declared_operation_follows_the_table?pause-running?*"],
        ),
        (
            "Unmapped",
            ["*native state 'mystery'*is not in the driver's native-state table*",
             "*FAILED*test_every_reading_carries_canonical_and_native_values*"],
        ),
        (
            "NotImplementedSuspend",
            ["*raised NotImplementedError*must raise powerdrivers.UnsupportedOperation*",
             "*FAILED*test_an_undeclared_capability_is_unsupported?suspend?*"],
        ),
        (
            "NoDelete",
            ["*delete(*) returned, but the instance is still running (native 'running')*",
             "*FAILED*test_declared_operation_follows_the_table?delete-running?*"],
        ),
        ("RawError", ["*let an untyped builtins.OSError escape: socket closed*", "*FAILED*"]),
        (
            "StaleStart",
            ["*the driver broke its contract: fake driver: _start returned a reading of * in state shutoff, "
             "not running after start*",
             "*ERROR*test_declared_operation_follows_the_table?start-shutoff?*"],
        ),
        (
            "StalePause",
            ["*the driver broke its contract: fake driver: _pause returned a reading of * in state running, "
             "not paused after pause*",
             "*ERROR*test_declared_operation_follows_the_table?pause-running?*"],
        ),
    ],
)  # fmt: skip
def test_a_broken_driver_fails_the_right_check_saying_why(
    broken: pytest.Pytester, driver: str, expected: list[str]
) -> None:
    result = run_kit(broken, f"broken_drivers:{driver}")
    result.stdout.fnmatch_lines(expected, consecutive=False)
    assert result.ret == 1


def test_the_kit_passes_the_fake_driver_sharing_a_state_file(pytester: pytest.Pytester) -> None:
    # Connections to one state file share the instances, so a fresh connection sees what a delete left.
    result = run_kit(pytester, "fake", "--powerdrivers-uri", f"fake://{pytester.path}/state.json")
    assert result.ret == 0, result.stdout.str()
    assert result.parseoutcomes()["passed"] >= 50


def test_a_delete_that_leaves_the_instance_on_the_hypervisor_fails(broken: pytest.Pytester) -> None:
    result = run_kit(
        broken, "broken_drivers:LeakyDelete", "--powerdrivers-uri", f"fake://{broken.path}/state.json"
    )
    result.stdout.fnmatch_lines(
        [
            "*delete(*) returned and the connection that ran it no longer finds the instance, "
            "but a fresh connection does: it is still running (native 'running') on the hypervisor*",
            "FAILED*test_declared_operation_follows_the_table?delete-running?*",
        ],
        consecutive=False,
    )
    assert result.parseoutcomes()["failed"] == 4  # delete from each of the four reachable states
    assert result.ret == 1


def test_the_kit_is_inert_unless_asked(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_plain="def test_nothing():\n    assert True\n")
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


def test_the_kit_needs_instances_or_spawn(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess("--powerdrivers-driver", "fake")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*needs --powerdrivers-instance ID or --powerdrivers-spawn*"])


def test_the_kit_passes_the_out_of_tree_process_driver(pytester: pytest.Pytester) -> None:
    from powerdrivers_procs import define

    state = pytester.mkdir("procs")
    for name in ("kit-a", "kit-b"):
        define(state, name, ["sleep", "300"])
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "procs", "--powerdrivers-uri", f"procs://{state}",
        "--powerdrivers-instance", "kit-a", "--powerdrivers-instance", "kit-b", "--powerdrivers-timeout", "3",
    )  # fmt: skip
    try:
        assert result.ret == 0, result.stdout.str()
        assert result.parseoutcomes()["passed"] >= 30
    finally:
        with powerdrivers.load_driver("procs", f"procs://{state}") as driver:
            for reading in driver.list_instances():
                if reading.power_state is not powerdrivers.PowerState.SHUTOFF:
                    driver.power_off(reading.id)
