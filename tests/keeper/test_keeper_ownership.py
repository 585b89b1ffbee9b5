"""One keeper per host per store: real ``keep`` processes (on SQLite and PostgreSQL), and in one process."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from engine_support import fake_host, running_keeper, wait_until
from powerdrivers_fake import instance_id
from store_support import both_databases

from powerdrivers.keeper import ActionStatus, HostAlreadyKept, Keeper, KeeperError, SqlStore

WEB1 = instance_id("web-1")

pytestmark = both_databases


def environment(tmp_path: Path, store_url: str, state: str = "state.json") -> dict[str, str]:
    """The environment of a CLI keeper on a fake hypervisor in ``state`` and the store at ``store_url``."""
    environ = dict(os.environ)
    environ.update(
        POWERDRIVERS_DRIVER="fake",
        POWERDRIVERS_URI=f"fake://{tmp_path / state}",
        POWERDRIVERS_STORE=store_url,
    )
    environ.pop("POWERDRIVERS_PASSWORD", None)
    return environ


def start_keep(env: dict[str, str], host: str, *options: str) -> subprocess.Popen[str]:
    """Start ``powerdrivers keep --host HOST``; return once it announced itself (its first resync ended)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", *options, "keep", "--host", host],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    store, announced = process.stdout.readline(), process.stdout.readline()
    assert announced == f"host: {host} (driver fake)\n", store + announced + process.stderr.read()
    return process


@contextmanager
def keeping(env: dict[str, str], host: str, *options: str) -> Iterator[subprocess.Popen[str]]:
    """A ``keep`` process for the block; stopped (if still running) after it."""
    process = start_keep(env, host, *options)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)


def owner_of(store: SqlStore, host: str) -> str | None:
    """The owner the store records for ``host``."""
    return next(view.owner for view in store.hosts() if view.name == host)


def running_request(store: SqlStore) -> int:
    """Ask the keeper of h1 to reboot web-1 and return the action once the keeper runs it."""
    action = store.open_action(WEB1, "reboot", {}, "alice")
    wait_until(lambda: store.action(action.id).status is ActionStatus.RUNNING, what="the reboot to run")
    return action.id


def test_a_second_keep_on_a_kept_host_refuses_and_the_first_keeps_its_intents(
    tmp_path: Path, store_url: str, store: SqlStore
) -> None:
    env = environment(tmp_path, store_url)
    with keeping(env, "h1", "-o", "latency=2") as first:
        action_id = running_request(store)
        second = subprocess.run(
            [sys.executable, "-m", "powerdrivers", "keep", "--host", "h1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1, second.stderr
        assert second.stdout == "" and "Traceback" not in second.stderr
        [line] = second.stderr.splitlines()
        assert "'h1'" in line and f"pid {first.pid} on " in line
        # The first keeper's intent is its own to close: done, not "interrupted" by the second.
        assert store.action(action_id).status is ActionStatus.RUNNING
        wait_until(
            lambda: store.action(action_id).status is not ActionStatus.RUNNING,
            timeout=30,
            what="the reboot to end",
        )
        ended = store.action(action_id)
        assert ended.status is ActionStatus.DONE, ended
        assert (owner_of(store, "h1") or "").startswith(f"pid {first.pid} on ")
    assert first.returncode == 0
    assert owner_of(store, "h1") is None


def test_a_killed_keeper_s_host_is_taken_at_once_and_its_intents_closed_interrupted(
    tmp_path: Path, store_url: str, store: SqlStore
) -> None:
    env = environment(tmp_path, store_url)
    first = start_keep(env, "h1", "-o", "latency=5")
    try:
        action_id = running_request(store)
    finally:
        first.kill()
        first.communicate(timeout=30)
    with keeping(env, "h1") as second:
        closed = store.action(action_id)
        assert closed.status is ActionStatus.INTERRUPTED, closed
        assert (owner_of(store, "h1") or "").startswith(f"pid {second.pid} on ")


def test_keepers_of_different_hosts_of_one_store_both_run(
    tmp_path: Path, store_url: str, store: SqlStore
) -> None:
    with keeping(environment(tmp_path, store_url, "one.json"), "h1") as one, keeping(
        environment(tmp_path, store_url, "two.json", ), "h2"
    ) as two:  # fmt: skip
        assert one.poll() is None and two.poll() is None
        owners = {view.name: view.owner or "" for view in store.hosts()}
        assert owners["h1"].startswith(f"pid {one.pid} on ")
        assert owners["h2"].startswith(f"pid {two.pid} on ")


def test_a_second_keeper_in_one_process_is_refused_and_the_host_is_free_once_the_first_stops(
    store: SqlStore,
) -> None:
    with fake_host() as driver, fake_host() as other:
        refused_keeper = Keeper(store, {"h2": other, "h1": driver})
        with running_keeper(store, {"h1": driver}), pytest.raises(HostAlreadyKept) as refused:
            refused_keeper.start()
        assert isinstance(refused.value, KeeperError)
        assert refused.value.host == "h1"
        assert refused.value.owner == f"pid {os.getpid()} on {socket.gethostname()}"
        # The refused keeper wrote nothing and let go of h2, which it had claimed before h1.
        assert [view.name for view in store.hosts()] == ["h1"]
        with running_keeper(store, {"h2": other}):
            assert owner_of(store, "h2") == refused.value.owner
        with running_keeper(store, {"h1": driver}):
            assert owner_of(store, "h1") == refused.value.owner
        assert owner_of(store, "h1") is None
