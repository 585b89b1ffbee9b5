"""A bounded load test: many concurrent clients on a real service over loopback, no 5xx, p99 recorded.

The service is a real ``powerdrivers serve`` process (its own interpreter, so the clients' threads
do not share its GIL); the clients are threads of the test. The default (100 clients for 10 s)
keeps the suite quick; ``POWERDRIVERS_LOAD_CLIENTS`` and ``POWERDRIVERS_LOAD_SECONDS`` run the
issue's full test (200 clients for 30 s).
"""

from __future__ import annotations

import os
import random
import select
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import httpx
import pytest
from api_support import bearer, free_port

from powerdrivers.service._config import ServiceConfig

CLIENTS = int(os.environ.get("POWERDRIVERS_LOAD_CLIENTS", "100"))
SECONDS = float(os.environ.get("POWERDRIVERS_LOAD_SECONDS", "10"))


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


@contextmanager
def serving(config: ServiceConfig) -> Iterator[str]:
    """Run ``powerdrivers serve`` on ``config`` until the block ends; yield its base URL."""
    command = [
        sys.executable,
        "-m",
        "powerdrivers",
        "serve",
        "--config",
        str(config.path),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], 60.0)
        assert ready and process.stdout.readline().startswith("powerdrivers service on"), (
            "serve did not start"
        )
        yield f"http://127.0.0.1:{config.listen_port}"
        process.terminate()
        assert process.wait(30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def test_many_concurrent_clients_get_no_server_error(
    service_config_factory: Callable[..., ServiceConfig],
    service_tokens: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = service_config_factory(listen=f"127.0.0.1:{free_port()}")
    reader = bearer(service_tokens["reader"])
    operator = bearer(service_tokens["operator"])
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: list[str] = []
    lock = threading.Lock()

    with serving(config) as url:
        ids = [item["id"] for item in httpx.get(f"{url}/v1/instances", headers=reader).json()["items"]]
        start = threading.Barrier(CLIENTS + 1)
        deadline_box: list[float] = []

        def client(number: int) -> None:
            chooser = random.Random(number)
            mine: list[float] = []
            seen: Counter[int] = Counter()
            with httpx.Client(base_url=url, timeout=30.0) as http:
                start.wait()
                while time.monotonic() < deadline_box[0]:
                    pick = chooser.random()
                    instance = chooser.choice(ids)
                    began = time.perf_counter()
                    try:
                        if pick < 0.4:
                            answer = http.get("/v1/instances", headers=reader, params={"limit": 50})
                        elif pick < 0.7:
                            answer = http.get(f"/v1/instances/{instance}", headers=reader)
                        elif pick < 0.8:
                            answer = http.get(f"/v1/instances/{instance}/history", headers=reader)
                        elif pick < 0.9:
                            answer = http.get("/v1/hosts", headers=reader)
                        elif pick < 0.97:
                            answer = http.get("/healthz")
                        else:
                            answer = http.put(
                                f"/v1/instances/{instance}/policy",
                                headers=operator,
                                json={"policy": "manual"},
                            )
                    except httpx.HTTPError as exc:
                        with lock:
                            failures.append(f"{type(exc).__name__}: {exc}")
                        continue
                    mine.append(time.perf_counter() - began)
                    seen[answer.status_code] += 1
            with lock:
                latencies.extend(mine)
                statuses.update(seen)

        threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(CLIENTS)]
        for thread in threads:
            thread.start()
        deadline_box.append(time.monotonic() + SECONDS)
        start.wait()
        for thread in threads:
            thread.join(SECONDS + 60)
        assert not any(thread.is_alive() for thread in threads)

    assert not failures, failures[:5]
    assert latencies
    server_errors = {status: count for status, count in statuses.items() if status >= 500}
    assert not server_errors, statuses
    assert set(statuses) == {200}, statuses
    p50, p99 = percentile(latencies, 0.5), percentile(latencies, 0.99)
    with capsys.disabled():
        print(
            f"\nload: {CLIENTS} clients, {SECONDS:g} s, {len(latencies)} requests "
            f"({len(latencies) / SECONDS:.0f}/s), p50 {p50 * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms, "
            f"max {max(latencies) * 1000:.1f} ms, mean {statistics.fmean(latencies) * 1000:.1f} ms"
        )
