"""What the kit does with a command line it cannot use: one usage error, naming the flag, before any test.

The driver is loaded, connected and asked for the given instances once, up
front; what fails is pytest's usage error (exit status 4) with one line, not
the same error in every test or a traceback.
"""

from __future__ import annotations

import textwrap

import pytest

RAW_CONNECT = textwrap.dedent(
    '''
    """A driver whose constructor lets a library exception escape."""

    from powerdrivers_fake import FakeDriver


    class RawConnect(FakeDriver):
        def __init__(self, uri=None, **options):
            raise OSError("connection reset by peer")
    '''
)


def run_kit(pytester: pytest.Pytester, *flags: str) -> pytest.RunResult:
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", *flags)


def assert_one_usage_error(result: pytest.RunResult, line: str) -> None:
    """Exit status 4, the one ``ERROR:`` line expected, no traceback and no test run."""
    assert result.ret == pytest.ExitCode.USAGE_ERROR, result.stdout.str() + result.stderr.str()
    errors = [text for text in result.errlines if text.startswith("ERROR:")]
    assert len(errors) == 1, result.errlines
    result.stderr.fnmatch_lines([line])
    output = result.stdout.str() + result.stderr.str()
    assert "Traceback" not in output
    assert "collected" not in output and "passed" not in output


SPAWN = ("--powerdrivers-spawn",)


@pytest.mark.parametrize(
    ("flags", "line"),
    [
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-spec", "memory=64"),
            "ERROR: --powerdrivers-spec: no spec field 'memory'; the fields are vcpus, memory_mib, *",
            id="spec-key-typo",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-spec", "memory_mib=lots"),
            "ERROR: --powerdrivers-spec: memory_mib must be a whole number, not 'lots'",
            id="spec-value-not-a-number",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", "--powerdrivers-uri", "bogus://", *SPAWN),
            "ERROR: --powerdrivers-uri: cannot connect: the fake driver takes fake:/// or *, not 'bogus://'",
            id="uri-the-driver-refuses",
        ),
        pytest.param(
            ("--powerdrivers-driver", "libvirt", "--powerdrivers-uri", "qemu+tcp://127.0.0.1:1/system",
             *SPAWN),
            "ERROR: --powerdrivers-uri: cannot connect: libvirt connection failed: *Connection refused*",
            id="uri-nothing-answers",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", "--powerdrivers-option", "fail_connect=authentication", *SPAWN),
            "ERROR: --powerdrivers-uri: cannot connect: injected authentication failure connecting to fake",
            id="connection-refused-by-the-hypervisor",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", "--powerdrivers-option", "colour=blue", *SPAWN),
            "ERROR: --powerdrivers-option: the fake driver has no option colour; accepted: *",
            id="unknown-option",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", "--powerdrivers-option", "=blue", *SPAWN),
            "ERROR: --powerdrivers-option '=blue' is not KEY=VALUE",
            id="option-without-a-key",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", "--powerdrivers-instance", "web-1",
             "--powerdrivers-instance", "no-such-vm"),
            "ERROR: --powerdrivers-instance 'no-such-vm': no instance with id or name 'no-such-vm'; "
            "the driver lists batch-7, cache-1, legacy-db, web-1, web-2",
            id="unknown-instance",
        ),
        pytest.param(
            ("--powerdrivers-driver", "powerdrivers_fake:FakeDrivr", *SPAWN),
            "ERROR: --powerdrivers-driver: driver 'powerdrivers_fake:FakeDrivr' cannot be loaded: "
            "module 'powerdrivers_fake' has no attribute 'FakeDrivr'",
            id="class-path-typo",
        ),
        pytest.param(
            ("--powerdrivers-driver", "powerdrivers_fak:FakeDriver", *SPAWN),
            "ERROR: --powerdrivers-driver: driver 'powerdrivers_fak:FakeDriver' cannot be loaded: "
            "module 'powerdrivers_fak' cannot be imported: ModuleNotFoundError: *",
            id="class-path-module-typo",
        ),
        pytest.param(
            ("--powerdrivers-driver", "powerdrivers_fake:", *SPAWN),
            "ERROR: --powerdrivers-driver: *a driver class is named package.module:Class",
            id="class-path-without-a-class",
        ),
        pytest.param(
            ("--powerdrivers-driver", "powerdrivers:PowerState", *SPAWN),
            "ERROR: --powerdrivers-driver: *not a subclass of powerdrivers.Driver",
            id="class-path-to-a-non-driver",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fakee", *SPAWN),
            "ERROR: --powerdrivers-driver: no driver named 'fakee'; installed drivers: *fake*",
            id="unknown-driver-name",
        ),
        pytest.param(
            ("--powerdrivers-driver", "procs", *SPAWN),
            "ERROR: --powerdrivers-spawn: driver 'procs' does not declare spawn; *--powerdrivers-instance*",
            id="spawn-not-declared",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "-p", "no:logging"),
            "ERROR: the conformance kit needs pytest's logging plugin: drop -p no:logging",
            id="logging-plugin-disabled",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-timeout", "inf"),
            "ERROR: --powerdrivers-timeout must be from 0 to * seconds, not 'inf'",
            id="timeout-infinite",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-timeout", "soon"),
            "ERROR: --powerdrivers-timeout must be a number of seconds, not 'soon'",
            id="timeout-not-a-number",
        ),
        pytest.param(
            ("--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-event-timeout", "0"),
            "ERROR: --powerdrivers-event-timeout must be more than 0 seconds, not '0'",
            id="event-timeout-zero",
        ),
    ],
)  # fmt: skip
def test_a_bad_flag_is_one_usage_error_before_any_test_runs(
    pytester: pytest.Pytester, flags: tuple[str, ...], line: str
) -> None:
    assert_one_usage_error(run_kit(pytester, *flags), line)


def test_a_driver_that_cannot_list_is_a_usage_error_naming_the_uri(pytester: pytest.Pytester) -> None:
    # Connected, but the first call fails: a driver may connect lazily, so the kit lists once.
    result = run_kit(
        pytester, "--powerdrivers-driver", "fake", *SPAWN, "--powerdrivers-option", "fail_read=connection"
    )
    assert_one_usage_error(result, "ERROR: --powerdrivers-uri: cannot list instances: injected failure of *")


def test_an_untyped_error_while_connecting_is_blamed_on_the_driver(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(raw_connect=RAW_CONNECT)
    result = run_kit(pytester, "--powerdrivers-driver", "raw_connect:RawConnect", *SPAWN)
    assert_one_usage_error(
        result,
        "ERROR: --powerdrivers-uri: connecting let an untyped builtins.OSError escape: connection reset by "
        "peer; drivers must translate every native error into the powerdrivers hierarchy",
    )


def test_an_instance_named_by_id_is_found(pytester: pytest.Pytester) -> None:
    import powerdrivers

    with powerdrivers.load_driver("fake") as driver:
        web_1 = driver.get_instance("web-1").id  # the fake's seeded ids are the same in every process
    result = run_kit(
        pytester, "--powerdrivers-driver", "fake", "--powerdrivers-instance", web_1,
        "--powerdrivers-option", "guest_delay=0.02", "--powerdrivers-timeout", "2", "-k", "by_id_and_by_name",
    )  # fmt: skip
    result.assert_outcomes(passed=1)
