"""The keeper's CLI verbs, run as a user runs them: keep in one process, the others beside it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from engine_support import fake_host, records, running_keeper, wait_until
from powerdrivers_fake import instance_id

from powerdrivers import HypervisorError, InstanceReading, Operation, PowerState
from powerdrivers.keeper import ActionStatus, Cause, Policy, RecordKind, SqlStore

WEB1 = instance_id("web-1")
HISTORY_FIELDS = {
    "time", "kind", "from_state", "to_state", "native_state", "native_reason",
    "cause", "operation", "outcome", "requested_by",
}  # fmt: skip


@pytest.fixture
def env(tmp_path: Path, store_url: str) -> dict[str, str]:
    """A fake hypervisor in a state file and a keeper store, both through the environment."""
    environ = dict(os.environ)
    environ.update(
        POWERDRIVERS_DRIVER="fake",
        POWERDRIVERS_URI=f"fake://{tmp_path / 'state.json'}",
        POWERDRIVERS_STORE=store_url,
    )
    environ.pop("POWERDRIVERS_PASSWORD", None)
    return environ


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``powerdrivers ARGS`` to its end."""
    return subprocess.run(
        [sys.executable, "-m", "powerdrivers", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def keeping(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``powerdrivers keep`` running in the background until the test ends."""
    with _keep(env) as process:
        yield process


class _keep:
    def __init__(self, env: dict[str, str], *options: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "powerdrivers", *options, "keep", "--host", "h1", "--resync", "30"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def __enter__(self) -> subprocess.Popen[str]:
        assert self.process.stdout is not None and self.process.stderr is not None
        store, host = self.process.stdout.readline(), self.process.stdout.readline()
        assert store.startswith("store: sqlite:///"), store + self.process.stderr.read()
        assert host == "host: h1 (driver fake)\n", host
        return self.process

    def __exit__(self, *_: object) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


@pytest.mark.parametrize("stop_with", [signal.SIGINT, signal.SIGTERM])
def test_keep_prints_the_store_runs_until_signalled_and_exits_0(env: dict[str, str], stop_with: int) -> None:
    with _keep(env) as process:
        time.sleep(0.5)
        process.send_signal(stop_with)
        out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert "Traceback" not in err and out == ""


def test_policy_and_history_work_while_a_keeper_runs_in_another_process(
    env: dict[str, str], keeping: subprocess.Popen[str], store_url: str
) -> None:
    wait_until(lambda: cli(env, "history", "web-1").returncode == 0, what="the keeper's first resync")
    done = cli(env, "-f", "json", "policy", "web-1", "always")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["policy"] == "always"
    with fake_host(env["POWERDRIVERS_URI"]) as driver:
        driver.crash("web-1")
        wait_until(lambda: driver.get_instance(WEB1).power_state is PowerState.RUNNING, what="the restart")
    shown = wait_until(
        lambda: [
            r for r in json.loads(cli(env, "-f", "json", "history", "web-1").stdout) if r["kind"] == "action"
        ],
        what="the restart's record",
    )
    assert shown[0]["operation"] == "start" and shown[0]["outcome"] == "done"
    history = json.loads(cli(env, "-f", "json", "history", WEB1, "--limit", "100").stdout)
    assert all(set(record) >= HISTORY_FIELDS for record in history)
    assert [r["cause"] for r in history if r["to_state"] == "crashed"] == ["crash"]
    assert history == sorted(history, key=lambda r: r["id"])  # oldest first
    table = cli(env, "history", "web-1")
    assert "crash" in table.stdout and "policy" in table.stdout


def test_quarantine_clear_from_the_cli_releases_a_running_keepers_instance(
    env: dict[str, str], store: SqlStore
) -> None:
    with fake_host(env["POWERDRIVERS_URI"]) as driver, running_keeper(
        store, {"h1": driver}, backoff_base=0.05, quarantine_after=2
    ) as keeper:  # fmt: skip
        keeper.set_policy(WEB1, Policy.ALWAYS, "alice")
        driver.inject_failure(HypervisorError("no disk"), Operation.START, once=False)
        driver.crash("web-1")
        wait_until(lambda: keeper.view(WEB1).quarantined, what="the quarantine")
        assert keeper.view(WEB1).to_dict()["action_failures"] == 2
        driver.clear_failures()
        released = cli(env, "-f", "json", "quarantine", "clear", "web-1")
        assert released.returncode == 0, released.stderr
        view = json.loads(released.stdout)
        assert view["quarantined"] is False and view["action_failures"] == 0
        wait_until(lambda: driver.get_instance(WEB1).power_state is PowerState.RUNNING, what="the start")
        [record] = [r for r in keeper.history(WEB1) if r.kind is RecordKind.QUARANTINE and r.requested_by]
        assert (record.requested_by or "").endswith("(cli)")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("history", "no-such-vm"), 3, "the keeper's store has no instance 'no-such-vm' (no keeper"),
        (("history", "web-1", "--store", "nosuchdb://keeper"), 2, "not a database this store knows"),
        (("policy", "web-1", "always", "--store", "sqlite://"), 2, "in-memory"),
        (("policy", "web-1", "sometimes"), 2, "invalid choice"),
        (("history", "web-1", "--limit", "0"), 2, "--limit"),
        (("keep", "--resync", "nan"), 2, "--resync"),
        (("keep", "--vcpu-sample-interval", "-1"), 2, "--vcpu-sample-interval"),
        (("keep", "--vcpu-sample-interval", "0.001"), 2, "vcpu_sample_interval must be 0 (off) or at least"),
        (("keep", "--vcpu-sample-interval", "0.1"), 2, "samples per VCPU"),
        (("keep", "--vcpu-retention", "0"), 2, "--vcpu-retention"),
        (("quarantine", "forget", "web-1"), 2, "invalid choice"),
        (("-o", "fail_connect=connection", "keep"), 5, "injected connection failure"),
        (("-o", "no_such_option=1", "keep"), 2, "no_such_option"),
    ],
)
def test_bad_keeper_commands_exit_with_the_documented_code_and_one_line(
    env: dict[str, str], args: tuple[str, ...], code: int, message: str
) -> None:
    result = cli(env, *args)
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr


def test_a_keeper_killed_between_intent_and_completion_leaves_an_intent_closed_interrupted_on_restart(
    env: dict[str, str], store_url: str
) -> None:
    with _keep(env, "-o", "latency=1.5") as process:
        assert cli(env, "policy", "web-1", "always").returncode == 0
        with fake_host(env["POWERDRIVERS_URI"]) as driver:
            driver.crash("web-1")
        store = SqlStore(store_url)
        try:
            [intent] = wait_until(store.open_actions, timeout=20, what="the restart's intent")
            assert intent.status is ActionStatus.RUNNING
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=10)
        finally:
            store.close()
    with _keep(env):
        store = SqlStore(store_url)
        try:
            closed = store.action(intent.id)  # closed before `keep` says it runs
            assert closed.status is ActionStatus.INTERRUPTED
            assert "the keeper stopped before the start ended; found crashed" in (closed.error or "")
            time.sleep(1.0)
            actions = [r for r in store.history(WEB1, 100) if r.kind is RecordKind.ACTION]
            assert [r.operation for r in actions] == ["start"]  # the interrupted one, never reissued
            assert store.open_actions() == []
            with fake_host(env["POWERDRIVERS_URI"]) as driver:
                assert driver.get_instance(WEB1).power_state is PowerState.CRASHED
        finally:
            store.close()


def test_the_cli_and_its_help_never_import_the_database_libraries() -> None:
    probe = (
        "import sys, contextlib, io\n"
        "import powerdrivers\n"
        "assert 'powerdrivers.keeper' not in sys.modules\n"
        "from powerdrivers._cli import main\n"
        "for argv in (['--help'], ['keep', '--help'], ['history', '--help']):\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(sorted(m for m in ('sqlalchemy', 'alembic') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True)
    assert result.stdout.strip() == "[]"


def test_keep_in_json_announces_itself_as_one_json_line(env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "powerdrivers", "-f", "json", "keep", "--host", "h1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        announced = json.loads(process.stdout.readline())
    finally:
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=30)
    assert announced["host"] == "h1" and announced["driver"] == "fake"
    assert announced["store"] == env["POWERDRIVERS_STORE"]
    assert process.returncode == 0


def test_history_of_an_instance_that_vanished_stays_readable_by_its_id(
    env: dict[str, str], store: SqlStore
) -> None:
    now = datetime.now(UTC)
    store.register_host("h1", "fake", None)
    reading = InstanceReading("gone-1", "gone", PowerState.RUNNING, None, "running", "booted", now)
    store.record_observation("h1", reading, previous=None, cause=Cause.APPEARED)
    store.record_vanished("h1", "gone-1", now)
    shown = cli(env, "-f", "json", "history", "gone-1")
    assert shown.returncode == 0, shown.stderr
    assert [r["cause"] for r in json.loads(shown.stdout)] == ["appeared", "vanished"]


def test_the_history_table_shows_the_transition_a_reading_began(env: dict[str, str], store: SqlStore) -> None:
    with fake_host(env["POWERDRIVERS_URI"], guest_delay=1.0) as driver, running_keeper(
        store, {"h1": driver}
    ) as keeper:  # fmt: skip
        action = keeper.request(WEB1, "shutdown", requested_by="ops", timeout=5)
        assert keeper.wait(action.id).status is ActionStatus.DONE
        wait_until(
            lambda: records(keeper, WEB1, RecordKind.OBSERVED)[-1].to_state is PowerState.SHUTOFF,
            what="the shut-off reading's record",
        )
    table = cli(env, "history", "web-1")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split()[:6] == ["TIME", "KIND", "FROM", "TO", "TRANSITION", "NATIVE"]
    began = [row.split() for row in rows if "shutting_down" in row]
    assert [row[1:5] for row in began] == [["observed", "running", "running", "shutting_down"]]
    assert any(row.split()[1:5] == ["observed", "running", "shutoff", "-"] for row in rows)
