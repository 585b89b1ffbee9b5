"""A corrupt state file is one clear error (CLI exit 1), whatever is wrong in it, and is left untouched.

Hardening issue, item 11: "wrong types in events, pending, crash_at, name: 42, vcpus: "2" surface
as 'driver cannot be loaded: KeyError' or 'unexpected TypeError' later."
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_helpers import DriverFactory, load_fake
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from powerdrivers import HypervisorError, InstanceSpec, InvalidSpec
from powerdrivers._cli import main

Document = dict[str, Any]
Corruption = Callable[[Document, str, int], None]

NAN = float("nan")
INF = float("inf")

#: A value that is wrong for each field of an instance record.
BAD_RECORD_VALUES: list[tuple[str, object]] = [
    ("name", 42),
    ("name", ""),
    ("name", None),
    ("name", ["web-1"]),
    ("name", "x" * 300),
    ("id", "another-id"),
    ("state", 42),
    ("state", None),
    ("state", {"running": True}),
    ("reason", []),
    ("reason", ""),
    ("guest", "maybe"),
    ("guest", True),
    ("guest", ["cooperative"]),
    ("vcpus", "2"),
    ("vcpus", 0),
    ("vcpus", -1),
    ("vcpus", 2.0),
    ("vcpus", True),
    ("vcpus", None),
    ("vcpus", 99999999999),
    ("memory_mib", "2048"),
    ("memory_mib", 0),
    ("memory_mib", 10**400),
    ("pending", "soon"),
    ("pending", 1),
    ("pending", []),
    ("pending", {"action": "explode", "due": 1.0, "cause": None}),
    ("pending", {"action": ["shutdown"], "due": 1.0, "cause": None}),
    ("pending", {"action": "shutdown", "due": "later", "cause": None}),
    ("pending", {"action": "shutdown", "due": NAN, "cause": None}),
    ("pending", {"action": "shutdown", "due": 1.0, "cause": "dance"}),
    ("pending", {"action": "shutdown", "due": 1.0, "cause": ["shutdown"]}),
    ("pending", {"action": "shutdown"}),
    ("crash_at", "soon"),
    ("crash_at", []),
    ("crash_at", True),
    ("crash_at", NAN),
    ("crash_at", INF),
    ("crash_at", -1),
    ("crash_at", 10**400),
    ("created_at", "yesterday"),
]

#: A value that is wrong for each field of a logged event.
BAD_EVENT_VALUES: list[tuple[str, object]] = [
    ("seq", "1"),
    ("seq", 0),
    ("seq", 10**9),
    ("seq", None),
    ("time", "now"),
    ("time", NAN),
    ("time", 1e300),
    ("kind", "exploded"),
    ("kind", []),
    ("kind", None),
    ("id", 42),
    ("name", None),
    ("state", {}),
    ("reason", 7),
    ("cause", "dance"),
    ("cause", 7),
    ("cause", {"op": "pause"}),
]


def _set_record(field: str, value: object) -> Corruption:
    def corrupt(document: Document, key: str, _: int) -> None:
        document["instances"][key][field] = value

    return corrupt


def _set_event(field: str, value: object) -> Corruption:
    def corrupt(document: Document, _: str, index: int) -> None:
        document["events"][index % len(document["events"])][field] = value

    return corrupt


def _drop_record_field(field: str) -> Corruption:
    def corrupt(document: Document, key: str, _: int) -> None:
        del document["instances"][key][field]

    return corrupt


def _replace_record(value: object) -> Corruption:
    def corrupt(document: Document, key: str, _: int) -> None:
        document["instances"][key] = value

    return corrupt


def _replace_event(value: object) -> Corruption:
    def corrupt(document: Document, _: str, index: int) -> None:
        document["events"][index % len(document["events"])] = value

    return corrupt


def _set_top(field: str, value: object) -> Corruption:
    def corrupt(document: Document, _: str, __: int) -> None:
        document[field] = value

    return corrupt


def _duplicate_name(document: Document, key: str, _: int) -> None:
    other = next(record for other, record in document["instances"].items() if other != key)
    document["instances"][key]["name"] = other["name"]


def _overlong_log(document: Document, _: str, __: int) -> None:
    last = document["events"][-1]
    document["events"] += [dict(last, seq=last["seq"] + n) for n in range(1, 502)]
    document["seq"] = last["seq"] + 501


def _events_out_of_order(document: Document, _: str, __: int) -> None:
    document["events"].reverse()


CORRUPTIONS: dict[str, Corruption] = {
    **{f"record-{field}-{value!r:.20}": _set_record(field, value) for field, value in BAD_RECORD_VALUES},
    **{f"event-{field}-{value!r:.20}": _set_event(field, value) for field, value in BAD_EVENT_VALUES},
    **{f"record-without-{field}": _drop_record_field(field) for field in ("guest", "pending", "vcpus")},
    "record-not-an-object": _replace_record(42),
    "record-a-list": _replace_record([]),
    "event-not-an-object": _replace_event("paused"),
    "event-a-list": _replace_event([]),
    "duplicate-name": _duplicate_name,
    "overlong-log": _overlong_log,
    "events-out-of-order": _events_out_of_order,
    "format-true": _set_top("format", True),
    "format-text": _set_top("format", "1"),
    "seq-text": _set_top("seq", "3"),
    "seq-negative": _set_top("seq", -1),
    "seq-below-the-log": _set_top("seq", 1),
    "instances-a-list": _set_top("instances", []),
    "events-an-object": _set_top("events", {}),
    "events-null": _set_top("events", None),
    "operations-an-object": _set_top("operations", {}),
    "operations-of-text": _set_top("operations", ["shutdown"]),
    "operation-without-pid": _set_top(
        "operations",
        [{"id": "x", "operation": "shutdown", "owner": "o", "token": "t", "started": None, "since": 1}],
    ),
    "operation-unknown": _set_top(
        "operations",
        [
            {
                "id": "x",
                "operation": "dance",
                "owner": "o",
                "token": "t",
                "pid": 1,
                "started": None,
                "since": 1,
            }
        ],
    ),
    "operation-pid-text": _set_top(
        "operations",
        [
            {
                "id": "x",
                "operation": "reboot",
                "owner": "o",
                "token": "t",
                "pid": "1",
                "started": None,
                "since": 1,
            }
        ],
    ),
}

#: Commands that each load the state: reads, operations, statistics, events.
COMMANDS: list[list[str]] = [
    ["list"],
    ["info", "web-1"],
    ["pause", "web-1"],
    ["start", "batch-7"],
    ["shutdown", "web-2", "--timeout", "0"],
    ["stats", "web-1", "--window", "0.01"],
    ["poweroff", "legacy-db"],
    ["reboot", "web-1", "--hard"],
    ["events", "--count", "1", "--timeout", "0.1"],
]


@functools.cache
def _valid_content() -> str:
    """A state file as the fake writes it, with events in its log and a guest action pending."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "state.json"
        with load_fake(f"fake://{path}", guest_delay=3600) as driver:
            driver.pause("web-1")
            driver.unpause("web-1")
            driver.start("batch-7")
            driver.shutdown("web-2", timeout=0.01, force=False)
        content = path.read_text()
    document = json.loads(content)
    assert len(document["events"]) >= 3
    assert any(record["pending"] for record in document["instances"].values())
    return content


def _valid_document(directory: Path) -> Path:
    """Write the valid state file (and its lock, as a driver leaves it) into ``directory``."""
    path = directory / "state.json"
    path.write_text(_valid_content())
    path.with_name("state.json.lock").touch()
    return path


def _corrupt(path: Path, corruptions: list[Corruption], key: str, index: int) -> bytes | None:
    """Apply each corruption that still applies; return the file's new content, or None if unchanged."""
    original = path.read_text()
    document = json.loads(original)
    for corruption in corruptions:
        # An earlier corruption may have taken away what this one changes.
        with contextlib.suppress(TypeError, KeyError, IndexError, ZeroDivisionError, StopIteration):
            corruption(document, key, index)
    content = json.dumps(document, indent=1)
    if content == json.dumps(json.loads(original), indent=1):
        return None
    path.write_text(content)
    return content.encode()


def _run_cli(capsys: pytest.CaptureFixture[str], path: Path, command: list[str]) -> tuple[int, str]:
    code = main(["-d", "fake", "-c", f"fake://{path}", *command])
    _, err = capsys.readouterr()
    return code, err


def _assert_reported(code: int, err: str, path: Path, content: bytes) -> None:
    assert code == 1, err
    assert err.count("\n") == 1 and "fake state file" in err and "left untouched" in err, err
    assert "unexpected" not in err and "cannot be loaded" not in err, err
    assert path.read_bytes() == content
    assert sorted(entry.name for entry in path.parent.iterdir()) == ["state.json", "state.json.lock"]


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [key for key in os.environ if key.startswith("POWERDRIVERS_")]:
        monkeypatch.delenv(key)
    yield


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_every_corruption_is_one_failure_through_the_cli(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, corruption: str
) -> None:
    path = _valid_document(tmp_path)
    content = _corrupt(path, [CORRUPTIONS[corruption]], _web_1(path), 0)
    assert content is not None
    for command in (["list"], ["pause", "web-1"]):
        _assert_reported(*_run_cli(capsys, path, command), path, content)


@settings(
    max_examples=40,
    deadline=None,
    database=None,
    # capsys is read out after every example.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    corruptions=st.lists(st.sampled_from(list(CORRUPTIONS.values())), min_size=1, max_size=3),
    instance=st.integers(min_value=0, max_value=4),
    event=st.integers(min_value=0, max_value=10),
    command=st.sampled_from(COMMANDS),
)
def test_any_mix_of_corruptions_and_commands_is_one_failure_through_the_cli(
    capsys: pytest.CaptureFixture[str],
    corruptions: list[Corruption],
    instance: int,
    event: int,
    command: list[str],
) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = _valid_document(Path(directory))
        key = sorted(json.loads(path.read_text())["instances"])[instance]
        content = _corrupt(path, corruptions, key, event)
        assume(content is not None)
        assert content is not None
        _assert_reported(*_run_cli(capsys, path, command), path, content)


@pytest.mark.parametrize(
    ("field", "value", "command"),
    [
        ("name", 42, ["list"]),
        ("vcpus", "2", ["stats", "web-1", "--window", "0.01"]),
        ("vcpus", 99999999999, ["stats", "web-1", "--window", "0.01"]),
        ("pending", "soon", ["pause", "web-1"]),
        ("crash_at", "soon", ["info", "web-1"]),
    ],
)
def test_the_cli_process_exits_1_on_a_corrupt_file(
    tmp_path: Path, field: str, value: object, command: list[str]
) -> None:
    path = _valid_document(tmp_path)
    content = _corrupt(path, [_set_record(field, value)], _web_1(path), 0)
    assert content is not None
    environment = {key: value for key, value in os.environ.items() if not key.startswith("POWERDRIVERS_")}
    completed = subprocess.run(
        [sys.executable, "-m", "powerdrivers", "-d", "fake", "-c", f"fake://{path}", *command],
        capture_output=True,
        text=True,
        timeout=30,
        env=environment,
        check=False,
    )
    _assert_reported(completed.returncode, completed.stderr, path, content)
    assert field in completed.stderr


def test_a_file_corrupted_under_a_live_driver_fails_every_call_and_is_kept(
    make_driver: DriverFactory, tmp_path: Path
) -> None:
    path = _valid_document(tmp_path)
    driver = make_driver(f"fake://{path}")
    content = _corrupt(path, [_set_record("vcpus", 99999999999), _set_event("kind", [])], _web_1(path), 0)
    assert content is not None
    calls: list[Callable[[], object]] = [
        driver.list_instances,
        lambda: driver.get_instance("web-1"),
        lambda: driver.vcpu_stats("web-1", window=0.01),
        lambda: driver.pause("web-1"),
        lambda: driver.spawn(InstanceSpec("newcomer")),
    ]
    for call in calls:
        with pytest.raises(HypervisorError) as raised:
            call()
        assert raised.value.code == "corrupt"
        assert path.read_bytes() == content


@pytest.mark.parametrize(("vcpus", "memory_mib"), [(4097, 512), (1, 16 * 1024 * 1024 + 1)])
def test_spawn_refuses_more_vcpus_or_memory_than_the_fake_samples(
    make_driver: DriverFactory, vcpus: int, memory_mib: int
) -> None:
    driver = make_driver(seed="empty")
    with pytest.raises(InvalidSpec):
        driver.spawn(InstanceSpec("huge", vcpus=vcpus, memory_mib=memory_mib))
    assert driver.list_instances() == []


def _web_1(path: Path) -> str:
    document: Document = json.loads(path.read_text())
    key: str = next(key for key, record in document["instances"].items() if record["name"] == "web-1")
    return key
