"""The instance pages the database writes as JSON equal the views' own dicts, on both databases."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from store_support import both_databases

from powerdrivers import InstanceReading, InvalidOption, PowerState, Transition
from powerdrivers.keeper import Cause, Policy, SqlStore

pytestmark = both_databases

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
ODD = 'quote " backslash \\ tab \t newline \n é 雪 🚀 </script>'


def _reading(
    instance_id: str, name: str, state: PowerState, at: datetime, **kwargs: object
) -> InstanceReading:
    transition = kwargs.get("transition")
    reason = kwargs.get("reason")
    assert transition is None or isinstance(transition, Transition)
    assert reason is None or isinstance(reason, str)
    return InstanceReading(instance_id, name, state, transition, state.value, reason, at)


def _fill(store: SqlStore) -> None:
    """Instances with every kind of value the object holds: odd text, times with and without a fraction."""
    for host in ("alpha", "beta"):
        store.register_host(host, "fake", None)
    cases = [
        _reading("a-0", "plain", PowerState.RUNNING, T0),  # no fraction of a second
        _reading(
            "a-1", ODD, PowerState.RUNNING, T0 + timedelta(microseconds=1), transition=Transition.REBOOTING
        ),
        _reading(
            "a-2", "paused", PowerState.PAUSED, T0 + timedelta(seconds=1, microseconds=500000), reason=ODD
        ),
        _reading(
            "a-3",
            "off",
            PowerState.SHUTOFF,
            T0 - timedelta(days=400, microseconds=999999),
            reason="destroyed",
        ),
        _reading(
            "b-0", "crashed", PowerState.CRASHED, T0.astimezone(UTC) + timedelta(hours=3), reason="panicked"
        ),
        _reading("b-1", "busy", PowerState.RUNNING, T0 + timedelta(minutes=5)),
        _reading("b-2", "quarantined", PowerState.SHUTOFF, T0 + timedelta(minutes=6, microseconds=10)),
    ]
    for reading in cases:
        host = "alpha" if reading.id.startswith("a") else "beta"
        store.record_observation(host, reading, previous=None, cause=Cause.APPEARED)
    store.set_policy("a-1", Policy.ALWAYS, "ops")
    store.set_policy("b-2", Policy.ON_FAILURE, "ops")
    store.set_backoff("b-0", 3, T0 + timedelta(minutes=1))
    store.set_backoff("a-3", 1, T0 + timedelta(minutes=2, microseconds=123456))
    store.set_action_failures("b-0", 2)
    store.quarantine("b-2", f"3 actions failed: {ODD}", T0)
    store.set_host_reachable("beta", False, T0, "gone")  # its instances turn stale
    store.open_action("b-1", "shutdown", {"timeout": 5.0, "force": True, "note": ODD}, "ops")


def _views(
    store: SqlStore, limit: int, **filters: object
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Every page both ways, following each one's own cursors; the two must agree on those too."""
    made: list[dict[str, Any]] = []
    written: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        page, following = store.instances_page(after=after, limit=limit, **filters)  # type: ignore[arg-type]
        text, following_json = store.instances_page_json(after=after, limit=limit, **filters)  # type: ignore[arg-type]
        assert following_json == following
        made.extend(view.to_dict() for view in page)
        written.extend(json.loads(text))
        # Types too: 1 == True and 3.0 == 3 in Python, but not in JSON.
        assert _typed(json.loads(text)) == _typed([view.to_dict() for view in page])
        if following is None:
            return made, written
        after = following


def _typed(items: list[dict[str, Any]]) -> str:
    return json.dumps(items, sort_keys=True)


def test_every_page_is_the_views_dicts_key_for_key(store: SqlStore) -> None:
    _fill(store)
    for limit in (1, 3, 1000):
        made, written = _views(store, limit)
        assert len(made) == 7
        assert written == made
        assert [list(item) for item in written] == [list(item) for item in made]  # the same key order
    assert any(item["stale"] for item in written) and any(item["quarantined"] for item in written)
    for filters in ({"host": "beta"}, {"power_state": PowerState.RUNNING}, {"policy": Policy.ALWAYS}):
        made, written = _views(store, 2, **filters)
        assert written == made and made


def test_the_open_action_is_filled_in(store: SqlStore) -> None:
    _fill(store)
    text, _ = store.instances_page_json(host="beta", limit=1000)
    busy = next(item for item in json.loads(text) if item["id"] == "b-1")
    assert busy["in_flight"]["operation"] == "shutdown"
    assert busy["in_flight"]["options"] == {"timeout": 5.0, "force": True, "note": ODD}


def test_the_same_checks_refuse_the_same_input(store: SqlStore) -> None:
    _fill(store)
    nul_cursor = base64.urlsafe_b64encode(json.dumps(["alpha\u0000", "a-0"]).encode()).decode().rstrip("=")
    for bad in (
        {"host": "al\x00pha"},
        {"after": nul_cursor},
        {"limit": 0},
        {"limit": 1001},
        {"after": "not a cursor"},
        {"host": 7},
        {"policy": "sometimes"},
    ):
        with pytest.raises(InvalidOption) as from_views:
            store.instances_page(**bad)
        with pytest.raises(InvalidOption) as from_json:
            store.instances_page_json(**bad)
        assert str(from_json.value) == str(from_views.value)
    assert store.instances_page_json(host="nobody") == ("[]", None)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    name=st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=40),
    microseconds=st.integers(min_value=0, max_value=10**12),
)
def test_any_name_and_time_come_out_as_the_view_says(store: SqlStore, name: str, microseconds: int) -> None:
    if not store.hosts():
        store.register_host("h", "fake", None)
    at = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=microseconds)
    store.record_observation(
        "h", _reading("x", name, PowerState.RUNNING, at), previous=None, cause=Cause.APPEARED
    )
    made, written = _views(store, 10, host="h")
    assert written == made


def test_an_instance_moved_to_another_host_keeps_showing_its_open_action(store: SqlStore) -> None:
    _fill(store)
    moved = _reading("b-1", "busy", PowerState.RUNNING, T0 + timedelta(minutes=7))
    store.record_observation("alpha", moved, previous=PowerState.RUNNING, cause=Cause.OUT_OF_BAND)
    assert store.instance("b-1").in_flight is not None
    views, _ = store.instances_page(host="alpha", limit=1000)
    text, _ = store.instances_page_json(host="alpha", limit=1000)
    [view] = [view for view in views if view.id == "b-1"]
    [item] = [item for item in json.loads(text) if item["id"] == "b-1"]
    assert view.in_flight is not None and item["in_flight"] == view.in_flight.to_dict()


def test_text_that_looks_like_the_start_of_an_object_stays_inside_its_string(store: SqlStore) -> None:
    # Objects in a joined page are told apart by ',{"id":', which only a boundary holds unescaped.
    store.register_host("h", "fake", None)
    lookalike = ',{"id":"y","host":"h"},{"id":'
    for number, name in enumerate([lookalike, "plain", lookalike + "\\", '"' + lookalike]):
        reading = _reading(f"x-{number}", name, PowerState.PAUSED, T0, reason=lookalike)
        store.record_observation("h", reading, previous=None, cause=Cause.APPEARED)
    store.open_action("x-2", "unpause", {}, "ops")
    for limit in (1, 2, 3, 4, 1000):
        made, written = _views(store, limit)
        assert written == made
        assert [item["name"] for item in written][:2] == [lookalike, "plain"]
    [busy] = [item for item in written if item["id"] == "x-2"]
    assert busy["in_flight"]["operation"] == "unpause"


def test_a_page_looks_for_open_actions_through_their_partial_index(store: SqlStore) -> None:
    from powerdrivers.keeper._store_views import _json_statement

    statement = _json_statement(store._engine.dialect.name, (False, False, False, False))
    compiled = str(statement.compile(store._engine))
    # Word for word the index's own condition: with bound values neither database would use it.
    assert "actions.status IN ('pending', 'running')" in compiled
    if store._engine.dialect.name == "sqlite":
        with store._engine.connect() as connection:
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + compiled.replace("?", "NULL"), ()).all()
        assert any("ux_actions_one_open" in str(step) for step in plan), plan
