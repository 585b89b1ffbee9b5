"""A fleet of real ``powerdrivers serve`` processes on one PostgreSQL: take-over mid-action, streams, outages.

Each process is a subprocess started from its own config; the first to claim a host owns it, so
a process configured with hosts 1..n owns the one host the processes before it left free. The
fake hosts keep their simulated hypervisors in state files every process (and this test) opens,
so what the hypervisor did is read back from its own event log, whichever process asked; one
host of the last test is a real libvirtd (a private one, with QEMU), which every process reaches.
Under CI=true nothing skips.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from api_support import bearer, free_port, wait_for
from powerdrivers_fake import FakeDriver
from test_service_sse import Stream

from powerdrivers import InstanceSpec, PowerState, load_driver
from powerdrivers.keeper import HistoryRecord, SqlStore
from powerdrivers.service._config import ServiceConfig, load_config

if TYPE_CHECKING:
    from tests.postgres_cluster import PostgresCluster

# The libvirt plugin's test harness (a private libvirtd), importable as its own tests import it.
_LIBVIRT_TESTS = str(Path(__file__).resolve().parents[2] / "plugins" / "libvirt" / "tests")
if _LIBVIRT_TESTS not in sys.path:
    sys.path.append(_LIBVIRT_TESTS)
from libvirt_support.libvirtd import PrivateLibvirtd  # noqa: E402
from libvirt_support.nodes import require_real  # noqa: E402

_FAST = "takeover_interval = 0.2"
#: Seconds a process may take to start (imports, migrations, its first claim round and resync).
_START_S = 60.0
#: Seconds a cooperative fake guest takes to shut down in the mid-action test: the kill lands meanwhile.
_SLOW_GUEST_S = 4.0


class ServeProcess:
    """A ``powerdrivers serve`` subprocess; its output goes to files (a full pipe would stall it)."""

    def __init__(self, config: ServiceConfig, directory: Path) -> None:
        stem = config.path.stem
        self.stdout = directory / f"{stem}.stdout"
        self.stderr = directory / f"{stem}.stderr"
        with open(self.stdout, "w") as out, open(self.stderr, "w") as err:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "powerdrivers", "serve", "--config", str(config.path)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )
        self.pid = self.process.pid
        self.url = f"http://{config.listen_host}:{config.listen_port}"

    def wait_announced(self) -> None:
        """Wait until the process announces itself: listening, after its first claim round and resync."""
        wait_for(self._announced, f"{self.stdout.stem} to announce itself", _START_S)

    def _announced(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"serve exited with {self.process.returncode}: {self.log()}")
        return self.stdout.read_text().startswith("powerdrivers service on ")

    def log(self) -> str:
        """Return what the process logged so far."""
        return self.stderr.read_text()

    def kill(self) -> None:
        """SIGKILL the process and reap it (a zombie would still look alive to the fake's state file)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def close(self) -> None:
        """Stop the process if it runs: SIGTERM (a clean stop), SIGKILL if that takes too long."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


@pytest.fixture
def start_serve(tmp_path: Path) -> Iterator[Callable[[ServiceConfig], ServeProcess]]:
    """Return a function starting ``powerdrivers serve`` on a config; every process is stopped after."""
    with ExitStack() as started:

        def start(config: ServiceConfig) -> ServeProcess:
            process = ServeProcess(config, tmp_path)
            started.callback(process.close)
            process.wait_announced()
            return process

        yield start


@pytest.fixture
def store(postgres_url: str) -> Iterator[SqlStore]:
    """The fleet's store, opened by the test itself to read what the processes recorded."""
    opened = SqlStore(postgres_url)
    try:
        yield opened
    finally:
        opened.close()


def _served(
    factory: Callable[..., ServiceConfig],
    postgres_url: str,
    hosts: int,
    extra: str = _FAST,
    guest_delay: float = 0.05,
) -> ServiceConfig:
    """A config of fake hosts 1..``hosts`` on the PostgreSQL store, listening on a free port."""
    return factory(
        hosts=hosts,
        store=postgres_url,
        extra=extra,
        name=f"served-{hosts}.toml",
        listen=f"127.0.0.1:{free_port()}",
        guest_delay=guest_delay,
    )


def _owned_by(client: httpx.Client, host: str, process: ServeProcess) -> bool:
    answer = client.get("/v1/hosts")
    assert answer.status_code == 200, answer.text
    [owner] = [found["owner"] for found in answer.json()["items"] if found["name"] == host]
    return f"pid {process.pid} on" in (owner or "")


def _first(client: httpx.Client, **filters: str) -> dict[str, Any]:
    answer = client.get("/v1/instances", params=filters)
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    assert items, f"no instance matches {filters}"
    return items[0]


def _hypervisor(config: ServiceConfig, host: str) -> dict[str, Any]:
    """Return the fake host's state document (written by rename: never half a document)."""
    [uri] = [entry.uri for entry in config.hosts if entry.name == host]
    assert uri is not None
    document: dict[str, Any] = json.loads(Path(uri.removeprefix("fake://")).read_text())
    return document


def _events_of(config: ServiceConfig, host: str, instance_id: str, after_seq: int) -> list[dict[str, Any]]:
    """Return the events the fake host logged about the instance after ``after_seq``, oldest first."""
    events = _hypervisor(config, host)["events"]
    return [event for event in events if event["id"] == instance_id and event["seq"] > after_seq]


def _records(store: SqlStore) -> dict[int, HistoryRecord]:
    return {record.id: record for record in store.records_after(0, 1000)}


def test_an_owner_killed_mid_action_its_intent_is_closed_interrupted_and_not_done_twice(
    service_config_factory: Callable[..., ServiceConfig],
    postgres_url: str,
    store: SqlStore,
    service_tokens: dict[str, str],
    start_serve: Callable[[ServiceConfig], ServeProcess],
) -> None:
    first_config = _served(service_config_factory, postgres_url, 1, guest_delay=_SLOW_GUEST_S)
    second_config = _served(service_config_factory, postgres_url, 2, guest_delay=_SLOW_GUEST_S)
    first = start_serve(first_config)
    second = start_serve(second_config)
    with httpx.Client(base_url=second.url, headers=bearer(service_tokens["operator"]), timeout=10) as api:
        assert _owned_by(api, "host-1", first) and _owned_by(api, "host-2", second)
        target = _first(api, host="host-1", power_state="running")
        seq_before = _hypervisor(first_config, "host-1")["seq"]
        # Asked of the process that does not own the host: written, and carried out by the owner.
        asked = api.post(
            f"/v1/instances/{target['id']}/actions",
            json={"operation": "shutdown", "timeout": 30, "force": False},
        )
        assert asked.status_code == 202, asked.text
        action_id = asked.json()["id"]
        wait_for(lambda: api.get(f"/v1/actions/{action_id}").json()["status"] == "running", "the intent")
        # Mid-action: the owner has asked the guest, which takes its time; the owner waits for it.
        wait_for(
            lambda: any(
                e["id"] == target["id"] for e in _hypervisor(first_config, "host-1").get("operations", ())
            ),
            "the guest to be asked",
        )
        before_kill = _records(store)
        assert before_kill
        first.kill()
        killed_at = time.monotonic()
        wait_for(lambda: _owned_by(api, "host-1", second), "the take-over of host-1")
        assert time.monotonic() - killed_at < 5.0
        closed = wait_for(
            lambda: (
                (found := api.get(f"/v1/actions/{action_id}").json())["status"] == "interrupted" and found
            ),
            "the open intent to be closed",
        )
        # The re-read's finding is in the error: the guest was still shutting down, or had finished.
        assert closed["error"].startswith("the keeper stopped before the shutdown ended; found ")
        found = closed["error"].rsplit("; found ", 1)[1]
        assert found in ("running, shutting_down", "shutoff"), closed["error"]
        # The guest finishes the one shutdown it was asked; the new owner reads it.
        wait_for(
            lambda: api.get(f"/v1/instances/{target['id']}").json()["power_state"] == "shutoff", "shutoff"
        )
        since_asked = _events_of(first_config, "host-1", target["id"], seq_before)
        stops = [event for event in since_asked if event["state"] == "shutoff"]
        assert [(e["reason"], e["cause"]) for e in stops] == [("shutdown", "shutdown")]
        # Nothing done twice: no action but the interrupted one, none open, no later hypervisor call.
        history = api.get(f"/v1/instances/{target['id']}/history").json()["items"]
        actions = [record for record in history if record["kind"] == "action"]
        assert [(r["operation"], r["outcome"]) for r in actions] == [("shutdown", "interrupted")]
        assert store.open_actions() == []
        assert _events_of(first_config, "host-1", target["id"], stops[0]["seq"]) == []
        # Nothing lost: every record written before the kill is there as it was.
        after = _records(store)
        assert {key: after.get(key) for key in before_kill} == before_kill
        assert second.process.poll() is None


def _action_records_seen(stream: Stream, wanted: set[str], seen: set[str]) -> bool:
    """Take what ``stream`` received so far into ``seen`` (instances with an action record); all wanted?"""
    while not stream.events.empty():
        event = stream.events.get_nowait()
        assert event is not None, "the stream ended"
        if event.type == "record" and event.data["kind"] == "action":
            seen.add(event.data["instance_id"])
    return wanted <= seen


def test_every_process_streams_the_events_of_every_host_whoever_owns_it(
    service_config_factory: Callable[..., ServiceConfig],
    postgres_url: str,
    service_tokens: dict[str, str],
    start_serve: Callable[[ServiceConfig], ServeProcess],
) -> None:
    operator = bearer(service_tokens["operator"])
    processes = [start_serve(_served(service_config_factory, postgres_url, hosts)) for hosts in (1, 2, 3)]
    with httpx.Client(base_url=processes[0].url, headers=operator, timeout=10) as api:
        for number, process in enumerate(processes, start=1):
            assert _owned_by(api, f"host-{number}", process)
    streams = [Stream(f"{process.url}/v1/events", operator) for process in processes]
    assert all(stream.status == 200 for stream in streams)
    targets: set[str] = set()
    for number in (1, 2, 3):
        # Each host's action is asked of a process that does not own it.
        asked_of = processes[number % 3]
        with httpx.Client(base_url=asked_of.url, headers=operator, timeout=10) as api:
            target = _first(api, host=f"host-{number}", power_state="running")
            answer = api.post(f"/v1/instances/{target['id']}/actions", json={"operation": "power_off"})
            assert answer.status_code == 202, answer.text
            targets.add(target["id"])
    for process, stream in zip(processes, streams, strict=True):
        seen: set[str] = set()
        wait_for(
            partial(_action_records_seen, stream, targets, seen), f"every host's action on {process.url}"
        )


def test_postgresql_stopped_means_no_action_until_it_is_back_then_the_keeper_resumes(
    service_config_factory: Callable[..., ServiceConfig],
    postgres: PostgresCluster,
    postgres_url: str,
    store: SqlStore,
    service_tokens: dict[str, str],
    start_serve: Callable[[ServiceConfig], ServeProcess],
) -> None:
    config = _served(service_config_factory, postgres_url, 1, extra="takeover_interval = 3")
    served = start_serve(config)
    with httpx.Client(base_url=served.url, headers=bearer(service_tokens["operator"]), timeout=10) as api:
        target = _first(api, host="host-1", power_state="running")
        answer = api.put(f"/v1/instances/{target['id']}/policy", json={"policy": "always"})
        assert answer.status_code == 200, answer.text
        before_stop = _records(store)
        postgres.stop()
        try:
            [host] = config.hosts
            with load_driver(host.driver, host.uri) as hypervisor:
                assert isinstance(hypervisor, FakeDriver)
                hypervisor.crash(target["id"])
            wait_for(lambda: api.get("/healthz").status_code == 503, "the API to answer 503")
            crashed = _events_of(config, "host-1", target["id"], 0)[-1]
            assert crashed["state"] == "crashed"
            # The process notices it can no longer record anything, so it stops acting on its hosts.
            wait_for(lambda: "its claim was lost" in served.log(), "the process to let its host go", 30.0)
            assert api.get(f"/v1/instances/{target['id']}").status_code == 503
        finally:
            back_at = time.time()
            postgres.start()
        # Back: the same process claims its host again, resyncs it and corrects the crash.
        since_crash = partial(_events_of, config, "host-1", target["id"], crashed["seq"])
        wait_for(lambda: any(e["state"] == "running" for e in since_crash()), "the correction", 30.0)
        # No hypervisor action while the database was down: the first after the crash came once it was back.
        restarted = since_crash()[0]
        assert (restarted["state"], restarted["cause"]) == ("running", "start")
        assert restarted["time"] >= back_at
        view = f"/v1/instances/{target['id']}"
        wait_for(lambda: api.get(view).json()["power_state"] == "running", "the correction to be read")

        def actions() -> list[tuple[str, str]]:
            history = api.get(f"{view}/history").json()["items"]
            return [(r["operation"], r["outcome"]) for r in history if r["kind"] == "action"]

        # The action's record is written once the driver has returned, after the state is seen.
        wait_for(actions, "the correction's action record")
        assert actions() == [("start", "done")]
        after = _records(store)
        assert {key: after.get(key) for key in before_stop} == before_stop
        assert served.process.poll() is None


@pytest.fixture(scope="module")
def fleet_libvirtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateLibvirtd]:
    """A libvirtd (with QEMU) of this module's own: no other client shares it, and it is stopped after."""
    present = shutil.which("libvirtd") is not None and shutil.which("qemu-system-x86_64") is not None
    require_real("libvirtd + QEMU", present, "install the Debian packages (make test does, as root)")
    require_real("a private libvirtd", os.geteuid() == 0, "starting one needs root")
    with PrivateLibvirtd(log_dir=tmp_path_factory.mktemp("fleet-libvirtd")) as harness:
        yield harness


def _with_libvirt_host(config: ServiceConfig, uri: str) -> ServiceConfig:
    """Return ``config`` with one more host, ``libvirt-1``, on the libvirtd at ``uri``."""
    host = f'[[hosts]]\nname = "libvirt-1"\ndriver = "libvirt"\nuri = "{uri}"\n'
    config.path.write_text(config.path.read_text() + host)
    return load_config(config.path)


def test_a_real_libvirtd_host_changes_owner_mid_shutdown_and_nothing_is_done_twice(
    service_config_factory: Callable[..., ServiceConfig],
    postgres_url: str,
    store: SqlStore,
    service_tokens: dict[str, str],
    start_serve: Callable[[ServiceConfig], ServeProcess],
    fleet_libvirtd: PrivateLibvirtd,
) -> None:
    with load_driver("libvirt", fleet_libvirtd.uri, domain_type="qemu") as libvirt:
        # No disk, no OS: the firmware never answers ACPI, so a graceful shutdown waits its whole timeout.
        domain = libvirt.spawn(InstanceSpec(f"pdtest-{uuid.uuid4().hex[:8]}", memory_mib=64))
        try:
            first = start_serve(
                _with_libvirt_host(_served(service_config_factory, postgres_url, 1), fleet_libvirtd.uri)
            )
            second = start_serve(
                _with_libvirt_host(_served(service_config_factory, postgres_url, 2), fleet_libvirtd.uri)
            )
            headers = bearer(service_tokens["operator"])
            with httpx.Client(base_url=second.url, headers=headers, timeout=10) as api:
                assert _owned_by(api, "libvirt-1", first) and _owned_by(api, "host-2", second)
                view = f"/v1/instances/{domain.id}"
                assert api.get(view).json()["power_state"] == "running"
                asked = api.post(
                    f"{view}/actions", json={"operation": "shutdown", "timeout": 60, "force": False}
                )
                assert asked.status_code == 202, asked.text
                action = f"/v1/actions/{asked.json()['id']}"
                wait_for(lambda: api.get(action).json()["status"] == "running", "the owner to start it")
                before_kill = _records(store)
                first.kill()
                killed_at = time.monotonic()
                wait_for(lambda: _owned_by(api, "libvirt-1", second), "the take-over of the libvirt host")
                assert time.monotonic() - killed_at < 5.0
                closed = wait_for(
                    lambda: (found := api.get(action).json())["status"] == "interrupted" and found,
                    "the open intent to be closed",
                )
                assert closed["error"] == "the keeper stopped before the shutdown ended; found running"
                # Not issued again: the domain runs, and its only action is the interrupted one.
                assert libvirt.get_instance(domain.id).power_state is PowerState.RUNNING
                history = api.get(f"{view}/history").json()["items"]
                actions = [(r["operation"], r["outcome"]) for r in history if r["kind"] == "action"]
                assert actions == [("shutdown", "interrupted")]
                after = _records(store)
                assert {key: after.get(key) for key in before_kill} == before_kill
                # The new owner acts on the real host when asked.
                asked = api.post(f"{view}/actions", json={"operation": "power_off"})
                assert asked.status_code == 202, asked.text
                done = f"/v1/actions/{asked.json()['id']}"
                wait_for(lambda: api.get(done).json()["status"] == "done", "the new owner's power_off", 30.0)
                assert libvirt.get_instance(domain.id).power_state is PowerState.SHUTOFF
        finally:
            libvirt.delete(domain.id)
