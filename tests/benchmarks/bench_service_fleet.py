"""The reference service's fleet on PostgreSQL (issue 13): 2. events to every stream, 3. failover, 5. history.

All on the PostgreSQL cluster of the tests' harness (a database of its own per benchmark).

S2: two ``powerdrivers serve`` processes, each owning one fake host; an SSE client on each
process's ``GET /v1/events``. 200 actions (pause and unpause in turn, asked of either process
for instances of both hosts): per action and per stream, from the event (the hypervisor's
time of the transition, which the record carries) to the stream's delivery of its record.

S3: a ``powerdrivers serve`` process owns 4 fake hosts of 100 instances; a Fleet in this
process (the default ``takeover_interval``) owns none. The server is SIGKILLed: the time from
the signal until this process owns every host and has finished each one's first resync (its
sync listener says when). Several runs, a fresh server each.

S5: a Fleet in this process keeps one fake host; the benchmark crashes and starts one of its
instances in turn, through the driver the fleet holds (a change the hypervisor reports by an
event), and times, from the call, until the ``observed`` record is committed: seen by another
connection, woken by the store's ``NOTIFY`` and checking with a query.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from bench_service_parts import WAIT_S, ServeProcess, fake_host, free_port, new_token, write_config
from benchkit import median, ms, percentile, record
from sqlalchemy.engine import make_url

from powerdrivers import PowerState
from powerdrivers.service._fleet import Fleet

SSE_EVENTS = 200
TARGET_SSE_P99_MS = 100.0
FAILOVER_RUNS = 7
FAILOVER_HOSTS = 4
FAILOVER_INSTANCES = 100
TARGET_FAILOVER_S = 5.0
COMMIT_EVENTS = 300
TIMES = "\N{MULTIPLICATION SIGN}"
TARGET_COMMIT_P99_MS = 100.0


class _Stream:
    """One process's event stream, read on a thread: each ``observed`` record and when it arrived."""

    def __init__(self, url: str, token: str) -> None:
        self.arrivals: list[tuple[dict[str, Any], float]] = []
        self._changed = threading.Condition()
        self._client = httpx.Client(base_url=url, timeout=httpx.Timeout(10, read=None))
        self._response = self._client.send(
            self._client.build_request("GET", "/v1/events", headers={"Authorization": f"Bearer {token}"}),
            stream=True,
        )
        assert self._response.status_code == 200
        self._thread = threading.Thread(target=self._read, name="bench-sse", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        kind = ""
        try:
            for line in self._response.iter_lines():
                if line.startswith("event: "):
                    kind = line[7:]
                elif line.startswith("data: ") and kind == "record":
                    arrived = time.time()
                    data = json.loads(line[6:])
                    if data["kind"] == "observed":
                        with self._changed:
                            self.arrivals.append((data, arrived))
                            self._changed.notify_all()
        except httpx.HTTPError:
            pass  # the server went away: the benchmark is over

    def wait_for(self, instance_id: str, to_state: str, start: int) -> tuple[dict[str, Any], float]:
        """Return the first arrival from index ``start`` on of ``instance_id`` reaching ``to_state``."""
        deadline = time.monotonic() + WAIT_S
        with self._changed:
            while True:
                for data, arrived in self.arrivals[start:]:
                    if data["instance_id"] == instance_id and data["to_state"] == to_state:
                        return data, arrived
                left = deadline - time.monotonic()
                assert left > 0, f"no {to_state} record of {instance_id} on the stream within {WAIT_S} s"
                self._changed.wait(left)

    def close(self) -> None:
        """Stop reading (the server is already gone or going)."""
        self._response.close()
        self._client.close()
        self._thread.join(WAIT_S)


def _register(benchmark: Any) -> None:
    """Give pytest-benchmark one empty round, so the benchmark and its rows reach the results.

    These figures are timed by the benchmark itself, across processes and threads (a call and
    what another process or connection then sees); pytest-benchmark's own columns for them are
    of no meaning.
    """
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)


def _time_of(data: dict[str, Any]) -> float:
    return datetime.fromisoformat(data["time"]).timestamp()


@pytest.mark.benchmark(group="S2 service events to every stream")
def bench_service_events_to_every_stream(benchmark: Any, postgres_url: str, tmp_path: Path) -> None:
    """200 events, each timed from the hypervisor's transition to its record on each process's stream."""
    token = new_token()
    for host in ("host-1", "host-2"):
        fake_host(tmp_path / f"{host}.json", host, 8)
    # The first process is given host-1 only; the second, started once the first owns it, gets host-2.
    configs = [
        write_config(
            tmp_path,
            name,
            postgres_url,
            hosts,
            token=token,
            role="operator",
            listen=f"127.0.0.1:{free_port()}",
        )
        for name, hosts in (("first.toml", ["host-1"]), ("second.toml", ["host-1", "host-2"]))
    ]
    processes: list[ServeProcess] = []
    streams: list[_Stream] = []
    latencies: list[list[float]] = [[], []]
    try:
        for config in configs:
            processes.append(ServeProcess(config))
        headers = {"Authorization": f"Bearer {token}"}
        clients = [httpx.Client(base_url=process.url, headers=headers) for process in processes]
        owners = {host["name"]: host["owner"] for host in clients[0].get("/v1/hosts").json()["items"]}
        assert owners["host-1"] != owners["host-2"], f"one process owns both hosts: {owners}"
        targets = [
            item["id"]
            for item in clients[0].get("/v1/instances", params={"power_state": "running"}).json()["items"]
        ]
        assert len(targets) == 8, targets
        streams = [_Stream(p.url, token) for p in processes]
        last_action: dict[str, int] = {}
        for n in range(SSE_EVENTS):
            target = targets[n % len(targets)]
            pausing = n // len(targets) % 2 == 0
            client = clients[n % 2]
            if target in last_action:
                _wait_done(client, last_action[target])
            starts = [len(stream.arrivals) for stream in streams]
            answer = client.post(
                f"/v1/instances/{target}/actions", json={"operation": "pause" if pausing else "unpause"}
            )
            assert answer.status_code == 202, answer.text
            last_action[target] = answer.json()["id"]
            state = PowerState.PAUSED.value if pausing else PowerState.RUNNING.value
            for stream, start, found in zip(streams, starts, latencies, strict=True):
                data, arrived = stream.wait_for(target, state, start)
                found.append(arrived - _time_of(data))
        for client in clients:
            client.close()
    finally:
        for process in processes:
            process.stop()
        for stream in streams:
            stream.close()
    every = latencies[0] + latencies[1]
    p99 = percentile(every, 99)
    _register(benchmark)
    record(
        benchmark,
        "S2/postgresql",
        "service: event → its record on every process's SSE stream (2 powerdrivers serve processes, "
        "PostgreSQL), p99",
        p99 * 1000,
        "ms",
        target=("<=", TARGET_SSE_P99_MS),
        detail=(
            f"p50 {ms(median(every))}, max {ms(max(every))}; {SSE_EVENTS} events {TIMES} 2 streams; p99 on "
            f"process 1's stream {ms(percentile(latencies[0], 99))}, on process 2's "
            f"{ms(percentile(latencies[1], 99))} (each owns one of the 2 hosts; the actions asked of either "
            "in turn)"
        ),
        raw={"p50_s": median(every), "p99_s": p99, "samples": len(every)},
    )
    assert p99 * 1000 <= TARGET_SSE_P99_MS, f"p99 {ms(p99)} (target ≤ {TARGET_SSE_P99_MS:g} ms)"


def _wait_done(client: httpx.Client, action_id: int) -> None:
    deadline = time.monotonic() + WAIT_S
    while client.get(f"/v1/actions/{action_id}").json()["status"] in ("pending", "running"):
        assert time.monotonic() < deadline, f"action {action_id} did not end within {WAIT_S} s"
        time.sleep(0.005)


@pytest.mark.benchmark(group="S3 service failover")
def bench_service_failover(benchmark: Any, postgres_url: str, tmp_path: Path) -> None:
    """From SIGKILL of the owning serve process to every host owned and resynced by another process."""
    hosts = [f"host-{n}" for n in range(1, FAILOVER_HOSTS + 1)]
    for host in hosts:
        fake_host(tmp_path / f"{host}.json", host, FAILOVER_INSTANCES)
    token = new_token()
    served = write_config(
        tmp_path, "served.toml", postgres_url, hosts, token=token, listen=f"127.0.0.1:{free_port()}"
    )
    local = write_config(tmp_path, "local.toml", postgres_url, hosts, token=token)
    takeovers: list[float] = []
    for _ in range(FAILOVER_RUNS):
        takeovers.append(_one_failover(served, local, hosts))
    _register(benchmark)
    middle = median(takeovers)
    record(
        benchmark,
        "S3/postgresql",
        f"service: failover, the owning powerdrivers serve process SIGKILLed → its {FAILOVER_HOSTS} hosts "
        f"({FAILOVER_INSTANCES} instances each) owned and resynced by another process, median",
        middle * 1000,
        "ms",
        target=("<=", TARGET_FAILOVER_S * 1000),
        detail=(
            f"min {ms(min(takeovers))}, max {ms(max(takeovers))}; {len(takeovers)} runs, the default "
            f"takeover_interval ({local.takeover_interval:g} s)"
        ),
        raw={"median_s": middle, "runs": takeovers},
    )
    assert middle <= TARGET_FAILOVER_S, f"median {middle:.2f} s (target ≤ {TARGET_FAILOVER_S:g} s)"


def _one_failover(served: Any, local: Any, hosts: list[str]) -> float:
    process = ServeProcess(served)
    try:
        synced: dict[str, float] = {}
        killed = {"at": float("inf")}
        lock = threading.Lock()

        def listener(host: str, _seconds: float) -> None:
            now = time.monotonic()
            with lock:
                if now > killed["at"]:
                    synced.setdefault(host, now)

        with Fleet(local) as fleet:
            fleet.add_sync_listener(listener)
            assert fleet.owned_hosts() == [], "the serve process did not own every host"
            killed["at"] = time.monotonic()
            process.kill()
            deadline = killed["at"] + 60
            while True:
                with lock:
                    done = len(synced) == len(hosts)
                if done and fleet.owned_hosts() == hosts:
                    break
                assert time.monotonic() < deadline, f"no take-over within 60 s (resynced: {sorted(synced)})"
                time.sleep(0.01)
        return max(synced.values()) - killed["at"]
    finally:
        process.kill()


@pytest.fixture
def kept(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Fleet, str]]:
    """A started Fleet on PostgreSQL keeping one fake host of 20 instances; and the store's URL."""
    fake_host(tmp_path / "host-1.json", "host-1", 20)
    config = write_config(tmp_path, "service.toml", postgres_url, ["host-1"], token=new_token())
    with Fleet(config) as fleet:
        yield fleet, postgres_url


@pytest.mark.benchmark(group="S5 service history committed")
def bench_service_event_to_history_commit(benchmark: Any, kept: tuple[Fleet, str]) -> None:
    """A crash or a start reported by the hypervisor's event, to its observed record committed."""
    import psycopg

    fleet, url = kept
    driver: Any = fleet._owned["host-1"].driver
    (target, *_), _ = fleet.instances(power_state="running")
    parsed = make_url(url)
    latencies: list[float] = []
    calls: list[float] = []
    with psycopg.connect(
        host=parsed.host, port=parsed.port, user=parsed.username, password=parsed.password,
        dbname=parsed.database, autocommit=True,
    ) as watcher:  # fmt: skip
        watcher.execute("LISTEN powerdrivers_changes")
        last = watcher.execute("SELECT coalesce(max(id), 0) FROM history").fetchone()
        assert last is not None
        after = int(last[0])
        query = (
            "SELECT id FROM history WHERE id > %s AND instance_id = %s AND kind = 'observed' "
            "AND to_state = %s"
        )
        for n in range(COMMIT_EVENTS):
            began = time.perf_counter()
            reading = driver.crash(target.id) if n % 2 == 0 else driver.start(target.id)
            calls.append(time.perf_counter() - began)
            state = reading.power_state.value
            while True:
                found = watcher.execute(query, (after, target.id, state)).fetchone()
                if found is not None:
                    latencies.append(time.perf_counter() - began)
                    after = int(found[0])
                    break
                assert time.perf_counter() - began < WAIT_S, f"no record of {target.id} within {WAIT_S} s"
                for _ in watcher.notifies(timeout=0.05, stop_after=1):
                    pass
            _settle(fleet, target.id)
    _register(benchmark)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    record(
        benchmark,
        "S5/postgresql",
        "service: event (fake crash or start) → its history record committed on PostgreSQL, seen by "
        "another connection, p99",
        p99 * 1000,
        "ms",
        target=("<=", TARGET_COMMIT_P99_MS),
        detail=(
            f"p50 {ms(p50)}, max {ms(max(latencies))}; {len(latencies)} events, timed from the driver call "
            f"(the event is published inside it; the call itself: p50 {ms(median(calls))}, p99 "
            f"{ms(percentile(calls, 99))}) to a query on another connection finding the record, woken by the "
            "store's NOTIFY"
        ),
        raw={"p50_s": p50, "p99_s": p99, "samples": len(latencies)},
    )
    assert p99 * 1000 <= TARGET_COMMIT_P99_MS, f"p99 {ms(p99)} (target ≤ {TARGET_COMMIT_P99_MS:g} ms)"


def _settle(fleet: Fleet, instance_id: str) -> None:
    """Wait until the store's view shows the instance with no action in flight (the keeper is idle on it)."""
    deadline = time.monotonic() + WAIT_S
    while fleet.instance(instance_id).in_flight is not None:
        assert time.monotonic() < deadline, f"{instance_id} still has an action in flight"
        time.sleep(0.005)
