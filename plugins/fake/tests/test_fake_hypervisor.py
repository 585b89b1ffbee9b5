"""The simulated hypervisor on its own, with no driver: its records, guest actions and crashes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fake_helpers import wait_until
from powerdrivers_fake._hypervisor import FakeHypervisor
from powerdrivers_fake._options import FakeOptions
from powerdrivers_fake._seed import new_record
from powerdrivers_fake._store import Document, MemoryStore, empty_document

from powerdrivers import Driver, InstanceNotFound

#: One change the hypervisor reported: name, (state, reason) before, (state, reason) after, cause.
Change = tuple[str, tuple[str, str], tuple[str, str], str | None]


class _Recorder:
    """The two hooks a hypervisor reports through, recording what they are given."""

    def __init__(self) -> None:
        self.changes: list[Change] = []
        self.commits = 0

    def changed(
        self, document: Document, record: dict[str, Any], before: tuple[str, str], cause: str | None
    ) -> None:
        self.changes.append((record["name"], before, (record["state"], record["reason"]), cause))

    def committed(self, document: Document, seq: int) -> None:
        self.commits += 1


@pytest.fixture
def recorder() -> _Recorder:
    return _Recorder()


@pytest.fixture
def hypervisor(recorder: _Recorder) -> Iterator[FakeHypervisor]:
    settings = FakeOptions(guest_delay=0.05, crash=frozenset({"doomed"}), crash_after=0.05)
    made = FakeHypervisor(MemoryStore(empty_document), settings)
    made.on_change, made.on_commit = recorder.changed, recorder.committed
    with made.transaction() as document:
        made.add(document, new_record("web", "running", "booted"))
    yield made
    made.close()


def _state(hypervisor: FakeHypervisor, name: str) -> tuple[str, str]:
    with hypervisor.transaction() as document:
        record = hypervisor.find(document, name)
        return record["state"], record["reason"]


def test_the_hypervisor_is_no_driver(hypervisor: FakeHypervisor) -> None:
    assert not isinstance(hypervisor, Driver)


def test_a_cooperative_guest_finishes_a_shutdown_on_the_hypervisors_own_clock(
    hypervisor: FakeHypervisor, recorder: _Recorder
) -> None:
    with hypervisor.transaction() as document:
        record = hypervisor.writable(document, hypervisor.find(document, "web"))
        hypervisor.ask_guest(document, record, "shutdown", "shutdown")
    assert _state(hypervisor, "web") == ("shutting_down", "acpi")
    # No call settles it: the timer does, and every transaction ends with on_commit.
    commits = recorder.commits
    wait_until(lambda: recorder.commits > commits and len(recorder.changes) == 2)
    assert recorder.changes == [
        ("web", ("running", "booted"), ("shutting_down", "acpi"), "shutdown"),
        ("web", ("shutting_down", "acpi"), ("shutoff", "shutdown"), "shutdown"),
    ]
    assert _state(hypervisor, "web") == ("shutoff", "shutdown")


def test_an_uncooperative_guest_ignores_the_request(hypervisor: FakeHypervisor, recorder: _Recorder) -> None:
    with hypervisor.transaction() as document:
        record = hypervisor.writable(document, hypervisor.find(document, "web"))
        record["guest"] = "uncooperative"
        hypervisor.ask_guest(document, record, "reboot", "reboot")
    assert hypervisor.next_due is None
    assert _state(hypervisor, "web") == ("running", "booted")
    assert recorder.changes == []


def test_an_instance_the_crash_option_names_crashes_once_running(
    hypervisor: FakeHypervisor, recorder: _Recorder
) -> None:
    with hypervisor.transaction() as document:
        hypervisor.add(document, new_record("doomed", "running", "booted"))
    assert hypervisor.next_due is not None
    wait_until(lambda: len(recorder.changes) == 1)
    assert recorder.changes == [("doomed", ("running", "booted"), ("crashed", "panicked"), None)]
    assert hypervisor.next_due is None


def test_removing_an_instance_cancels_what_was_due_on_it(hypervisor: FakeHypervisor) -> None:
    with hypervisor.transaction() as document:
        record = hypervisor.writable(document, hypervisor.find(document, "web"))
        hypervisor.ask_guest(document, record, "shutdown", "shutdown")
    with hypervisor.transaction() as document:
        record = hypervisor.writable(document, hypervisor.find(document, "web"))
        hypervisor.remove(document, record)
    assert hypervisor.next_due is None
    with hypervisor.transaction() as document, pytest.raises(InstanceNotFound):
        hypervisor.find(document, "web")


def test_a_hypervisor_with_no_hooks_set_still_settles_on_its_own_clock() -> None:
    hypervisor = FakeHypervisor(
        MemoryStore(empty_document), FakeOptions(crash=frozenset({"doomed"}), crash_after=0.02)
    )
    try:
        with hypervisor.transaction() as document:
            hypervisor.add(document, new_record("doomed", "running", "booted"))
        wait_until(lambda: _state(hypervisor, "doomed") == ("crashed", "panicked"))
    finally:
        hypervisor.close()
