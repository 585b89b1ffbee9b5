"""What ``--powerdrivers-spec KEY=VALUE`` makes of the instances the kit spawns, and what it refuses.

A spec key the kit does not know (a typo) or a value InstanceSpec refuses is
a usage error before any test runs, not a TypeError in every test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from powerdrivers import DriverLoadError, InvalidSpec
from powerdrivers.conformance._settings import KitSettings


def test_the_spec_text_becomes_a_typed_instance_spec() -> None:
    settings = KitSettings(
        driver="fake",
        spawn=True,
        spec={
            "vcpus": "2",
            "memory_mib": "64",
            "kernel": "/boot/vmlinuz",
            "initrd": "/boot/initrd.img",
            "cmdline": "console=ttyS0 quiet",
            "metadata.owner": "kit",
            "metadata.purpose": "conformance",
        },
    )
    spec = settings.instance_spec("pdkit-1")
    assert spec.name == "pdkit-1"
    assert (spec.vcpus, spec.memory_mib) == (2, 64)
    assert (spec.kernel, spec.initrd) == (Path("/boot/vmlinuz"), Path("/boot/initrd.img"))
    assert spec.cmdline == "console=ttyS0 quiet"
    assert spec.disk_image is None
    assert dict(spec.metadata) == {"owner": "kit", "purpose": "conformance"}


def test_a_disk_image_is_a_path() -> None:
    spec = KitSettings(driver="fake", spec={"disk_image": "/var/lib/img.qcow2"}).instance_spec("pdkit-2")
    assert spec.disk_image == Path("/var/lib/img.qcow2")
    assert spec.kernel is None


def test_an_empty_spec_is_the_default_instance() -> None:
    spec = KitSettings(driver="fake").instance_spec("pdkit-3")
    assert (spec.vcpus, spec.memory_mib, dict(spec.metadata)) == (1, 256, {})


def test_an_unknown_spec_key_is_refused_naming_it_and_the_fields() -> None:
    expected = r"no spec field 'colour'; the fields are vcpus, memory_mib, .* and metadata\.KEY"
    with pytest.raises(InvalidSpec, match=expected):
        KitSettings(driver="fake", spec={"colour": "blue"}).instance_spec("pdkit-4")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("vcpus", "two", "vcpus must be a whole number, not 'two'"),
        ("memory_mib", "1", "memory_mib must be from 16"),
        ("initrd", "/boot/initrd.img", "initrd and cmdline need a kernel"),
    ],
)
def test_a_value_the_spec_refuses_is_invalid_spec(key: str, value: str, fragment: str) -> None:
    with pytest.raises(InvalidSpec, match=fragment):
        KitSettings(driver="fake", spec={key: value}).instance_spec("pdkit-5")


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        ("colour=blue", "*--powerdrivers-spec: no spec field 'colour'*"),
        ("vcpus=two", "*--powerdrivers-spec: vcpus must be a whole number, not 'two'*"),
    ],
)
def test_a_bad_spec_is_a_usage_error_before_any_test_runs(
    pytester: pytest.Pytester, pair: str, fragment: str
) -> None:
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "fake", "--powerdrivers-spawn",
        "--powerdrivers-spec", pair,
    )  # fmt: skip
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([fragment])
    assert "Traceback" not in result.stderr.str() + result.stdout.str()


def test_a_spec_is_not_checked_when_the_kit_spawns_nothing(pytester: pytest.Pytester) -> None:
    # Without --powerdrivers-spawn the spec is never used; the kit runs on the given instance.
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "--powerdrivers-driver", "fake", "--powerdrivers-instance", "web-1",
        "--powerdrivers-spec", "colour=blue", "--powerdrivers-option", "guest_delay=0.02",
        "--powerdrivers-timeout", "2", "-k", "canonical_and_native",
    )  # fmt: skip
    assert result.ret == 0, result.stdout.str()
    result.assert_outcomes(passed=1)


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("powerdrivers_fake:FakeDrivr", "module 'powerdrivers_fake' has no attribute 'FakeDrivr'"),
        ("powerdrivers_fak:FakeDriver", "module 'powerdrivers_fak' cannot be imported: ModuleNotFoundError"),
        ("powerdrivers_fake:", "a driver class is named package.module:Class"),
        (":FakeDriver", "a driver class is named package.module:Class"),
        ("powerdrivers:PowerState", "not a subclass of powerdrivers.Driver"),
    ],
)
def test_a_class_path_that_names_no_driver_is_a_driver_load_error(path: str, fragment: str) -> None:
    expected = re.escape(f"driver {path!r} cannot be loaded: ") + ".*" + re.escape(fragment)
    with pytest.raises(DriverLoadError, match=expected):
        KitSettings(driver=path).driver_class()
