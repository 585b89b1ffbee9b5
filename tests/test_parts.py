"""Small parts of the core: readings, outcomes, VCPU stats, secrets, native tables, versions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest

from powerdrivers import (
    InstanceReading,
    InstanceSpec,
    InvalidSpec,
    NativeMapping,
    NativeStateTable,
    Operation,
    OperationResult,
    Outcome,
    PowerState,
    Secret,
    Transition,
    VcpuStats,
    redact_uri,
)
from powerdrivers import _native as native
from powerdrivers._version import is_compatible, parse_interface_version

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _reading(**changes: object) -> InstanceReading:
    values: dict[str, object] = {
        "id": "i-1",
        "name": "web",
        "power_state": PowerState.RUNNING,
        "transition": Transition.SHUTTING_DOWN,
        "native_state": "shutdown",
        "native_reason": "user",
        "observed_at": NOW,
    }
    values.update(changes)
    return InstanceReading(**values)  # type: ignore[arg-type]


def test_reading_serialises_lower_case_names_and_keeps_native_values() -> None:
    assert _reading().to_dict() == {
        "id": "i-1",
        "name": "web",
        "power_state": "running",
        "transition": "shutting_down",
        "native_state": "shutdown",
        "native_reason": "user",
        "observed_at": "2026-01-02T03:04:05+00:00",
    }
    assert _reading(transition=None).to_dict()["transition"] is None


def test_operation_result_shape() -> None:
    result = OperationResult(Operation.SHUTDOWN, Outcome.FORCED, 2.34567, _reading(transition=None))
    assert result.to_dict() == {
        "id": "i-1",
        "name": "web",
        "operation": "shutdown",
        "outcome": "forced",
        "elapsed_s": 2.346,
        "power_state": "running",
        "transition": None,
    }
    assert result.succeeded
    assert not OperationResult(Operation.REBOOT, Outcome.TIMED_OUT, 1, _reading()).succeeded


def test_vcpu_stats_validate_fractions() -> None:
    stats = VcpuStats(0, 0.5, 0.3, 0.2, 1.0)
    assert stats.to_dict() == {
        "vcpu": 0,
        "running": 0.5,
        "blocked": 0.3,
        "waiting": 0.2,
        "window_s": 1.0,
        "halted": None,
        "halt_exits": None,
        "io_exits": None,
        "mmio_exits": None,
    }
    with pytest.raises(ValueError, match="sum"):
        VcpuStats(0, 0.6, 0.3, 0.2, 1.0)
    with pytest.raises(ValueError, match="outside"):
        VcpuStats(0, -0.1, 0.3, 0.2, 1.0)
    with pytest.raises(ValueError, match="window"):
        VcpuStats(0, 0.1, 0.3, 0.2, 0)


def test_secret_never_shows_itself() -> None:
    secret = Secret("hunter2")
    assert "hunter2" not in repr(secret) and "hunter2" not in str(secret) and "hunter2" not in f"{secret}"
    assert "hunter2" not in repr({"password": secret})
    assert secret.reveal() == "hunter2"
    assert secret == Secret("hunter2") and secret != Secret("other") and bool(secret)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://root:hunter2@xen.example:443/", "https://root:********@xen.example:443/"),
        ("qemu+ssh://admin@host/system", "qemu+ssh://admin@host/system"),
        ("https://host/?user=a&password=hunter2&x=1", "https://host/?user=a&password=********&x=1"),
        ("test:///default", "test:///default"),
        # Unencoded characters a URL parser would read as fragment, query or path.
        ("http://user:hunter2#z@127.0.0.1:1", "http://user:********@127.0.0.1:1"),
        ("http://user:hun?ter2@127.0.0.1:1/x", "http://user:********@127.0.0.1:1/x"),
        ("test://user:hu/nter2@host/default", "test://user:********@host/default"),
        ("xen://u:a@hunter2@host/", "xen://u:********@host/"),
        ("https://u:hunter2%40x@host/", "https://u:********@host/"),
        ("qemu+ssh://admin@host/system?keyfile=/a@b", "qemu+ssh://admin@host/system?keyfile=/a@b"),
    ],
)
def test_redact_uri(uri: str, expected: str) -> None:
    assert redact_uri(uri) == expected
    assert "hunter2" not in redact_uri(uri)


def test_redact_uri_on_unparseable_input_hides_everything() -> None:
    assert redact_uri("http://[::1:hunter2@x") == "********"


TABLE = NativeStateTable(
    "demo",
    [
        NativeMapping("on", None, PowerState.RUNNING, None),
        NativeMapping("on", "stopping", PowerState.RUNNING, Transition.SHUTTING_DOWN),
        NativeMapping("off", None, PowerState.SHUTOFF, None),
    ],
)


def test_native_table_prefers_the_exact_reason_then_the_catch_all() -> None:
    assert TABLE.lookup("on", "stopping") == (PowerState.RUNNING, Transition.SHUTTING_DOWN)
    assert TABLE.lookup("on", "booted") == (PowerState.RUNNING, None)
    assert TABLE.covers("off", "whatever") and not TABLE.covers("gone")
    assert len(TABLE) == 3 and [row.native_state for row in TABLE] == ["on", "on", "off"]


def test_unknown_native_state_is_unknown_with_one_warning_never_an_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="powerdrivers.native"):
        reading = TABLE.reading("x", "vm", "migrating", "weird", observed_at=NOW)
        TABLE.lookup("migrating", "weird")
    assert reading.power_state is PowerState.UNKNOWN and reading.transition is None
    assert (reading.native_state, reading.native_reason) == ("migrating", "weird")
    assert len([r for r in caplog.records if "migrating" in r.getMessage()]) == 1


def test_native_table_answers_alike_however_many_reasons_it_has_seen(monkeypatch: pytest.MonkeyPatch) -> None:
    # Each table remembers what the pairs it has seen resolve to, up to a bound.
    monkeypatch.setattr(native, "_RESOLVED_MAX", 2)
    table = NativeStateTable("bounded", list(TABLE))
    for reason in ("a", "b", "c", "d", "a"):
        assert table.lookup("on", reason) == (PowerState.RUNNING, None)
        assert table.reading("x", "vm", "on", reason, observed_at=NOW).power_state is PowerState.RUNNING
    assert table.lookup("on", "stopping") == (PowerState.RUNNING, Transition.SHUTTING_DOWN)
    assert table.lookup("off", None) == (PowerState.SHUTOFF, None)
    assert table.lookup("gone") == (PowerState.UNKNOWN, None)


def test_native_table_refuses_a_pair_mapped_twice() -> None:
    with pytest.raises(ValueError, match="mapped twice"):
        NativeStateTable("dup", [NativeMapping("a", None, PowerState.RUNNING, None)] * 2)


def test_reading_transition_can_be_overridden() -> None:
    reading = TABLE.reading("x", "vm", "on", transition=Transition.REBOOTING)
    assert reading.transition is Transition.REBOOTING
    assert reading.observed_at.tzinfo is UTC


@pytest.mark.parametrize(
    ("declared", "compatible"), [("1.0", True), ("1.1", True), ("1.2", False), ("0.9", False), ("2.0", False)]
)
def test_interface_compatibility(declared: str, compatible: bool) -> None:
    assert is_compatible(declared) is compatible


@pytest.mark.parametrize("text", ["1", "1.x", "v1.0", ""])
def test_interface_version_must_be_major_dot_minor(text: str) -> None:
    with pytest.raises(ValueError, match=r"MAJOR\.MINOR"):
        parse_interface_version(text)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "bad name"}, "letters, digits"),
        ({"name": "<xml>"}, "letters, digits"),
        ({"name": "web-1\n"}, "letters, digits"),
        ({"vcpus": 0}, "vcpus"),
        ({"memory_mib": 1}, "memory_mib"),
        ({"kernel": "k", "disk_image": "d"}, "not both"),
        ({"initrd": "i"}, "need a kernel"),
    ],
)
def test_spawn_spec_validation(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        InstanceSpec(**{"name": "ok", **changes})  # type: ignore[arg-type]
