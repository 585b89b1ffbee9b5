"""The store as the meeting point of processes: real processes on one SQLite file or PostgreSQL database."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, inspect, text
from store_support import both_databases, is_postgresql

from powerdrivers import InstanceReading, PowerState
from powerdrivers.keeper import Cause, Policy, SqlStore
from powerdrivers.keeper._schema import SCHEMA_REVISION

PROCESSES = 6

pytestmark = both_databases

#: Each child imports everything first (Alembic too, which the store imports only to migrate),
#: then waits for the go file, so that all run their part at once, and prints what happened. The
#: store's URL comes in the environment: a password never goes in a process's arguments.
CHILD = """
import os, sys, time
from pathlib import Path
import alembic.command, alembic.config
from powerdrivers.keeper import ActionInFlight, SqlStore, Policy
url, go = os.environ["STORE_URL"], Path(sys.argv[1])
while not go.exists():
    time.sleep(0.001)
{body}
"""


def race(tmp_path: Path, body: str, url: str, processes: int = PROCESSES) -> list[str]:
    """Run ``processes`` children of ``body`` released at once; return what each printed."""
    go = tmp_path / "go"
    script = CHILD.format(body=textwrap.dedent(body))
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(go)],
            env={**os.environ, "STORE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(processes)
    ]
    time.sleep(0.5)  # let them all start and wait on the go file
    go.touch()
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
        outputs.append(out.strip())
    return outputs


def known_instance(store: SqlStore, instance_id: str = "i-1") -> None:
    store.register_host("h1", "fake", None)
    now = datetime.now(UTC)
    store.record_observation(
        "h1",
        InstanceReading(instance_id, instance_id, PowerState.RUNNING, None, "running", None, now),
        previous=None,
        cause=Cause.APPEARED,
    )


def test_only_one_process_can_open_an_action_on_an_instance(tmp_path: Path, store_url: str) -> None:
    store = SqlStore(store_url)
    known_instance(store)
    outputs = race(
        tmp_path,
        """
        store = SqlStore(url)
        try:
            action = store.open_action("i-1", "start", {}, "worker")
            print("opened", action.id)
        except ActionInFlight:
            print("in flight")
        """,
        store_url,
    )
    assert sorted(o.split()[0] for o in outputs) == ["in"] * (PROCESSES - 1) + ["opened"]
    assert len(store.open_actions()) == 1
    store.close()


def test_processes_opening_one_new_database_at_once_migrate_it_once(tmp_path: Path, store_url: str) -> None:
    outputs = race(
        tmp_path,
        """
        store = SqlStore(url)
        print(len(store.hosts()))
        """,
        store_url,
    )
    assert outputs == ["0"] * PROCESSES
    engine = create_engine(store_url)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [
            SCHEMA_REVISION
        ]
        assert connection.execute(text("SELECT change_seq FROM keeper_state")).scalars().all() == [0]
        assert {"hosts", "instances", "actions", "history"} <= set(inspect(connection).get_table_names())
        if not is_postgresql(store_url):
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    engine.dispose()


def test_another_process_s_writes_are_seen_through_changes_since(tmp_path: Path, store_url: str) -> None:
    store = SqlStore(store_url)
    known_instance(store)
    cursor, _ = store.changes_since(0)
    race(
        tmp_path,
        """
        store = SqlStore(url)
        store.set_policy("i-1", Policy.ALWAYS, "operator")
        store.open_action("i-1", "start", {}, "operator")
        """,
        store_url,
        processes=1,
    )
    later, changed = store.changes_since(cursor)
    assert later > cursor and changed == ["i-1"]
    view = store.instance("i-1")
    assert view.policy is Policy.ALWAYS
    assert view.in_flight is not None and view.in_flight.requested_by == "operator"
    store.close()


def test_an_intent_survives_its_process_being_killed_right_after_it_was_recorded(
    tmp_path: Path, store_url: str
) -> None:
    store = SqlStore(store_url)
    known_instance(store)
    go = tmp_path / "go"
    go.touch()
    script = CHILD.format(
        body="""
import os, signal
action = SqlStore(url).open_action("i-1", "stop", {"force": True}, "worker", status="running")
print(action.id, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""
    )
    child = subprocess.run(
        [sys.executable, "-c", script, str(go)],
        env={**os.environ, "STORE_URL": store_url},
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert child.returncode == -9
    [opened] = store.open_actions()
    assert (opened.id, opened.operation, opened.options, opened.status.value) == (
        int(child.stdout),
        "stop",
        {"force": True},
        "running",
    )
    store.close()
