"""Event delivery, change classification, attribution and the polling source."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from powerdrivers import (
    Event,
    EventKind,
    InstanceReading,
    InvalidStateTransition,
    Operation,
    PowerState,
    Transition,
)
from powerdrivers._changes import change_kind
from powerdrivers._events import EventHub
from powerdrivers._exceptions import HypervisorConnectionError
from powerdrivers._polling import PollingEventSource
from powerdrivers._tracking import OperationTracker


def _reading(
    state: PowerState, transition: Transition | None = None, instance_id: str = "i"
) -> InstanceReading:
    return InstanceReading(instance_id, "vm", state, transition, state.value, None, datetime.now(UTC))


def _event(kind: EventKind = EventKind.STARTED) -> Event:
    return Event.from_reading(kind, _reading(PowerState.RUNNING), None)


class TestHub:
    def test_every_listener_gets_every_event_and_a_failing_one_does_not_stop_the_rest(self) -> None:
        calls: list[str] = []
        hub = EventHub(lambda: calls.append("first"), lambda: calls.append("last"))
        got_a: list[Event] = []
        got_b: list[Event] = []

        def explode(event: Event) -> None:
            raise RuntimeError("listener bug")

        sub_a = hub.add(got_a.append)
        hub.add(explode)
        sub_b = hub.add(got_b.append)
        hub.publish(_event())
        assert len(got_a) == len(got_b) == 1
        sub_a.unsubscribe()
        sub_a.unsubscribe()
        hub.publish(_event(EventKind.STOPPED))
        assert len(got_a) == 1 and len(got_b) == 2
        assert not sub_a.active and sub_b.active
        assert calls == ["first"]

    def test_source_runs_only_while_someone_listens(self) -> None:
        calls: list[str] = []
        hub = EventHub(lambda: calls.append("first"), lambda: calls.append("last"))
        with hub.add(lambda event: None), hub.add(lambda event: None):
            assert hub.has_listeners
        assert calls == ["first", "last"] and not hub.has_listeners

    def test_a_source_that_fails_to_start_leaves_no_listener(self) -> None:
        def refuse() -> None:
            raise HypervisorConnectionError("down")

        hub = EventHub(refuse, lambda: None)
        with pytest.raises(HypervisorConnectionError):
            hub.add(lambda event: None)
        assert not hub.has_listeners

    def test_event_json_shape(self) -> None:
        event = Event.from_reading(EventKind.STOPPED, _reading(PowerState.SHUTOFF), Operation.SHUTDOWN)
        assert set(event.to_dict()) == {
            "time", "id", "name", "event", "power_state", "transition",
            "native_state", "native_reason", "caused_by_operation",
        }  # fmt: skip
        assert event.to_dict()["event"] == "stopped"
        assert event.to_dict()["caused_by_operation"] == "shutdown"


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (None, PowerState.RUNNING, EventKind.SPAWNED),
        (PowerState.RUNNING, None, EventKind.DELETED),
        (PowerState.SHUTOFF, PowerState.RUNNING, EventKind.STARTED),
        (PowerState.CRASHED, PowerState.RUNNING, EventKind.STARTED),
        (PowerState.PAUSED, PowerState.RUNNING, EventKind.UNPAUSED),
        (PowerState.SUSPENDED, PowerState.RUNNING, EventKind.RESUMED),
        (PowerState.RUNNING, PowerState.SHUTOFF, EventKind.STOPPED),
        (PowerState.RUNNING, PowerState.PAUSED, EventKind.PAUSED),
        (PowerState.RUNNING, PowerState.SUSPENDED, EventKind.SUSPENDED),
        (PowerState.RUNNING, PowerState.CRASHED, EventKind.CRASHED),
        (PowerState.RUNNING, PowerState.UNKNOWN, EventKind.STATE_UNKNOWN),
        (PowerState.RUNNING, PowerState.RUNNING, None),
    ],
)
def test_change_kind(before: PowerState | None, after: PowerState | None, kind: EventKind | None) -> None:
    assert change_kind(_reading(before) if before else None, _reading(after) if after else None) is kind


def test_change_kind_reports_transitions_with_the_same_state() -> None:
    running = _reading(PowerState.RUNNING)
    stopping = _reading(PowerState.RUNNING, Transition.SHUTTING_DOWN)
    assert change_kind(running, stopping) is EventKind.TRANSITION
    assert change_kind(None, None) is None


class TestTracker:
    def test_in_flight_operation_is_reported_and_attributed(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            assert tracker.in_flight("i") is Operation.HARD_REBOOT
            assert tracker.expects("i", EventKind.STOPPED) is Operation.HARD_REBOOT
            assert tracker.cause("i", EventKind.TRANSITION) is Operation.HARD_REBOOT
            assert tracker.cause("i", EventKind.TRANSITION) is Operation.HARD_REBOOT
            assert tracker.cause("i", EventKind.STOPPED) is Operation.HARD_REBOOT
            assert tracker.cause("i", EventKind.CRASHED) is None
            assert tracker.cause("other", EventKind.STOPPED) is None
        assert tracker.in_flight("i") is None

    def test_a_driver_reporting_while_an_operation_runs_leaves_older_debts(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.PAUSE):
            pass
        with tracker.track("i", Operation.HARD_REBOOT):
            # The driver reports its own reset at once; the pause's event is still on its way.
            assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.PAUSED) is Operation.PAUSE

    def test_a_hypervisor_event_during_an_operation_settles_older_debts(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            pass
        with tracker.track("i", Operation.SUSPEND):
            # Delivered by the hypervisor's event thread while suspend() still runs.
            heard: list[Operation | None] = []
            worker = threading.Thread(target=lambda: heard.append(tracker.cause("i", EventKind.SUSPENDED)))
            worker.start()
            worker.join()
        assert heard == [Operation.SUSPEND]
        # The hard reboot's stop and start never came, and never will: a later stop is not its.
        assert tracker.cause("i", EventKind.STOPPED) is None

    def test_caught_up_settles_what_finished_operations_are_owed(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.START):
            pass
        tracker.caught_up("i")
        assert tracker.cause("i", EventKind.UNPAUSED) is None

    def test_after_return_each_caused_kind_is_attributed_once_within_the_grace(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.HARD_REBOOT):
            pass
        assert tracker.cause("i", EventKind.STOPPED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.STARTED) is Operation.HARD_REBOOT
        # A second stop is not ours: it is an outage.
        assert tracker.cause("i", EventKind.STOPPED) is None

    def test_late_events_go_to_the_operation_that_caused_them_in_order(self) -> None:
        tracker = OperationTracker(grace_s=5)
        for operation in (Operation.START, Operation.REBOOT, Operation.HARD_REBOOT, Operation.PAUSE):
            with tracker.track("i", operation):
                pass
        # The events arrive only now, in the order they happened.
        assert tracker.cause("i", EventKind.STARTED) is Operation.START
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.REBOOT
        assert tracker.cause("i", EventKind.REBOOTED) is Operation.HARD_REBOOT
        assert tracker.cause("i", EventKind.PAUSED) is Operation.PAUSE
        # The reboot never stopped the instance; once later events matched, it is owed nothing.
        assert tracker.cause("i", EventKind.STOPPED) is None

    def test_transition_events_go_to_the_operation_whose_transition_they_show(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.SHUTDOWN):
            assert tracker.cause("i", EventKind.TRANSITION, Transition.SHUTTING_DOWN) is Operation.SHUTDOWN
            # The forced fallback of a graceful shutdown shows powering_off: still the shutdown's.
            assert tracker.cause("i", EventKind.TRANSITION, Transition.POWERING_OFF) is Operation.SHUTDOWN
        with tracker.track("i", Operation.START):
            pass
        # A transition ending belongs to the newest operation; one nobody of ours shows, to nobody.
        assert tracker.cause("i", EventKind.TRANSITION, None) is Operation.START
        assert tracker.cause("i", EventKind.TRANSITION, Transition.SHUTTING_DOWN) is Operation.SHUTDOWN
        assert tracker.cause("i", EventKind.TRANSITION, Transition.PAUSING) is None
        assert tracker.cause("other", EventKind.TRANSITION, None) is None

    def test_nothing_is_attributed_after_the_grace(self) -> None:
        tracker = OperationTracker(grace_s=0.01)
        with tracker.track("i", Operation.POWER_OFF):
            pass
        time.sleep(0.02)
        assert tracker.cause("i", EventKind.STOPPED) is None

    def test_a_second_operation_is_refused_unless_forced_or_the_same(self) -> None:
        tracker = OperationTracker()
        with tracker.track("i", Operation.SHUTDOWN):
            with (
                pytest.raises(InvalidStateTransition, match="shutting_down in progress"),
                tracker.track("i", Operation.PAUSE),
            ):
                pass
            with tracker.track("i", Operation.SHUTDOWN):
                pass
            with tracker.track("i", Operation.POWER_OFF):
                assert tracker.in_flight("i") is Operation.POWER_OFF
            assert tracker.in_flight("i") is Operation.SHUTDOWN
        assert tracker.in_flight("i") is None

    def test_a_busy_instance_keeps_only_its_newest_finished_operations(self) -> None:
        tracker = OperationTracker(grace_s=5)
        with tracker.track("i", Operation.START):
            pass
        for _ in range(16):
            with tracker.track("i", Operation.PAUSE):
                pass
        # Seventeen have finished; the history is cut down when the next one begins.
        assert tracker.expects("i", EventKind.STARTED) is Operation.START
        with tracker.track("i", Operation.PAUSE):
            assert tracker.expects("i", EventKind.STARTED) is None
            assert tracker.expects("i", EventKind.PAUSED) is Operation.PAUSE

    def test_only_operations_within_their_grace_count_towards_the_history_cap(self) -> None:
        tracker = OperationTracker(grace_s=0.5)
        with tracker.track("i", Operation.SHUTDOWN):
            # A forced power-off interrupts the shutdown and finishes first, long before it.
            with tracker.track("i", Operation.POWER_OFF):
                pass
            time.sleep(0.6)
        for _ in range(16):
            with tracker.track("i", Operation.PAUSE):
                pass
        # The power-off is past its grace: sixteen finished operations are left, the
        # shutdown, though the oldest, among them.
        assert tracker.expects("i", EventKind.STOPPED) is Operation.SHUTDOWN
        assert tracker.expects("i", EventKind.PAUSED) is Operation.PAUSE

    def test_interleaved_operations_on_threads_end_cleanly(self) -> None:
        tracker = OperationTracker()
        entered = threading.Event()
        release = threading.Event()

        def forced() -> None:
            with tracker.track("i", Operation.POWER_OFF):
                entered.set()
                release.wait(5)

        with tracker.track("i", Operation.SHUTDOWN):
            worker = threading.Thread(target=forced)
            worker.start()
            assert entered.wait(5)
        assert tracker.in_flight("i") is Operation.POWER_OFF
        release.set()
        worker.join()
        assert tracker.in_flight("i") is None


class TestPolling:
    def test_reports_changes_appearances_and_disappearances(self) -> None:
        world = {
            "a": _reading(PowerState.RUNNING, instance_id="a"),
            "b": _reading(PowerState.SHUTOFF, instance_id="b"),
        }
        changes: list[tuple[str | None, str | None]] = []
        source = PollingEventSource(
            lambda: list(world.values()),
            lambda before, after: changes.append(
                (before.power_state.value if before else None, after.power_state.value if after else None)
            ),
            lambda: None,
            interval_s=60,
        )
        source.start()
        source.poll_now()
        assert changes == []
        world["a"] = _reading(PowerState.PAUSED, instance_id="a")
        del world["b"]
        world["c"] = _reading(PowerState.RUNNING, instance_id="c")
        source.poll_now()
        source.stop()
        assert sorted(changes, key=str) == sorted(
            [("running", "paused"), ("shutoff", None), (None, "running")], key=str
        )

    def test_resyncs_after_a_failed_poll(self) -> None:
        failing = threading.Event()
        resynced = threading.Event()

        def read() -> list[InstanceReading]:
            if failing.is_set():
                failing.clear()
                raise HypervisorConnectionError("gone")
            return []

        source = PollingEventSource(read, lambda before, after: None, resynced.set, interval_s=0.01)
        source.start()
        failing.set()
        assert resynced.wait(5)
        source.stop()
