"""Instances the kit was given are put back in the power state they had before the run.

The fake driver sharing a state file stands in for a hypervisor: the test
arranges the instances through one connection, runs the kit in another
process, and reads them back through a third.
"""

from __future__ import annotations

import textwrap

import pytest

import powerdrivers
from powerdrivers import PowerState

NO_SUSPEND = textwrap.dedent(
    '''
    """A driver that can resume an instance but never suspend one again."""

    from powerdrivers import HypervisorError, InstanceReading
    from powerdrivers_fake import FakeDriver


    class NoSuspend(FakeDriver):
        def _suspend(self, instance: InstanceReading) -> None:
            raise HypervisorError("no room left for the memory image")
    '''
)

SUMMARY = "*powerdrivers conformance kit: after the run*"


def run_kit(
    pytester: pytest.Pytester, driver: str, uri: str, *instances: str, checks: str | None = None
) -> pytest.RunResult:
    given = [flag for ref in instances for flag in ("--powerdrivers-instance", ref)]
    selected = ["-k", checks] if checks else []
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", driver, "--powerdrivers-uri", uri, *given,
        "--powerdrivers-option", "guest_delay=0.02", "--powerdrivers-timeout", "2", *selected,
    )  # fmt: skip


def power_states(uri: str, *refs: str) -> dict[str, PowerState]:
    with powerdrivers.load_driver("fake", uri) as driver:
        return {ref: driver.get_instance(ref).power_state for ref in refs}


def test_each_instance_is_left_as_it_was_before_the_run(pytester: pytest.Pytester) -> None:
    uri = f"fake://{pytester.path}/state.json"
    with powerdrivers.load_driver("fake", uri) as driver:
        driver.power_off("web-1")
        driver.pause("web-2")
        driver.unpause("cache-1")
        driver.suspend("cache-1")
    before = power_states(uri, "web-1", "web-2", "cache-1")
    assert list(before.values()) == [PowerState.SHUTOFF, PowerState.PAUSED, PowerState.SUSPENDED]
    result = run_kit(pytester, "fake", uri, "web-1", "web-2", "cache-1")
    assert result.ret == 0, result.stdout.str()
    assert power_states(uri, "web-1", "web-2", "cache-1") == before
    result.stdout.fnmatch_lines(
        [
            SUMMARY,
            "web-1: shutoff, as before the run",
            "web-2: paused, as before the run",
            "cache-1: suspended, as before the run",
        ]
    )


def test_a_crashed_instance_is_left_shut_off(pytester: pytest.Pytester) -> None:
    uri = f"fake://{pytester.path}/state.json"
    with powerdrivers.load_driver("fake", uri) as driver:
        driver.crash("web-1")  # type: ignore[attr-defined]  # a test control of the fake
    result = run_kit(pytester, "fake", uri, "web-1")
    assert result.ret == 0, result.stdout.str()
    assert power_states(uri, "web-1") == {"web-1": PowerState.SHUTOFF}
    result.stdout.fnmatch_lines([SUMMARY, "web-1: was crashed before the run; left shutoff"])


def test_an_instance_that_cannot_be_put_back_is_reported(pytester: pytest.Pytester) -> None:
    uri = f"fake://{pytester.path}/state.json"
    with powerdrivers.load_driver("fake", uri) as driver:
        driver.suspend("web-2")
    pytester.makepyfile(no_suspend=NO_SUSPEND)
    result = run_kit(pytester, "no_suspend:NoSuspend", uri, "web-1", "web-2")
    assert result.ret == 1  # its suspend checks fail too
    result.stdout.fnmatch_lines(
        [
            SUMMARY,
            "web-1: running, as before the run",
            "web-2: could not put it back to suspended: no room left for the memory image; it is running",
        ]
    )
    assert "Traceback" not in result.stdout.str() + result.stderr.str()


MORE_BROKEN = textwrap.dedent(
    '''
    """Drivers that cannot put an instance back, or cannot say what it was."""

    from powerdrivers import InstanceReading
    from powerdrivers_fake import FakeDriver


    class NoPause(FakeDriver):
        """Reports a pause done and pauses nothing."""

        def _pause(self, instance: InstanceReading) -> None:
            pass


    class Unknowable(FakeDriver):
        """Reads batch-7 in a native state its table does not map: unknown."""

        def _read_one(self, ref):
            return self._blur(super()._read_one(ref))

        def _read_all(self):
            return [self._blur(reading) for reading in super()._read_all()]

        def _blur(self, reading):
            if reading.name != "batch-7":
                return reading
            return self.native_states.reading(reading.id, reading.name, "mystery", None)


    class CloseFails(FakeDriver):
        """Lets a library exception escape from closing."""

        def _close(self) -> None:
            super()._close()
            raise OSError("socket already closed")
    '''
)


@pytest.mark.parametrize(
    ("driver", "arrange", "instances", "checks", "expected"),
    [
        pytest.param(
            "NoPause", "pause", ("web-2",), "unpause-paused",
            "web-2: could not put it back to paused; it is running", id="an-operation-that-does-nothing",
        ),
        pytest.param(
            "Unknowable", None, ("web-1", "batch-7"), "by_id_and_by_name",
            "batch-7: its state was unknown before the run; left as it is", id="an-unknown-state",
        ),
        pytest.param(
            "CloseFails", None, ("web-1",), "by_id_and_by_name",
            "broken:CloseFails: closing the connection failed: close let an untyped builtins.OSError "
            "escape: socket already closed; *", id="a-failing-close",
        ),
    ],
)  # fmt: skip
def test_what_the_kit_cannot_put_back_is_reported_in_the_summary(
    pytester: pytest.Pytester,
    driver: str,
    arrange: str | None,
    instances: tuple[str, ...],
    checks: str,
    expected: str,
) -> None:
    uri = f"fake://{pytester.path}/state.json"
    if arrange:
        with powerdrivers.load_driver("fake", uri) as fake:
            getattr(fake, arrange)(instances[0])
    pytester.makepyfile(broken=MORE_BROKEN)
    result = run_kit(pytester, f"broken:{driver}", uri, *instances, checks=checks)
    result.stdout.fnmatch_lines([SUMMARY, expected])
    assert "Traceback" not in result.stdout.str() + result.stderr.str()
